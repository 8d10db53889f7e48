"""The operators' admin for the queue, messages, events and webhooks: what is stuck and
why, and hands on the queue (each move audited in the tenant)."""

from __future__ import annotations

from datetime import timedelta

from django.contrib import admin, messages
from django.db.models import Q
from django.utils import timezone

from delivery import queue_control
from delivery.models import (
    FINAL_STATES,
    WAITING_STATES,
    ApiKey,
    Event,
    IdempotencyKey,
    Message,
    Recipient,
    RecipientState,
    SmtpCredential,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookOutbox,
)
from delivery.queue_control import Action
from domains import audit
from domains.admin import AuditedAdmin

# What "stuck" means in the admin and on the overview page.
STUCK_LATE = timedelta(minutes=30)  # due this long ago and still waiting
STUCK_ATTEMPTS = 5  # tried this often and still waiting


def stuck(*, now=None) -> Q:
    """Recipients waiting longer than they should: queued or deferred and due for more
    than ``STUCK_LATE`` (the workers are not keeping up, or the sender is held), tried
    ``STUCK_ATTEMPTS`` times or more, or leased by a worker whose lease ran out that long
    ago (the sweeper is not running)."""
    now = now or timezone.now()
    waiting = Q(state__in=WAITING_STATES) & (
        Q(next_attempt_at__lt=now - STUCK_LATE) | Q(attempts__gte=STUCK_ATTEMPTS)
    )
    return waiting | Q(state=RecipientState.SENDING, lease_until__lt=now - STUCK_LATE)


ACTION_WORDS = {
    Action.HOLD: "held",
    Action.RELEASE: "released",
    Action.RETRY_NOW: "set to retry now",
    Action.CANCEL: "cancelled",
}
AUDIT_ACTIONS = {
    Action.HOLD: "message.held",
    Action.RELEASE: "message.released",
    Action.RETRY_NOW: "message.retried_now",
    Action.CANCEL: "message.cancelled",
}


class QueueActions:
    """Hold, release, retry now and cancel (delivery/queue_control.py), for a list of
    messages or of recipients; each message touched gets a line in the admin history and
    an audit row in its tenant."""

    actions = ["hold", "release", "retry_now", "cancel"]
    # How the selected rows name their recipients: "message__in" or "pk__in".
    recipients_lookup: str

    def _apply(self, request, queryset, action: Action) -> None:
        recipients = Recipient.objects.filter(**{self.recipients_lookup: queryset})
        outcome = queue_control.apply(action, recipients)
        word = ACTION_WORDS[action]
        touched = Message.objects.filter(pk__in={r.message_id for r in outcome.moved})
        for message in touched.defer("raw").order_by("pk"):
            moved = [r.address for r in outcome.moved if r.message_id == message.pk]
            self.log_change(request, message, f"Recipients {word}: {', '.join(moved)}")
            audit.record(
                request,
                tenant=message.tenant_id,
                action=AUDIT_ACTIONS[action],
                target=message.queue_id,
                recipients=moved,
            )
        self.message_user(request, f"{len(outcome.moved)} recipient(s) {word}.")
        if outcome.moved:
            tenants = len({r.tenant_id for r in outcome.moved})
            messages_moved = len({r.message_id for r in outcome.moved})
            self.message_user(
                request,
                f"Recorded in the audit log of {tenants} tenant(s), "
                f"one entry per message ({messages_moved}).",
            )
        if outcome.left:
            states = sorted({f"{r.address} ({r.state})" for r in outcome.left})
            shown = ", ".join(states[:10]) + (" …" if len(states) > 10 else "")
            self.message_user(
                request,
                f"{len(outcome.left)} left as they are (not in a state this applies to): {shown}",
                messages.WARNING,
            )

    @admin.action(description="Hold (queued or deferred recipients wait for release)")
    def hold(self, request, queryset):
        self._apply(request, queryset, Action.HOLD)

    @admin.action(description="Release held recipients (queued again, sent now)")
    def release(self, request, queryset):
        self._apply(request, queryset, Action.RELEASE)

    @admin.action(description="Retry deferred recipients now")
    def retry_now(self, request, queryset):
        self._apply(request, queryset, Action.RETRY_NOW)

    @admin.action(description="Cancel (recipients not sent yet are never sent)")
    def cancel(self, request, queryset):
        self._apply(request, queryset, Action.CANCEL)


