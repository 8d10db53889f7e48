"""Serializers of sending domains, their keys, records, checks and events."""

from rest_framework import serializers

from domains.models import DkimKey, Domain, DomainCheck, DomainEvent, KeyAlgorithm
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


class DkimKeySerializer(serializers.ModelSerializer):
    record_name = serializers.CharField(read_only=True)
    record_value = serializers.CharField(read_only=True)
    removable_after = serializers.DateTimeField(read_only=True)

    class Meta:
        model = DkimKey
        fields = [
            "selector",
            "algorithm",
            "bits",
            "state",
            "public_key",
            "record_name",
            "record_value",
            "created_at",
            "activated_at",
            "retired_at",
            "removable_after",
        ]
        read_only_fields = fields


class DomainSerializer(serializers.ModelSerializer):
    display_name = serializers.CharField(read_only=True)
    keys = DkimKeySerializer(source="dkim_keys", many=True, read_only=True)
    records = serializers.SerializerMethodField()

    class Meta:
        model = Domain
        fields = [
            "id",
            "name",
            "display_name",
            "status",
            "health_score",
            "score_partial",
            "created_at",
            "verified_at",
            "checked_at",
            "require_tls",
            "keys",
            "records",
        ]
        read_only_fields = fields

    def get_records(self, domain) -> list[dict]:
        return DnsRecordSerializer(records_for(domain), many=True).data


class DomainCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=253, help_text="The domain, Unicode or ASCII.")


class DomainSettingsSerializer(serializers.Serializer):
    require_tls = serializers.BooleanField(
        help_text=(
            "Relay this domain's mail only over STARTTLS with a certificate valid for the "
            "receiving MX host; otherwise defer it (4.7.x) instead of sending in clear."
        )
    )


class RotateKeySerializer(serializers.Serializer):
    algorithm = serializers.ChoiceField(choices=KeyAlgorithm.choices, default=KeyAlgorithm.RSA)


class CheckResultSerializer(serializers.Serializer):
    name = serializers.CharField()
    status = serializers.CharField()
    message = serializers.CharField()
    points = serializers.FloatField()
    weight = serializers.IntegerField()
    details = serializers.DictField()


class DomainCheckSerializer(serializers.ModelSerializer):
    results = CheckResultSerializer(many=True)

    class Meta:
        model = DomainCheck
        fields = ["checked_at", "score", "partial", "verified", "results"]


class DomainEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = DomainEvent
        fields = ["type", "message", "created_at"]
