"""Domain endpoints: thin adapters over domains.tenancy, dkim_keys and checks."""

from __future__ import annotations

from django.db import transaction
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from delivery.api.domain_serializers import (
    DkimKeySerializer,
    DnsRecordSerializer,
    DomainCheckSerializer,
    DomainCreateSerializer,
    DomainEventSerializer,
    DomainSerializer,
    DomainSettingsSerializer,
    RotateKeySerializer,
)
from delivery.api.views import TenantScoped
from domains import audit
from domains.checks.run import check_domain
from domains.dkim_keys import KeyActionError, start_rotation
from domains.models import Domain
from domains.records import records_for
from domains.roles import Capability
from domains.tenancy import TenancyError, add_domain, delete_domain


class Conflict(ValidationError):
    status_code = status.HTTP_409_CONFLICT


class DomainViewSet(
    TenantScoped,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    model = Domain
    serializer_class = DomainSerializer
    capability = Capability.MANAGE_DOMAINS

    def get_queryset(self):
        return self.tenant_queryset().prefetch_related("dkim_keys")

    def record(self, domain: Domain, action: str, **detail) -> None:
        audit.record(
            self.request, tenant=domain.tenant_id, action=action, target=domain.name, **detail
        )

    @extend_schema(request=DomainCreateSerializer, responses={201: DomainSerializer})
    def create(self, request):
        form = DomainCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        try:
            with transaction.atomic():
                domain = add_domain(tenant=request.auth.tenant, name=form.validated_data["name"])
                self.record(domain, "domain.added")
        except TenancyError as exc:
            raise ValidationError({"name": [str(exc)]}) from None
        return Response(DomainSerializer(domain).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=DomainSettingsSerializer, responses=DomainSerializer)
    def partial_update(self, request, pk=None):
        domain = self.get_object()
        form = DomainSettingsSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        with transaction.atomic():
            domain.set_require_tls(form.validated_data["require_tls"])
            self.record(domain, "domain.require_tls_changed", require_tls=domain.require_tls)
        return Response(DomainSerializer(domain).data)

    def perform_destroy(self, domain):
        try:
            with transaction.atomic():
                name = domain.name
                delete_domain(domain=domain)
                audit.record(
                    self.request,
                    tenant=self.request.auth.tenant_id,
                    action="domain.deleted",
                    target=name,
                )
        except TenancyError as exc:
            raise Conflict({"detail": str(exc)}) from None

    @extend_schema(request=None, responses=DnsRecordSerializer(many=True))
    @action(detail=True, methods=["get"])
    def records(self, request, pk=None):
        return Response(DnsRecordSerializer(records_for(self.get_object()), many=True).data)

    @extend_schema(request=None, responses=DomainCheckSerializer)
    @action(detail=True, methods=["post"])
    def check(self, request, pk=None):
        domain = self.get_object()
        # DNS queries: no transaction held across them; the row is written after.
        report = check_domain(domain)
        self.record(domain, "domain.checked", score=report.score, partial=report.partial)
        return Response(DomainCheckSerializer(domain.checks.first()).data)

    @extend_schema(request=None, responses=DomainCheckSerializer(many=True))
    @action(detail=True, methods=["get"])
    def checks(self, request, pk=None):
        page = self.paginate_queryset(self.get_object().checks.all())
        return self.get_paginated_response(DomainCheckSerializer(page, many=True).data)

    @extend_schema(request=None, responses=DomainEventSerializer(many=True))
    @action(detail=True, methods=["get"])
    def events(self, request, pk=None):
        page = self.paginate_queryset(self.get_object().events.all())
        return self.get_paginated_response(DomainEventSerializer(page, many=True).data)

    @extend_schema(request=RotateKeySerializer, responses={201: DkimKeySerializer})
    @action(detail=True, methods=["post"], url_path="rotate-key")
    def rotate_key(self, request, pk=None):
        domain = self.get_object()
        form = RotateKeySerializer(data=request.data)
        form.is_valid(raise_exception=True)
        try:
            with transaction.atomic():
                key = start_rotation(domain=domain, algorithm=form.validated_data["algorithm"])
                self.record(
                    domain, "domain.key_rotated", selector=key.selector, algorithm=key.algorithm
                )
        except KeyActionError as exc:
            raise Conflict({"detail": str(exc)}) from None
        return Response(DkimKeySerializer(key).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=DomainSerializer)
    @action(detail=True, methods=["post"])
    def disable(self, request, pk=None):
        domain = self.get_object()
        with transaction.atomic():
            domain.disable()
            self.record(domain, "domain.disabled")
        return Response(DomainSerializer(domain).data)

    @extend_schema(request=None, responses=DomainSerializer)
    @action(detail=True, methods=["post"])
    def enable(self, request, pk=None):
        domain = self.get_object()
        with transaction.atomic():
            domain.enable()
            self.record(domain, "domain.enabled", status=domain.status)
        return Response(DomainSerializer(domain).data)
