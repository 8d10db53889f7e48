"""The operators' admin for tenants and domains: lists that answer "who is at level 4 or
5", "which domains fail DNS", and actions that leave an audit row in the tenant (its
owners read it as "operator <name>").

Tenants' levels and their queues live in reputation and delivery: the admin is the
operators' one place, so it reads them here (models are only written through those
apps' own functions: reputation.levels, delivery.queue_control)."""

from __future__ import annotations

from datetime import timedelta

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db import transaction
from django.db.models import (
    Count,
    F,
    FilteredRelation,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
)
from django.db.models.functions import Coalesce
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils import timezone

from delivery import queue_control
from delivery.models import Recipient, RecipientState
from domains import audit
from domains.checks.run import check_domain
from domains.dkim_keys import KeyActionError, start_rotation
from domains.models import (
    AuditEntry,
    DkimKey,
    Domain,
    DomainCheck,
    DomainEvent,
    DomainStatus,
    Invitation,
    Membership,
    Tenant,
)
from domains.names import InvalidDomain, normalize_domain
from domains.tenancy import add_domain
from reputation.models import Level, Standing

# What "failing DNS" means in the admin and on the overview page.
LOW_SCORE = 70  # a health score below this (of 100) is failing
STALE_AFTER = timedelta(days=1)  # re-checks run hourly: a day without one means they stopped


def with_level(tenants: QuerySet[Tenant]) -> QuerySet[Tenant]:
    """Tenants with ``level``: their own standing's (1 while the rates have set none), by
    a join in the same statement."""
    return tenants.annotate(
        own_standing=FilteredRelation("standings", condition=Q(standings__domain__isnull=True)),
        level=Coalesce(F("own_standing__level"), Level.EXCELLENT, output_field=IntegerField()),
    )


def with_levels(tenants: QuerySet[Tenant]) -> QuerySet[Tenant]:
    """``with_level``, and ``worst_domain_level``: their sending domains' highest (None
    without any), still one statement."""
    domain_levels = Standing.objects.filter(tenant=OuterRef("pk"), domain__isnull=False)
    return with_level(tenants).annotate(
        worst_domain_level=Subquery(domain_levels.order_by("-level").values("level")[:1]),
    )


def dns_health(kind: str, *, now=None) -> Q:
    """Domains (not disabled) whose DNS is ``kind``: unverified (the last check did not
    verify them), low_score, stale (not checked for a day), failing (any of those), or
    healthy (none of those)."""
    now = now or timezone.now()
    parts = {
        "unverified": Q(checked_at__isnull=False, dns_verified=False),
        "low_score": Q(health_score__lt=LOW_SCORE),
        "stale": Q(checked_at__isnull=True) | Q(checked_at__lt=now - STALE_AFTER),
    }
    failing = parts["unverified"] | parts["low_score"] | parts["stale"]
    parts["failing"] = failing
    parts["healthy"] = ~failing & Q(health_score__isnull=False)
    return parts[kind] & ~Q(status=DomainStatus.DISABLED)


class AuditedAdmin:
    """A ModelAdmin mixin: what an operator adds, changes or deletes in a tenant's data
    through the admin's forms leaves an audit row in that tenant (``<audit_name>.added``,
    ``.changed`` with the fields, ``.deleted``)."""

    audit_name: str
    audit_verbs = {"add": "added", "change": "changed", "delete": "deleted"}

    def audit_tenant(self, obj) -> int:
        return obj.tenant_id

    def save_model(self, request, obj, form, change) -> None:
        super().save_model(request, obj, form, change)
        verb = self.audit_verbs["change" if change else "add"]
        fields = sorted(form.changed_data) if change else []
        audit.record(
            request,
            tenant=self.audit_tenant(obj),
            action=f"{self.audit_name}.{verb}",
            target=str(obj),
            **({"fields": fields} if fields else {}),
        )

    def _record_deleted(self, request, obj) -> None:
        verb = self.audit_verbs["delete"]
        audit.record(
            request,
            tenant=self.audit_tenant(obj),
            action=f"{self.audit_name}.{verb}",
            target=str(obj),
        )

    def delete_model(self, request, obj) -> None:
        with transaction.atomic():
            self._record_deleted(request, obj)
            super().delete_model(request, obj)

    def delete_queryset(self, request, queryset) -> None:
        with transaction.atomic():
            for obj in queryset:
                self._record_deleted(request, obj)
            super().delete_queryset(request, queryset)


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


