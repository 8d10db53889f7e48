"""SMTP credentials and API keys over the API: listed without secrets, created and
rotated with the secret shown once in the response, revoked."""

from __future__ import annotations

from django.db import transaction
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from delivery.api.auth import key_role
from delivery.api.domain_views import Conflict
from delivery.api.errors import ApiError
from delivery.api.views import TenantScoped
from delivery.credentials import (
    CredentialError,
    GrantError,
    create_api_key,
    create_smtp_credential,
    revoke,
    rotate_api_key,
    rotate_smtp_credential,
)
from delivery.models import ApiKey, SmtpCredential
from domains import audit
from domains.models import Domain, Role
from domains.roles import Capability


class SmtpCredentialSerializer(serializers.ModelSerializer):
    domains = serializers.SlugRelatedField(slug_field="name", many=True, read_only=True)

    class Meta:
        model = SmtpCredential
        fields = [
            "id",
            "username",
            "description",
            "domains",
            "created_at",
            "last_used_at",
            "revoked",
        ]
        read_only_fields = fields


class NewSmtpCredentialSerializer(SmtpCredentialSerializer):
    password = serializers.CharField(read_only=True, help_text="Shown only in this response.")

    class Meta(SmtpCredentialSerializer.Meta):
        fields = [*SmtpCredentialSerializer.Meta.fields, "password"]
        read_only_fields = fields


class SmtpCredentialCreateSerializer(serializers.Serializer):
    description = serializers.CharField(max_length=200, required=False, default="")
    domains = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        default=list,
        help_text="Limit the login to these of your domains; empty means all.",
    )


class ApiKeySerializer(serializers.ModelSerializer):
    class Meta:
        model = ApiKey
        fields = ["id", "name", "prefix", "role", "created_at", "last_used_at", "revoked"]
        read_only_fields = fields


class NewApiKeySerializer(ApiKeySerializer):
    key = serializers.CharField(read_only=True, help_text="Shown only in this response.")

    class Meta(ApiKeySerializer.Meta):
        fields = [*ApiKeySerializer.Meta.fields, "key"]
        read_only_fields = fields


class ApiKeyCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100, required=False, default="")
    role = serializers.ChoiceField(
        choices=Role.choices,
        required=False,
        default=Role.DEVELOPER,
        help_text="What the key may do; at most the role of the key creating it.",
    )


def with_secret(row, field: str, secret: str):
    setattr(row, field, secret)
    return row


def grant_refused(exc: GrantError) -> ApiError:
    return ApiError("role_forbidden", str(exc), field="role")


def api_key_detail(row: ApiKey) -> dict:
    """What the audit log keeps of a key: never the key, nor its hash."""
    return {"name": row.name, "role": row.role}


class CredentialViewSet(
    TenantScoped, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """Common list/retrieve/revoke; subclasses say how to create and rotate."""

    capability = Capability.MANAGE_CREDENTIALS
    audit_kind = ""  # the audit log's name for the rows: "smtp_credential", "api_key"

    def get_queryset(self):
        return self.tenant_queryset().order_by("-created_at")

    def audit_target(self, row) -> str:
        return str(row)

    @extend_schema(request=None)
    @action(detail=True, methods=["post"])
    def revoke(self, request, pk=None):
        row = self.get_object()
        with transaction.atomic():
            if revoke(row):
                audit.record(
                    request,
                    tenant=row.tenant_id,
                    action=f"{self.audit_kind}.revoked",
                    target=self.audit_target(row),
                )
        return Response(self.get_serializer(row).data)


class SmtpCredentialViewSet(CredentialViewSet):
    model = SmtpCredential
    serializer_class = SmtpCredentialSerializer
    audit_kind = "smtp_credential"

    def get_queryset(self):
        return super().get_queryset().prefetch_related("domains")

    @extend_schema(
        request=SmtpCredentialCreateSerializer, responses={201: NewSmtpCredentialSerializer}
    )
    def create(self, request):
        form = SmtpCredentialCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        tenant = request.auth.tenant
        names = form.validated_data["domains"]
        domains = list(Domain.objects.for_tenant(tenant).filter(name__in=names))
        missing = sorted(set(names) - {d.name for d in domains})
        if missing:
            raise ValidationError({"domains": [f"Not a domain of yours: {', '.join(missing)}"]})
        try:
            with transaction.atomic():
                row, password = create_smtp_credential(
                    tenant=tenant, domains=domains, description=form.validated_data["description"]
                )
                audit.record(
                    request,
                    tenant=tenant,
                    action="smtp_credential.created",
                    target=row.username,
                    description=row.description,
                    domains=sorted(d.name for d in domains),
                )
        except CredentialError as exc:
            raise ValidationError({"domains": [str(exc)]}) from None
        data = NewSmtpCredentialSerializer(with_secret(row, "password", password)).data
        return Response(data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={201: NewSmtpCredentialSerializer})
    @action(detail=True, methods=["post"])
    def rotate(self, request, pk=None):
        old = self.get_object()
        try:
            with transaction.atomic():
                row, password = rotate_smtp_credential(old)
                audit.record(
                    request,
                    tenant=old.tenant_id,
                    action="smtp_credential.rotated",
                    target=old.username,
                    replaced_by=row.username,
                )
        except CredentialError as exc:
            raise Conflict({"detail": str(exc)}) from None
        data = NewSmtpCredentialSerializer(with_secret(row, "password", password)).data
        return Response(data, status=status.HTTP_201_CREATED)


class ApiKeyViewSet(CredentialViewSet):
    model = ApiKey
    serializer_class = ApiKeySerializer
    audit_kind = "api_key"

    def audit_target(self, row) -> str:
        return f"sm_{row.prefix}"

    @extend_schema(request=ApiKeyCreateSerializer, responses={201: NewApiKeySerializer})
    def create(self, request):
        form = ApiKeyCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        try:
            with transaction.atomic():
                row, key = create_api_key(
                    tenant=request.auth.tenant,
                    name=form.validated_data["name"],
                    role=form.validated_data["role"],
                    granted_by=key_role(request),
                )
                audit.record(
                    request,
                    tenant=row.tenant_id,
                    action="api_key.created",
                    target=self.audit_target(row),
                    **api_key_detail(row),
                )
        except GrantError as exc:
            raise grant_refused(exc) from None
        return Response(
            NewApiKeySerializer(with_secret(row, "key", key)).data, status=status.HTTP_201_CREATED
        )

    @extend_schema(request=None, responses={201: NewApiKeySerializer})
    @action(detail=True, methods=["post"])
    def rotate(self, request, pk=None):
        old = self.get_object()
        try:
            with transaction.atomic():
                row, key = rotate_api_key(old, granted_by=key_role(request))
                audit.record(
                    request,
                    tenant=old.tenant_id,
                    action="api_key.rotated",
                    target=self.audit_target(old),
                    replaced_by=self.audit_target(row),
                    **api_key_detail(row),
                )
        except GrantError as exc:
            raise grant_refused(exc) from None
        except CredentialError as exc:
            raise Conflict({"detail": str(exc)}) from None
        return Response(
            NewApiKeySerializer(with_secret(row, "key", key)).data, status=status.HTTP_201_CREATED
        )
