"""The message log's JSON: a light shape for lists, the whole record for one message.

Neither ever holds a message's body; the detail has its header section. Read messages
for them through delivery.message_log (messages_for / message_for).
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from delivery import message_log
from delivery.api.serializers import MessageSerializer, RecipientSerializer
from delivery.models import Event, Message, Recipient


class RecipientSummarySerializer(serializers.ModelSerializer):
    """A recipient as RecipientSerializer shows it, without its events."""

    class Meta:
        model = Recipient
        fields = [name for name in RecipientSerializer.Meta.fields if name != "events"]


class MessageSummarySerializer(serializers.ModelSerializer):
    """A message as the log lists it: its recipients' states, no events, no headers."""

    sender_domain = serializers.CharField(
        source="domain.name", read_only=True, help_text="The sending domain (ASCII)."
    )
    recipients = RecipientSummarySerializer(many=True, read_only=True)

    class Meta:
        model = Message
        fields = [
            "id",
            "queue_id",
            "source",
            "mail_from",
            "header_from",
            "subject",
            "message_id",
            "sender_domain",
            "tags",
            "size",
            "created_at",
            "body_removed_at",
            "recipients",
        ]
        extra_kwargs = {
            "size": {"help_text": "Bytes as accepted (also after the body was removed)."},
            "body_removed_at": {
                "help_text": "When retention removed the body (null while it is kept)."
            },
        }


class DeliveryAttemptSerializer(serializers.ModelSerializer):
    """One delivery attempt, or a bounce report that came later."""

    class Meta:
        model = Event
        fields = ["type", "created_at", "code", "enhanced", "text", "mx_host"]
        extra_kwargs = {
            "type": {"help_text": "The outcome: delivered, deferred (will retry) or bounced."},
            "code": {"help_text": "The SMTP reply code."},
            "enhanced": {"help_text": "The enhanced status code (RFC 3463), if any."},
            "text": {"help_text": "The reply's text."},
            "mx_host": {"help_text": "The MX host that answered (empty for a bounce report)."},
        }


class RecipientDetailSerializer(RecipientSerializer):
    attempt_history = serializers.SerializerMethodField(
        help_text="Each delivery attempt with the receiving server's reply, oldest first."
    )

    class Meta(RecipientSerializer.Meta):
        fields = [*RecipientSerializer.Meta.fields, "attempt_history"]

    @extend_schema_field(DeliveryAttemptSerializer(many=True))
    def get_attempt_history(self, recipient: Recipient) -> list[dict]:
        return DeliveryAttemptSerializer(message_log.attempts_of(recipient), many=True).data


class TimelineEventSerializer(serializers.ModelSerializer):
    description = serializers.CharField(source="get_type_display", read_only=True)
    recipient = serializers.CharField(
        source="recipient.address",
        read_only=True,
        allow_null=True,
        help_text="The recipient it happened to (null for the message as a whole).",
    )

    class Meta:
        model = Event
        fields = [
            "id",
            "type",
            "description",
            "created_at",
            "recipient",
            "code",
            "enhanced",
            "text",
            "mx_host",
        ]


class HeaderFieldSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="As sent; empty for a line that is no field.")
    value = serializers.CharField(help_text="Unfolded; encoded-words left as sent.")


class MessageHeadersSerializer(serializers.Serializer):
    raw = serializers.CharField(
        help_text="The header section as accepted (CRLF line endings), decoded as UTF-8 "
        "with U+FFFD for bytes that are not and for control characters."
    )
    # Not "fields": a serializer has its own attribute of that name.
    parsed = HeaderFieldSerializer(
        source="fields", many=True, help_text="The same fields, in order."
    )
    truncated = serializers.BooleanField(
        help_text=f"The section is longer than {message_log.HEADER_READ_LIMIT} bytes; "
        "only its start is here."
    )


class MessageDetailSerializer(MessageSerializer):
    """One message: recipients with their attempts and events, the message's timeline and
    its header section. The body is never included."""

    sender_domain = serializers.CharField(
        source="domain.name", read_only=True, help_text="The sending domain (ASCII)."
    )
    recipients = RecipientDetailSerializer(many=True, read_only=True)
    timeline = TimelineEventSerializer(
        source="events", many=True, read_only=True, help_text="Every event, oldest first."
    )
    headers = serializers.SerializerMethodField()

    class Meta(MessageSerializer.Meta):
        fields = [
            *MessageSerializer.Meta.fields,
            "sender_domain",
            "tags",
            "metadata",
            "body_removed_at",
            "timeline",
            "headers",
        ]
        extra_kwargs = MessageSummarySerializer.Meta.extra_kwargs

    @extend_schema_field(MessageHeadersSerializer)
    def get_headers(self, message: Message) -> dict:
        return MessageHeadersSerializer(message_log.headers_of(message)).data