class ReputationLevelFilter(admin.SimpleListFilter):
    """The tenant's own level (1 when not set yet), or a sending domain's."""

    title = "reputation level"
    parameter_name = "level"

    def lookups(self, request, model_admin):
        return [
            ("4-5", "restricted or suspended (4–5)"),
            *[(str(level.value), f"{level.value} {level.label.lower()}") for level in Level],
            ("domain-4-5", "a sending domain at 4–5"),
        ]

    def queryset(self, request, queryset):
        value = self.value()
        if value == "4-5":
            return queryset.filter(level__gte=Level.RESTRICTED)
        if value == "domain-4-5":
            low = Standing.objects.filter(domain__isnull=False, level__gte=Level.RESTRICTED)
            return queryset.filter(pk__in=low.values("tenant_id"))
        if value and value.isdigit():
            return queryset.filter(level=int(value))
        return queryset


class ReasonForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        max_length=2000,
        help_text="Stored with the change and shown in the tenant's audit log.",
    )


def confirmation_page(
    model_admin: admin.ModelAdmin,
    request: HttpRequest,
    queryset: QuerySet,
    *,
    action: str,
    title: str,
    intro: str,
    button: str,
    form: forms.Form | None = None,
    rows: list | None = None,
    columns: list[str] | None = None,
) -> TemplateResponse:
    """The admin's "are you sure" page for an action: the selected rows, a form (e.g. a
    reason) and the button that posts the action again with ``apply``."""
    context = {
        **model_admin.admin_site.each_context(request),
        "title": title,
        "intro": intro,
        "button": button,
        "action": action,
        "form": form,
        "objects": queryset,
        "rows": rows,
        "columns": columns or [],
        "opts": model_admin.model._meta,
        "selected": request.POST.getlist(ACTION_CHECKBOX_NAME),
        "select_across": request.POST.get("select_across", "0"),
        "action_checkbox_name": ACTION_CHECKBOX_NAME,
    }
    return TemplateResponse(request, "admin/sendmsg/confirm_action.html", context)


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "level_shown",
        "worst_domain_level_shown",
        "suspended",
        "suspended_at",
        "plan_rate",
        "list_unsubscribe",
        "created_at",
    ]
    list_filter = [ReputationLevelFilter, "suspended", "list_unsubscribe"]
    search_fields = ["name"]
    date_hierarchy = "created_at"
    # Suspension goes through the actions: with a reason, and audited.
    readonly_fields = ["suspended", "suspended_reason", "suspended_at"]
    inlines = [MembershipInline]
    actions = ["suspend", "reinstate", "purge_queue"]

    def get_queryset(self, request):
        return with_levels(super().get_queryset(request))

    def save_model(self, request, obj, form, change) -> None:
        super().save_model(request, obj, form, change)
        if change and form.changed_data:
            audit.record(
                request,
                tenant=obj,
                action="tenant.changed",
                target=obj.name,
                fields=sorted(form.changed_data),
            )

    @admin.display(description="level", ordering="level")
    def level_shown(self, tenant: Tenant) -> str:
        return f"{tenant.level} {Level(tenant.level).label.lower()}"

    @admin.display(description="worst domain", ordering="worst_domain_level")
    def worst_domain_level_shown(self, tenant: Tenant) -> str:
        level = tenant.worst_domain_level
        return "–" if level is None else f"{level} {Level(level).label.lower()}"

    def _with_reason(self, request, queryset, *, action: str, title: str, intro: str):
        """The reason form, validated when posted with ``apply``; else the page to show."""
        if "apply" in request.POST:
            form = ReasonForm(request.POST)
            if form.is_valid():
                return form.cleaned_data["reason"], None
        else:
            form = ReasonForm()
        page = confirmation_page(
            self,
            request,
            queryset,
            action=action,
            title=title,
            intro=intro,
            button=title,
            form=form,
        )
        return None, page

    @admin.action(description="Suspend (refuse new mail, hold the queue), with a reason")
    def suspend(self, request, queryset):
        reason, page = self._with_reason(
            request,
            queryset,
            action="suspend",
            title="Suspend tenants",
            intro="New mail from these tenants is refused (SMTP 550 5.7.1, API 403) and "
            "their queued mail is held until they are reinstated. The reason is shown to "
            "the tenant.",
        )
        if page is not None:
            return page
        self._change_suspension(request, queryset, suspend=True, reason=reason)
        return None

    @admin.action(description="Reinstate suspended tenants, with a reason")
    def reinstate(self, request, queryset):
        reason, page = self._with_reason(
            request,
            queryset,
            action="reinstate",
            title="Reinstate tenants",
            intro="These tenants may send again and their held mail goes out (unless their "
            "reputation level holds it).",
        )
        if page is not None:
            return page
        self._change_suspension(request, queryset, suspend=False, reason=reason)
        return None

    def _change_suspension(self, request, queryset, *, suspend: bool, reason: str) -> None:
        """Suspend or reinstate each tenant not in that state yet, each with its audit row
        (a reinstatement's row keeps why the tenant had been suspended)."""
        done, skipped = [], []
        for tenant in queryset:
            if tenant.suspended == suspend:
                skipped.append(tenant.name)
                continue
            detail = {"reason": reason}
            with transaction.atomic():
                if suspend:
                    tenant.suspend(reason)
                else:
                    detail["suspended_for"] = tenant.suspended_reason
                    tenant.reinstate()
                audit.record(
                    request,
                    tenant=tenant,
                    action="tenant.suspended" if suspend else "tenant.reinstated",
                    target=tenant.name,
                    **detail,
                )
            done.append(tenant.name)
        verb, already = (
            ("suspended", "already suspended") if suspend else ("reinstated", "not suspended")
        )
        self.message_user(request, f"{len(done)} tenant(s) {verb}: {', '.join(done)}.")
        if skipped:
            self.message_user(
                request,
                f"{len(skipped)} {already}, left as they are: {', '.join(skipped)}.",
                messages.WARNING,
            )

    @admin.action(description="Purge the queue (cancel every recipient not sent yet)")
    def purge_queue(self, request, queryset):
        cancellable = queue_control.Action.CANCEL.value.sources
        if "apply" not in request.POST:
            counts = dict(
                Recipient.objects.filter(tenant__in=queryset, state__in=cancellable)
                .values_list("tenant_id")
                .annotate(n=Count("pk"))
            )
            sending = dict(
                Recipient.objects.filter(tenant__in=queryset, state=RecipientState.SENDING)
                .values_list("tenant_id")
                .annotate(n=Count("pk"))
            )
            rows = [
                [tenant.name, counts.get(tenant.pk, 0), sending.get(tenant.pk, 0)]
                for tenant in queryset
            ]
            total = sum(row[1] for row in rows)
            return confirmation_page(
                self,
                request,
                queryset,
                action="purge_queue",
                title="Purge tenants' queues",
                intro=f"{total} recipient(s) queued, deferred or held will be cancelled and "
                "never sent. Recipients being sent right now are left to that attempt.",
                button=f"Cancel {total} recipient(s)",
                rows=rows,
                columns=["tenant", "to cancel", "being sent (left)"],
            )
        total = 0
        for tenant in queryset:
            waiting = Recipient.objects.filter(tenant=tenant, state__in=cancellable)
            outcome = queue_control.apply(queue_control.Action.CANCEL, waiting)
            audit.record(
                request,
                tenant=tenant,
                action="queue.purged",
                target=tenant.name,
                cancelled=len(outcome.moved),
                left=len(outcome.left),
            )
            total += len(outcome.moved)
            self.message_user(
                request,
                f"{tenant.name}: {len(outcome.moved)} recipient(s) cancelled"
                + (f", {len(outcome.left)} left (sent meanwhile)." if outcome.left else "."),
            )
        self.message_user(request, f"{total} recipient(s) cancelled in all.")
        return None