@admin.register(SmtpCredential)
class SmtpCredentialAdmin(AuditedAdmin, admin.ModelAdmin):
    audit_name = "smtp_credential"
    list_display = ["username", "tenant", "description", "revoked", "last_used_at"]
    list_filter = ["revoked"]
    list_select_related = ["tenant"]
    search_fields = ["username", "tenant__name"]
    exclude = ["password_hash"]
    filter_horizontal = ["domains"]


@admin.register(ApiKey)
class ApiKeyAdmin(AuditedAdmin, admin.ModelAdmin):
    audit_name = "api_key"
    list_display = ["prefix", "name", "tenant", "revoked", "last_used_at"]
    list_filter = ["revoked"]
    list_select_related = ["tenant"]
    search_fields = ["prefix", "name", "tenant__name"]
    exclude = ["key_hash"]


class RecipientInline(admin.TabularInline):
    model = Recipient
    extra = 0
    fields = [
        "address",
        "state",
        "attempts",
        "next_attempt_at",
        "last_code",
        "last_enhanced",
        "last_text",
        "mx_host",
    ]
    readonly_fields = fields
    can_delete = False


@admin.register(Message)
class MessageAdmin(QueueActions, admin.ModelAdmin):
    list_display = ["queue_id", "tenant", "header_from", "subject", "size", "created_at"]
    list_filter = ["source", "tenant"]
    list_select_related = ["tenant"]
    search_fields = ["queue_id", "header_from", "subject", "message_id", "tenant__name"]
    date_hierarchy = "created_at"
    exclude = ["raw"]
    readonly_fields = [
        "tenant",
        "domain",
        "queue_id",
        "source",
        "mail_from",
        "header_from",
        "subject",
        "message_id",
        "size",
        "created_at",
    ]
    inlines = [RecipientInline]
    recipients_lookup = "message__in"
    show_full_result_count = False  # no COUNT(*) of the whole table beside a filtered page

    def get_queryset(self, request):
        # The bodies stay in the database: a page of 100 messages would read them all.
        return super().get_queryset(request).defer("raw")


