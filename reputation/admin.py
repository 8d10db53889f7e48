from django import forms
from django.contrib import admin

from domains import audit
from domains.admin import AuditedAdmin
from reputation.levels import pin, unpin
from reputation.models import (
    DailyStats,
    InboundReport,
    LevelChange,
    SendCounter,
    Standing,
    Suppression,
    WarmupCounter,
)
from reputation.suppressions import SuppressionError, normalize_address
from sendmsg import admin_overview


@admin.register(InboundReport)
class InboundReportAdmin(admin.ModelAdmin):
    list_display = ["received_at", "tenant", "recipient", "envelope_from", "peer"]
    list_select_related = ["tenant", "recipient"]
    date_hierarchy = "received_at"
    search_fields = ["recipient__address", "envelope_from"]
    exclude = ["raw"]
    raw_id_fields = ["tenant", "recipient"]


class SuppressionAdminForm(forms.ModelForm):
    """An operator's entry is stored as the tenants' are: lower case, IDNA domain (the
    gate compares recipients in that form), or refused with the reason."""

    class Meta:
        model = Suppression
        fields = "__all__"

    def clean_address(self) -> str:
        try:
            return normalize_address(self.cleaned_data["address"])
        except SuppressionError as exc:
            raise forms.ValidationError(exc.message) from None


@admin.register(Suppression)
class SuppressionAdmin(AuditedAdmin, admin.ModelAdmin):
    """The global view of every tenant's suppression list: by tenant, reason and date."""

    audit_name = "suppression"
    audit_verbs = {"add": "added", "change": "changed", "delete": "removed"}

    form = SuppressionAdminForm
    list_display = ["tenant", "address", "reason", "created_at", "note"]
    list_filter = ["reason", "tenant"]
    list_select_related = ["tenant"]
    search_fields = ["address", "tenant__name"]
    date_hierarchy = "created_at"
    raw_id_fields = ["tenant"]


@admin.register(SendCounter)
class SendCounterAdmin(admin.ModelAdmin):
    """Messages per tenant and clock hour, against the plan rate."""

    list_display = ["tenant", "hour", "count"]
    list_filter = ["hour"]
    list_select_related = ["tenant"]
    search_fields = ["tenant__name"]
    readonly_fields = ["tenant", "hour", "count"]


class StandingForm(forms.ModelForm):
    """An operator pins a level (with a reason) or unpins it; every change is recorded
    with the operator's name (reputation/levels.py pin, unpin)."""

    class Meta:
        model = Standing
        fields = ["level", "pinned", "pin_reason"]

    def clean(self):
        data = super().clean()
        if data.get("pinned") and not (data.get("pin_reason") or "").strip():
            raise forms.ValidationError("Say why this level is pinned (the tenant sees it).")
        if not data.get("pinned") and self.instance.pinned:
            if not (data.get("pin_reason") or "").strip():
                raise forms.ValidationError("Say why the pin ends, in the reason field.")
        return data


@admin.register(Standing)
class StandingAdmin(admin.ModelAdmin):
    """Levels now, per tenant (no domain) and per sending domain: filter by level to see
    who is at 4 or 5, and why."""

    form = StandingForm
    list_display = ["tenant", "domain", "level", "pinned", "reason", "since"]
    list_filter = ["level", "pinned"]
    list_select_related = ["tenant", "domain"]
    search_fields = ["tenant__name", "domain__name"]
    readonly_fields = [
        "tenant",
        "domain",
        "reason",
        "since",
        "better_since",
        "delivered",
        "hard_bounced",
        "complained",
        "updated_at",
    ]

    def has_add_permission(self, request) -> bool:
        return False  # standings are made by the rates; pin an existing one

    def save_model(self, request, obj: Standing, form, change) -> None:
        # The admin saves inside a transaction: the change and its audit row go together.
        was_pinned = Standing.objects.filter(pk=obj.pk, pinned=True).exists()
        target = obj.domain.name if obj.domain else obj.tenant.name
        if obj.pinned:
            pin(obj.tenant, obj.level, reason=obj.pin_reason, actor=request.user, domain=obj.domain)
            audit.record(
                request,
                tenant=obj.tenant,
                action="reputation.pinned",
                target=target,
                level=obj.level,
                reason=obj.pin_reason,
            )
            self.message_user(request, f"{target}: level pinned at {obj.level}.")
        elif was_pinned:
            reason = obj.pin_reason
            standing = unpin(obj.tenant, reason=reason, actor=request.user, domain=obj.domain)
            audit.record(
                request,
                tenant=obj.tenant,
                action="reputation.unpinned",
                target=target,
                level=standing.level,
                reason=reason,
            )
            self.message_user(
                request, f"{target}: unpinned; the rates put it at level {standing.level}."
            )
        obj.refresh_from_db()


@admin.register(LevelChange)
class LevelChangeAdmin(admin.ModelAdmin):
    """The audit trail of levels: by the rates (no operator) or by an operator."""

    list_display = ["created_at", "tenant", "domain", "old_level", "new_level", "actor", "reason"]
    list_filter = ["new_level", "pinned"]
    list_select_related = ["tenant", "domain", "actor"]
    search_fields = ["tenant__name", "reason"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(DailyStats)
class DailyStatsAdmin(admin.ModelAdmin):
    """What each tenant's domains did per day: the counts behind the rates."""

    list_display = [
        "day",
        "tenant",
        "domain",
        "accepted",
        "delivered",
        "hard_bounced",
        "soft_bounced",
        "complained",
    ]
    list_filter = ["day"]
    list_select_related = ["tenant", "domain"]
    search_fields = ["tenant__name", "domain__name"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(WarmupCounter)
class WarmupCounterAdmin(admin.ModelAdmin):
    """Messages per new domain and day of its warm-up, against the day's cap."""

    list_display = ["day", "domain", "count"]
    list_filter = ["day"]
    list_select_related = ["domain"]
    search_fields = ["domain__name"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


# The operators' overview page reads every app; reputation's admin, which may read the
# others, mounts it on the default admin site.
admin_overview.install(admin.site)
