"""The one JSON shape of an event: the events API, its export and webhooks all use it.

Read events with ``select_related("message__domain", "recipient")`` (EVENT_RELATED).
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from delivery.models import Event
from reputation.bounce_patterns import BounceReason

EVENT_RELATED = ("message__domain", "recipient")


class EventMessageSerializer(serializers.Serializer):
    id = serializers.CharField(source="queue_id", help_text="The message's queue id.")
    message_id = serializers.CharField(help_text="The Message-ID header.")
    mail_from = serializers.CharField()
    header_from = serializers.CharField()
    subject = serializers.CharField()
    domain = serializers.CharField(source="domain.name", help_text="The sending domain.")
    tags = serializers.ListField(child=serializers.CharField())
    metadata = serializers.DictField()


class EventRecipientSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    address = serializers.CharField()
    domain = serializers.CharField(help_text="ASCII form of the address's domain.")


class EventReplySerializer(serializers.Serializer):
    code = serializers.IntegerField(allow_null=True, help_text="SMTP reply code.")
    enhanced = serializers.CharField(help_text="Enhanced status code (RFC 3463), if any.")
    text = serializers.CharField()
    mx_host = serializers.CharField(help_text="The MX host that answered, if any.")
    bounce_class = serializers.CharField(
        help_text="A failure's class: `hard` (the address takes no mail; it is suppressed) "
        "or `soft`; empty for a success."
    )
    reason = serializers.CharField(
        help_text="Why a failure failed, one of "
        + ", ".join(f"`{value}`" for value in BounceReason.values)
        + "; empty for a success."
    )


class EventSerializer(serializers.ModelSerializer):
    """An event as the API lists it and a webhook delivers it."""

    message = EventMessageSerializer(read_only=True)
    recipient = EventRecipientSerializer(read_only=True, allow_null=True)
    reply = serializers.SerializerMethodField()

    class Meta:
        model = Event
        fields = ["id", "type", "created_at", "message", "recipient", "reply"]

    @extend_schema_field(EventReplySerializer(allow_null=True))
    def get_reply(self, event: Event) -> dict | None:
        if event.code is None and not event.text and not event.reason:
            return None
        return EventReplySerializer(event).data