@admin.register(Membership)
class MembershipAdmin(AuditedAdmin, admin.ModelAdmin):
    audit_name = "member"
    list_display = ["user", "tenant", "role", "created_at"]
    list_filter = ["role"]
    list_select_related = ["user", "tenant"]
    search_fields = ["user__username", "tenant__name"]


class DkimKeyInline(admin.TabularInline):
    model = DkimKey
    extra = 0
    fields = ["selector", "algorithm", "bits", "state", "created_at", "activated_at", "retired_at"]
    readonly_fields = fields
    can_delete = False


class DomainAdminForm(forms.ModelForm):
    class Meta:
        model = Domain
        fields = ["tenant", "name", "status", "require_tls"]

    def clean_name(self) -> str:
        try:
            return normalize_domain(self.cleaned_data["name"])
        except InvalidDomain as exc:
            raise forms.ValidationError(str(exc)) from None


class DnsHealthFilter(admin.SimpleListFilter):
    title = "DNS health"
    parameter_name = "dns"

    def lookups(self, request, model_admin):
        return [
            ("failing", "failing (any below)"),
            ("unverified", "last check did not verify"),
            ("low_score", f"score below {LOW_SCORE}"),
            ("stale", "not checked for a day"),
            ("healthy", "healthy"),
        ]

    def queryset(self, request, queryset):
        if self.value() in {value for value, _ in self.lookups(request, None)}:
            return queryset.filter(dns_health(self.value()))
        return queryset


