"""Dashboard forms: they only shape input; domains.tenancy and dkim_keys decide."""

from __future__ import annotations

from django import forms

from domains.models import KeyAlgorithm


class AddDomainForm(forms.Form):
    name = forms.CharField(
        label="Domain name",
        max_length=253,
        help_text="The domain in your From addresses, e.g. example.com or bücher.example.",
    )


class RotateKeyForm(forms.Form):
    algorithm = forms.ChoiceField(choices=KeyAlgorithm.choices, initial=KeyAlgorithm.RSA)
