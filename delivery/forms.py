"""Dashboard forms for SMTP logins and API keys: they only shape input; the use cases live
in delivery.credentials."""

from __future__ import annotations

from typing import Any

from django import forms

from domains.models import Domain, Role, Tenant
from domains.roles import RANK, at_most


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
    """A new API key. Every role is a valid value, so that one above the creator's own is
    refused by delivery.credentials with a message saying why; only those the creator may
    hand out (``granted_by``) are offered."""

    name = forms.CharField(
        label="Name (optional)",
        max_length=100,
        required=False,
        help_text="What uses this key, e.g. “CI” or “billing service”.",
    )
    role = forms.ChoiceField(
        label="Role",
        choices=Role.choices,
        initial=Role.DEVELOPER,
        required=False,  # left out: developer
        help_text="What the key may do: a viewer key only reads; a developer key also sends "
        "and manages keys, webhooks and suppressions; an admin key also manages domains.",
    )

    def __init__(self, *args: Any, granted_by: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if granted_by is not None:
            field = self.fields["role"]
            assert isinstance(field, forms.ChoiceField)
            offered = [(r.value, r.label) for r in reversed(RANK) if at_most(r, granted_by)]
            field.widget.choices = offered

    def clean_role(self) -> str:
        return self.cleaned_data.get("role") or Role.DEVELOPER
