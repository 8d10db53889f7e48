"""Dashboard forms for webhook endpoints: they only shape input; the checks (URL target,
event types) live in delivery.webhooks.endpoints."""

from __future__ import annotations

from django import forms

from delivery.models import WEBHOOK_EVENT_CHOICES
from delivery.webhooks.endpoints import DEFAULT_KEEP_PREVIOUS_HOURS


class WebhookEndpointForm(forms.Form):
    url = forms.CharField(
        label="URL",
        max_length=2000,
        help_text="An http:// or https:// address on the public internet; each event is "
        "POSTed to it as JSON.",
    )
    description = forms.CharField(
        label="Description (optional)",
        max_length=200,
        required=False,
        help_text="What receives the events, e.g. “CRM sync”.",
    )
    event_types = forms.MultipleChoiceField(
        label="Event types",
        choices=WEBHOOK_EVENT_CHOICES,
        widget=forms.CheckboxSelectMultiple,
        help_text="Only events of these types are sent.",
        error_messages={"required": "Choose at least one event type."},
    )
    active = forms.BooleanField(
        label="Active: send events to this endpoint",
        required=False,
        initial=True,
        help_text="While inactive, no events are sent, and none recorded meanwhile are sent later.",
    )


class RotateSecretForm(forms.Form):
    stop_previous_now = forms.BooleanField(
        label="Stop signing with the current secret at once",
        required=False,
        help_text=f"Otherwise it keeps signing too (a second v1 value) for "
        f"{DEFAULT_KEEP_PREVIOUS_HOURS} hours while you switch the receiver over.",
    )