class StuckFilter(admin.SimpleListFilter):
    title = "stuck"
    parameter_name = "stuck"

    def lookups(self, request, model_admin):
        minutes = int(STUCK_LATE.total_seconds() // 60)
        return [
            (
                "yes",
                f"stuck: due {minutes}+ min ago, {STUCK_ATTEMPTS}+ attempts, or lease expired",
            )
        ]

    def queryset(self, request, queryset):
        return queryset.filter(stuck()) if self.value() == "yes" else queryset


class WaitingFilter(admin.SimpleListFilter):
    title = "waiting"
    parameter_name = "waiting"

    def lookups(self, request, model_admin):
        return [("yes", "not final yet (queued, deferred, held, sending)")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.exclude(state__in=FINAL_STATES)
        return queryset


@admin.register(Recipient)
class RecipientAdmin(QueueActions, admin.ModelAdmin):
    """The queue, one row per recipient: filter by state, "stuck" or tenant to see what
    waits and why (the last reply, the attempts, how long since it was accepted)."""

    list_display = [
        "address",
        "state",
        "tenant",
        "queue_id",
        "attempts",
        "age",
        "next_attempt_at",
        "last_reply",
        "mx_host",
    ]
    list_filter = [StuckFilter, WaitingFilter, "state", "tenant"]
    list_select_related = ["message", "tenant"]
    search_fields = ["address", "=message__queue_id", "last_text"]
    search_help_text = "An address (or part of it), a queue id (exact), or reply text."
    raw_id_fields = ["message", "tenant"]
    recipients_lookup = "pk__in"
    show_full_result_count = False

    def get_queryset(self, request):
        return super().get_queryset(request).defer("message__raw")

    @admin.display(description="queue id", ordering="message__queue_id")
    def queue_id(self, recipient: Recipient) -> str:
        return recipient.message.queue_id

    @admin.display(description="age", ordering="message__created_at")
    def age(self, recipient: Recipient) -> str:
        return age_words(timezone.now() - recipient.message.created_at)

    @admin.display(description="last reply", ordering="last_code")
    def last_reply(self, recipient: Recipient) -> str:
        if recipient.last_code is None:
            return "–"
        reply = " ".join(
            part for part in (str(recipient.last_code), recipient.last_enhanced) if part
        )
        text = recipient.last_text
        return f"{reply} {text[:120]}{'…' if len(text) > 120 else ''}".strip()


def age_words(age: timedelta) -> str:
    """``age`` as an operator reads it at a glance: 45 s, 12 min, 3 h 20 min, 2 d 4 h."""
    seconds = max(0, int(age.total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ["type", "created_at", "tenant", "message", "recipient", "code", "enhanced"]
    list_filter = ["type"]
    list_select_related = ["tenant", "message", "recipient"]
    search_fields = ["message__queue_id", "recipient__address"]
    date_hierarchy = "created_at"
    raw_id_fields = ["tenant", "message", "recipient"]
    show_full_result_count = False

    def get_queryset(self, request):
        return super().get_queryset(request).defer("message__raw")


@admin.register(IdempotencyKey)
class IdempotencyKeyAdmin(admin.ModelAdmin):
    list_display = ["key", "tenant", "status_code", "created_at"]
    list_select_related = ["tenant"]
    search_fields = ["key", "tenant__name"]
    raw_id_fields = ["tenant"]


class WebhookAttemptInline(admin.TabularInline):
    model = WebhookAttempt
    fk_name = "delivery"
    extra = 0
    fields = ["number", "started_at", "duration_ms", "status_code", "error", "succeeded"]
    readonly_fields = fields
    can_delete = False


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(AuditedAdmin, admin.ModelAdmin):
    audit_name = "webhook"
    list_display = ["url", "tenant", "active", "created_at"]
    list_filter = ["active"]
    list_select_related = ["tenant"]
    search_fields = ["url", "description", "tenant__name"]
    raw_id_fields = ["tenant"]
    # The signing secrets stay out of the admin (shown once to the tenant; encrypted).
    exclude = ["secret_encrypted", "previous_secret_encrypted"]
    readonly_fields = ["first_event_id", "previous_secret_until", "created_at", "updated_at"]


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ["pk", "endpoint", "event", "state", "attempts", "next_attempt_at"]
    list_filter = ["state", "endpoint__tenant"]
    list_select_related = ["endpoint", "event"]
    search_fields = ["endpoint__url", "endpoint__tenant__name"]
    raw_id_fields = ["endpoint", "event"]
    readonly_fields = ["lease_token", "lease_until", "created_at", "updated_at"]
    inlines = [WebhookAttemptInline]


@admin.register(WebhookAttempt)
class WebhookAttemptAdmin(admin.ModelAdmin):
    list_display = ["started_at", "endpoint", "delivery", "number", "status_code", "succeeded"]
    list_filter = ["succeeded"]
    list_select_related = ["endpoint"]
    search_fields = ["endpoint__url", "error"]
    raw_id_fields = ["delivery", "endpoint"]


@admin.register(WebhookOutbox)
class WebhookOutboxAdmin(admin.ModelAdmin):
    list_display = ["name", "position", "gap_seen_at", "updated_at"]
    readonly_fields = ["name", "position", "gap_seen_at", "updated_at"]
