"""Dashboard forms for the suppression list: they only shape input; the checks (address,
note, file) live in reputation.suppressions and reputation.suppression_csv."""

from __future__ import annotations

from urllib.parse import urlencode

from django import forms

from reputation.models import SuppressionReason
from reputation.suppressions import MAX_NOTE


class SuppressionFilterForm(forms.Form):
    q = forms.CharField(
        label="Address contains",
        max_length=320,
        required=False,
        help_text="Part of an address, in any letter case.",
    )
    reason = forms.ChoiceField(
        label="Reason",
        choices=[("", "Any reason"), *SuppressionReason.choices],
        required=False,
    )

    def filters(self) -> dict[str, str]:
        """The search as reputation.suppressions.entries takes it (empty when not valid)."""
        if not self.is_valid():
            return {"query": "", "reason": ""}
        return {"query": self.cleaned_data["q"], "reason": self.cleaned_data["reason"]}

    def query_string(self) -> str:
        """The search as URL parameters, for the pager and the export link."""
        filters = self.filters()
        kept = {"q": filters["query"], "reason": filters["reason"]}
        return urlencode({name: value for name, value in kept.items() if value})


class SuppressionAddForm(forms.Form):
    address = forms.CharField(
        label="Address",
        max_length=320,
        help_text="Mail to it is not sent from now on, whatever the sending domain.",
    )
    note = forms.CharField(
        label="Note (optional)",
        max_length=MAX_NOTE,
        required=False,
        help_text="Why, for you and your colleagues, e.g. “asked by phone”.",
    )


class SuppressionImportForm(forms.Form):
    file = forms.FileField(
        label="CSV file",
        help_text="UTF-8; a header line with an “address” column (and maybe “note”), or one "
        "address a line. An export of this page imports as it is.",
        error_messages={"required": "Choose a CSV file to import."},
    )
