from rest_framework import serializers

from delivery.models import Event, Message, Recipient
from domains.models import Domain
from domains.records import records_for


class DnsRecordSerializer(serializers.Serializer):
    host = serializers.CharField()
    type = serializers.CharField()
    value = serializers.CharField()
    purpose = serializers.CharField()
    required = serializers.BooleanField()
    zone_line = serializers.SerializerMethodField()

    def get_zone_line(self, record) -> str:
        return record.zone_line()


class DomainSerializer(serializers.ModelSerializer):
    display_name = serializers.CharField(read_only=True)
    records = serializers.SerializerMethodField()

    class Meta:
        model = Domain
        fields = [
            "id",
            "name",
            "display_name",
            "status",
            "health_score",
            "created_at",
            "verified_at",
            "checked_at",
            "records",
        ]
        read_only_fields = fields

    def get_records(self, domain) -> list[dict]:
        return DnsRecordSerializer(records_for(domain), many=True).data


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
