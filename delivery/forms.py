"""Dashboard forms for SMTP logins and API keys: they only shape input; the use cases live
in delivery.credentials."""

from __future__ import annotations

from typing import Any

from django import forms

from domains.models import Domain, Tenant


class DomainChoiceField(forms.ModelMultipleChoiceField):
    def label_from_instance(self, obj: Domain) -> str:
        return obj.display_name


class SmtpCredentialForm(forms.Form):
    """A new SMTP login. Only the tenant's own domains are choices, so a forged id of
    another tenant's domain is an invalid choice, like any unknown id."""

    description = forms.CharField(
        label="Description (optional)",
        max_length=200,
        required=False,
        help_text="What uses this login, e.g. “web shop” or “newsletter server”.",
    )
    domains = DomainChoiceField(
        label="Limit to these domains (optional)",
        queryset=Domain.objects.none(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Leave all unticked to let the login send from every domain of yours.",
    )

    def __init__(self, *args: Any, tenant: Tenant, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["domains"]
        assert isinstance(field, forms.ModelMultipleChoiceField)
        field.queryset = Domain.objects.for_tenant(tenant).order_by("name")


class ApiKeyForm(forms.Form):
    name = forms.CharField(
        label="Name (optional)",
        max_length=100,
        required=False,
        help_text="What uses this key, e.g. “CI” or “billing service”.",
    )
