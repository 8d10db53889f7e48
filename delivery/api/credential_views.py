"""SMTP credentials and API keys over the API: listed without secrets, created and
rotated with the secret shown once in the response, revoked."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from delivery import credential_changes as changes
from delivery.api.auth import key_role
from delivery.api.domain_views import Conflict
from delivery.api.errors import ApiError
from delivery.api.views import TenantScoped
from delivery.credentials import (
    CredentialError,
    GrantError,
)
from delivery.models import ApiKey, SmtpCredential
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


class CredentialViewSet(
    TenantScoped, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """Common list/retrieve/revoke; subclasses say how to create and rotate."""

    capability = Capability.MANAGE_CREDENTIALS

    def get_queryset(self):
        return self.tenant_queryset().order_by("-created_at")

    @extend_schema(request=None)
    @action(detail=True, methods=["post"])
    def revoke(self, request, pk=None):
        row = self.get_object()
        changes.revoke_recorded(request, row)
        return Response(self.get_serializer(row).data)


class SmtpCredentialViewSet(CredentialViewSet):
    model = SmtpCredential
    serializer_class = SmtpCredentialSerializer

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
            row, password = changes.create_login(
                request,
                tenant=tenant,
                domains=domains,
                description=form.validated_data["description"],
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
            row, password = changes.rotate(request, old)
        except CredentialError as exc:
            raise Conflict({"detail": str(exc)}) from None
        data = NewSmtpCredentialSerializer(with_secret(row, "password", password)).data
        return Response(data, status=status.HTTP_201_CREATED)


class ApiKeyViewSet(CredentialViewSet):
    model = ApiKey
    serializer_class = ApiKeySerializer

    @extend_schema(request=ApiKeyCreateSerializer, responses={201: NewApiKeySerializer})
    def create(self, request):
        form = ApiKeyCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        try:
            row, key = changes.create_key(
                request,
                tenant=request.auth.tenant,
                name=form.validated_data["name"],
                role=form.validated_data["role"],
                granted_by=key_role(request),
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
            row, key = changes.rotate(request, old, granted_by=key_role(request))
        except GrantError as exc:
            raise grant_refused(exc) from None
        except CredentialError as exc:
            raise Conflict({"detail": str(exc)}) from None
        return Response(
            NewApiKeySerializer(with_secret(row, "key", key)).data, status=status.HTTP_201_CREATED
        )