@admin.register(Domain)
class DomainAdmin(AuditedAdmin, admin.ModelAdmin):
    audit_name = "domain"
    form = DomainAdminForm
    list_display = [
        "name",
        "tenant",
        "status",
        "dns_verified",
        "health_score",
        "score_partial",
        "checked_at",
    ]
    list_filter = [DnsHealthFilter, "status", "score_partial", "require_tls"]
    list_select_related = ["tenant"]
    search_fields = ["name", "tenant__name"]
    date_hierarchy = "created_at"
    readonly_fields = ["dns_verified", "verified_at", "checked_at", "health_score", "score_partial"]
    inlines = [DkimKeyInline]
    actions = ["check_now", "rotate_key", "disable", "enable"]

    def get_readonly_fields(self, request, obj=None):
        # A domain's name is fixed once it has keys and records.
        return [*self.readonly_fields, "name", "tenant"] if obj else self.readonly_fields

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        # New domains go through the one add path, which also generates the DKIM key.
        created = add_domain(tenant=obj.tenant, name=obj.name)
        if obj.require_tls:
            created.set_require_tls(True)
        audit.record(request, tenant=obj.tenant, action="domain.added", target=created.name)
        obj.pk, obj._state.adding = created.pk, False

    @admin.action(description="Check DNS now")
    def check_now(self, request, queryset):
        state = {True: "verified", False: "not verified", None: "undetermined"}
        count = 0
        for domain in queryset:
            # DNS first, outside any transaction; then the audit row.
            report = check_domain(domain)
            audit.record(
                request,
                tenant=domain.tenant_id,
                action="domain.checked",
                target=domain.name,
                score=report.score,
                partial=report.partial,
                verified=report.verified,
            )
            count += 1
            self.message_user(
                request, f"{domain.name}: score {report.score}, {state[report.verified]}."
            )
        self.message_user(request, f"{count} domain(s) checked.")

    @admin.action(description="Rotate the RSA DKIM key (switches once DNS serves it)")
    def rotate_key(self, request, queryset):
        rotated = 0
        for domain in queryset:
            try:
                with transaction.atomic():
                    key = start_rotation(domain=domain)
                    audit.record(
                        request,
                        tenant=domain.tenant_id,
                        action="domain.key_rotated",
                        target=domain.name,
                        selector=key.selector,
                        algorithm=key.algorithm,
                    )
            except KeyActionError as exc:
                self.message_user(request, f"{domain.name}: {exc}", messages.WARNING)
            else:
                rotated += 1
                self.message_user(request, f"{domain.name}: publish {key.record_name}.")
        self.message_user(request, f"{rotated} domain(s) rotating their DKIM key.")

    @admin.action(description="Disable (refuse mail from these domains)")
    def disable(self, request, queryset):
        for domain in queryset:
            with transaction.atomic():
                domain.disable()
                audit.record(
                    request, tenant=domain.tenant_id, action="domain.disabled", target=domain.name
                )
        self.message_user(request, f"{len(queryset)} domain(s) disabled.")

    @admin.action(description="Enable")
    def enable(self, request, queryset):
        for domain in queryset:
            with transaction.atomic():
                domain.enable()
                audit.record(
                    request,
                    tenant=domain.tenant_id,
                    action="domain.enabled",
                    target=domain.name,
                    status=domain.status,
                )
        self.message_user(request, f"{len(queryset)} domain(s) enabled.")


