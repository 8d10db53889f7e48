"""The public deliverability check: a page and an API endpoint, no login, rate-limited.

Both are thin adapters around ``domains.public_check.audit_domain``; neither touches the
database (the check is about any domain, not a tenant's, and leaves no trace).
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import Throttled, ValidationError
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from domains.checks.results import CheckStatus
from domains.public_check import (
    COMMON_SELECTORS,
    MAX_SELECTORS,
    InvalidCheckRequest,
    audit_domain,
    clean_domain,
    clean_selectors,
)
from domains.ratelimit import Allowance, public_check_allowance

TEMPLATE = "public/check.html"


def _too_many(allowance: Allowance) -> str:
    return f"Too many checks from your address: {allowance.limit} a minute at most."


@require_GET
def check_page(request: HttpRequest) -> HttpResponse:
    """GET shows the form; GET with ?domain= (and optional selector=) runs the check, so a
    result can be bookmarked or shared."""
    context = {
        "domain": request.GET.get("domain", "").strip(),
        "selector": ", ".join(s.strip() for s in request.GET.getlist("selector") if s.strip()),
        "common_selectors": COMMON_SELECTORS,
        "max_selectors": MAX_SELECTORS,
    }
    if "domain" not in request.GET:
        return render(request, TEMPLATE, context)
    try:
        domain = clean_domain(request.GET["domain"])
    except InvalidCheckRequest as exc:
        return render(request, TEMPLATE, {**context, "domain_error": str(exc)}, status=400)
    try:
        selectors = clean_selectors(request.GET.getlist("selector"), domain=domain)
    except InvalidCheckRequest as exc:
        return render(request, TEMPLATE, {**context, "selector_error": str(exc)}, status=400)
    allowance = public_check_allowance(request)
    if not allowance.allowed:
        limited = f"{_too_many(allowance)} Try again in {allowance.retry_after} seconds."
        response = render(request, TEMPLATE, {**context, "limited": limited}, status=429)
        response["Retry-After"] = str(allowance.retry_after)
        return response
    report = audit_domain(name=domain, selectors=selectors)
    return render(request, TEMPLATE, {**context, "report": report, "rows": report.rows()})


# -- API ------------------------------------------------------------------------------------


class PublicCheckResultSerializer(serializers.Serializer):
    name = serializers.ChoiceField(
        choices=["dkim", "spf", "dmarc", "mx", "mta_sts", "tls_rpt", "bimi"]
    )
    status = serializers.ChoiceField(choices=CheckStatus.choices)
    message = serializers.CharField(help_text="What was found and, when needed, what to change.")
    points = serializers.FloatField(help_text="Points earned of `weight` (0 when unknown).")
    weight = serializers.FloatField(help_text="This check's share of 100 points.")
    details = serializers.DictField(help_text="Parsed facts: records, tags, lookup counts.")


class PublicReportSerializer(serializers.Serializer):
    domain = serializers.CharField(help_text="The domain checked, in ASCII (A-label) form.")
    display_name = serializers.CharField(help_text="The domain in Unicode.")
    score = serializers.IntegerField(
        allow_null=True,
        help_text="0-100 over the checks that got a DNS answer; null when none did.",
    )
    partial = serializers.BooleanField(
        help_text="Some checks got no DNS answer (status unknown) and are left out of the score."
    )
    selectors = serializers.ListField(
        child=serializers.CharField(), help_text="The DKIM selectors given."
    )
    common_selectors = serializers.BooleanField(
        help_text="No selector was given, so common selectors were tried."
    )
    selectors_tried = serializers.ListField(child=serializers.CharField())
    results = PublicCheckResultSerializer(many=True)


class PublicCheckView(APIView):
    """Audit any domain's email DNS records; no API key needed, limited per client address."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []  # limited by domains.ratelimit, shared with the page

    @extend_schema(
        operation_id="public_check",
        summary="Check any domain's deliverability records",
        description=(
            "Checks SPF, DKIM, DMARC, MX, MTA-STS, TLS-RPT and BIMI of any domain and scores "
            "them 0-100, with what to fix. No API key needed; each client address may run "
            "a limited number of checks a minute (429 with Retry-After past that). Nothing "
            "is stored."
        ),
        auth=[],
        parameters=[
            OpenApiParameter(
                "domain",
                OpenApiTypes.STR,
                OpenApiParameter.QUERY,
                required=True,
                description="The domain to check, e.g. example.com (Unicode names allowed).",
            ),
            OpenApiParameter(
                "selector",
                OpenApiTypes.STR,
                OpenApiParameter.QUERY,
                many=True,
                description=(
                    f"DKIM selector (the s= tag of a message's DKIM-Signature header); repeat "
                    f"or separate with commas, at most {MAX_SELECTORS}. Without any, common "
                    f"selectors are tried ({', '.join(COMMON_SELECTORS)})."
                ),
            ),
        ],
        responses={
            200: PublicReportSerializer,
            400: OpenApiResponse(description="A missing or invalid domain or selector."),
            429: OpenApiResponse(description="Too many checks from this address; see Retry-After."),
        },
    )
    def get(self, request: Request) -> Response:
        params = request.query_params
        if not params.get("domain", "").strip():
            raise ValidationError(
                {"domain": ["Give the domain to check, e.g. ?domain=example.com."]}
            )
        try:
            domain = clean_domain(params["domain"])
        except InvalidCheckRequest as exc:
            raise ValidationError({"domain": [str(exc)]}) from None
        try:
            selectors = clean_selectors(params.getlist("selector"), domain=domain)
        except InvalidCheckRequest as exc:
            raise ValidationError({"selector": [str(exc)]}) from None
        allowance = public_check_allowance(request)
        if not allowance.allowed:
            # DRF sets Retry-After from `wait` and adds "Expected available in N seconds."
            raise Throttled(wait=allowance.retry_after, detail=_too_many(allowance))
        report = audit_domain(name=domain, selectors=selectors)
        return Response(PublicReportSerializer(report.as_dict()).data)
