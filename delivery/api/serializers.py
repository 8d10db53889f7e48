from drf_spectacular.utils import extend_schema_serializer
from rest_framework import serializers

from delivery.models import Event, Message, Recipient


# "Event" in the schema is the full event of delivery.api.event_schema (events API,
# webhooks); this short one, inside a message's recipients, is named apart.
@extend_schema_serializer(component_name="RecipientEvent")
class EventSerializer(serializers.ModelSerializer):
    class Meta:
        model = Event
        fields = ["type", "created_at", "code", "enhanced", "text", "mx_host"]


class RecipientSerializer(serializers.ModelSerializer):
    events = EventSerializer(many=True, read_only=True)

    class Meta:
        model = Recipient
        fields = [
            "id",
            "address",
            "state",
            "attempts",
            "next_attempt_at",
            "last_code",
            "last_enhanced",
            "last_text",
            "mx_host",
            "events",
        ]


class MessageSerializer(serializers.ModelSerializer):
    recipients = RecipientSerializer(many=True, read_only=True)

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
            "size",
            "created_at",
            "recipients",
        ]


class RecipientStateSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    address = serializers.CharField()
    state = serializers.CharField()


class CancelResultSerializer(serializers.Serializer):
    id = serializers.CharField(help_text="The message's queue id.")
    cancelled = RecipientStateSerializer(many=True, help_text="Never sent now.")
    not_cancelled = RecipientStateSerializer(
        many=True, help_text="Sent, being sent right now, or final already: left as they are."
    )