@admin.register(DkimKey)
class DkimKeyAdmin(AuditedAdmin, admin.ModelAdmin):
    audit_name = "dkim_key"
    list_display = ["selector", "domain", "algorithm", "bits", "state", "created_at"]
    list_filter = ["algorithm", "state"]
    list_select_related = ["domain"]
    search_fields = ["selector", "domain__name"]
    # The encrypted private key is never shown, not even to operators.
    exclude = ["private_key_encrypted"]
    readonly_fields = ["public_key"]

    def audit_tenant(self, obj) -> int:
        return obj.domain.tenant_id


@admin.register(DomainCheck)
class DomainCheckAdmin(admin.ModelAdmin):
    list_display = ["domain", "checked_at", "score", "partial", "verified"]
    list_filter = ["partial", "verified"]
    list_select_related = ["domain"]
    search_fields = ["domain__name"]
    raw_id_fields = ["domain"]


@admin.register(DomainEvent)
class DomainEventAdmin(admin.ModelAdmin):
    list_display = ["type", "domain", "created_at", "message"]
    list_filter = ["type"]
    list_select_related = ["domain"]
    search_fields = ["domain__name", "message"]
    raw_id_fields = ["domain", "tenant"]


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    """Invitations are made on the team page (which mails the link); here they are read."""

    list_display = ["email", "tenant", "role", "created_at", "expires_at", "accepted_at"]
    list_filter = ["role"]
    search_fields = ["email", "tenant__name"]
    exclude = ["token_hash"]  # a keyed hash; useless to people, kept out of sight
    readonly_fields = [
        "tenant",
        "email",
        "role",
        "invited_by",
        "created_at",
        "expires_at",
        "accepted_at",
        "accepted_by",
        "revoked_at",
    ]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    """The audit log, read only: a row is written with its change, never edited after."""

    list_display = ["created_at", "tenant", "actor_label", "action", "target", "ip"]
    list_filter = ["action", "created_at"]
    list_select_related = ["tenant"]
    search_fields = ["target", "actor_label", "action", "tenant__name"]
    date_hierarchy = "created_at"
    readonly_fields = [
        "tenant",
        "actor",
        "actor_label",
        "action",
        "target",
        "detail",
        "ip",
        "created_at",
    ]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
