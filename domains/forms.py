"""Dashboard forms: they only shape input; domains.tenancy and dkim_keys decide."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import (
    password_validators_help_text_html,
    validate_password,
)

from domains.accounts import account_for, normalize_email
from domains.models import KeyAlgorithm, Role, Tenant


class AddDomainForm(forms.Form):
    name = forms.CharField(
        label="Domain name",
        max_length=253,
        help_text="The domain in your From addresses, e.g. example.com or bücher.example.",
    )


class RotateKeyForm(forms.Form):
    algorithm = forms.ChoiceField(choices=KeyAlgorithm.choices, initial=KeyAlgorithm.RSA)


# -- accounts and team (domains/accounts.py decides; these only shape input) ----------------


def _password_field(label: str = "Password") -> forms.CharField:
    return forms.CharField(
        label=label,
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text=password_validators_help_text_html(),
    )


def _check_password(form: forms.Form, *, email: str, field: str = "password") -> None:
    """Django's password validators (AUTH_PASSWORD_VALIDATORS), against the new account."""
    password = form.cleaned_data.get(field)
    if not password:
        return
    User = get_user_model()
    try:
        validate_password(password, user=User(username=email, email=email))
    except forms.ValidationError as exc:
        form.add_error(field, exc)


class SignUpForm(forms.Form):
    email = forms.EmailField(
        label="Email address",
        max_length=150,
        widget=forms.EmailInput(attrs={"autocomplete": "email"}),
        help_text="You log in with it; password reset links are sent to it.",
    )
    password = _password_field()
    tenant_name = forms.CharField(
        label="Organization name",
        max_length=100,
        widget=forms.TextInput(attrs={"autocomplete": "organization"}),
        help_text="Your tenant: its domains, credentials and messages. You are its owner.",
    )

    def clean_email(self) -> str:
        email = normalize_email(self.cleaned_data["email"])
        if account_for(email) is not None:
            raise forms.ValidationError(
                "An account with this email address exists already. Log in, or reset its password."
            )
        return email

    def clean_tenant_name(self) -> str:
        name = self.cleaned_data["tenant_name"].strip()
        if name.lower() == settings.SENDMSG_PLATFORM_TENANT.lower():
            raise forms.ValidationError(f"The name {name!r} is reserved; choose another.")
        if Tenant.objects.filter(name__iexact=name).exists():
            raise forms.ValidationError(f"An organization named {name!r} exists already.")
        return name

    def clean(self) -> dict:
        cleaned = super().clean()
        if cleaned.get("email"):
            _check_password(self, email=cleaned["email"])
        return cleaned


class InviteForm(forms.Form):
    email = forms.EmailField(
        label="Email address",
        max_length=150,
        widget=forms.EmailInput(attrs={"autocomplete": "off"}),
        help_text="They get a link to join, valid for a few days.",
    )
    role = forms.ChoiceField(label="Role")

    def __init__(self, *args, roles: list[str], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["role"].choices = [(r, Role(r).label) for r in roles]
        self.fields["role"].initial = Role.VIEWER


class RoleForm(forms.Form):
    role = forms.ChoiceField(label="Role")

    def __init__(self, *args, roles: list[str], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["role"].choices = [(r, Role(r).label) for r in roles]


class JoinForm(forms.Form):
    """A new person's password, set when they accept an invitation."""

    password = _password_field("Choose a password")

    def __init__(self, *args, email: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.email = email

    def clean(self) -> dict:
        cleaned = super().clean()
        _check_password(self, email=self.email)
        return cleaned


# -- tenant settings (domains/tenant_settings.py decides; this only shapes input) -----------


class TenantSettingsForm(forms.Form):
    name = forms.CharField(
        label="Organization name",
        max_length=100,
        widget=forms.TextInput(attrs={"autocomplete": "organization"}),
        help_text="Shown to your team, in the tenant switcher and in invitations.",
    )
    list_unsubscribe = forms.BooleanField(
        label="Add one-click unsubscribe to every message",
        required=False,
        help_text=(
            "Each recipient's copy gets its own unsubscribe link in the List-Unsubscribe "
            "headers (RFC 8058), which mailbox providers show as an “Unsubscribe” button; "
            "whoever uses it is added to your suppression list and gets no more mail from "
            "you. A message can still say otherwise: the API's <code>unsubscribe</code> "
            "field or the <code>Sendmsg-Unsubscribe: yes|no</code> header wins over this "
            "default."
        ),
    )
