from django.contrib import admin, messages

from delivery import queue_control
from delivery.models import (
    ApiKey,
    Event,
    IdempotencyKey,
    Message,
    Recipient,
    SmtpCredential,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookOutbox,
)
from delivery.queue_control import Action

ACTION_WORDS = {
    Action.HOLD: "held",
    Action.RELEASE: "released",
    Action.RETRY_NOW: "set to retry now",
    Action.CANCEL: "cancelled",
}


class QueueActions:
    """Hold, release, retry now and cancel (delivery/queue_control.py), for a list of
    messages or of recipients; each message touched gets a line in the admin history."""

    actions = ["hold", "release", "retry_now", "cancel"]
    # How the selected rows name their recipients: "message__in" or "pk__in".
    recipients_lookup: str

    def _apply(self, request, queryset, action: Action) -> None:
        recipients = Recipient.objects.filter(**{self.recipients_lookup: queryset})
        outcome = queue_control.apply(action, recipients)
        word = ACTION_WORDS[action]
        for message in Message.objects.filter(
            pk__in={r.message_id for r in outcome.moved}
        ).order_by("pk"):
            moved = [r.address for r in outcome.moved if r.message_id == message.pk]
            self.log_change(request, message, f"Recipients {word}: {', '.join(moved)}")
        self.message_user(request, f"{len(outcome.moved)} recipient(s) {word}.")
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
class SmtpCredentialAdmin(admin.ModelAdmin):
    list_display = ["username", "tenant", "description", "revoked", "last_used_at"]
    list_filter = ["revoked"]
    search_fields = ["username", "tenant__name"]
    exclude = ["password_hash"]
    filter_horizontal = ["domains"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["prefix", "name", "tenant", "revoked", "last_used_at"]
    list_filter = ["revoked"]
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
    list_filter = ["source"]
    search_fields = ["queue_id", "header_from", "subject", "message_id", "tenant__name"]
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


@admin.register(Recipient)
class RecipientAdmin(QueueActions, admin.ModelAdmin):
    list_display = ["address", "state", "attempts", "next_attempt_at", "last_code", "message"]
    list_filter = ["state"]
    search_fields = ["address", "message__queue_id"]
    raw_id_fields = ["message", "tenant"]
    recipients_lookup = "pk__in"


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ["type", "created_at", "tenant", "message", "recipient", "code", "enhanced"]
    list_filter = ["type"]
    search_fields = ["message__queue_id", "recipient__address"]
    raw_id_fields = ["tenant", "message", "recipient"]


@admin.register(IdempotencyKey)
class IdempotencyKeyAdmin(admin.ModelAdmin):
    list_display = ["key", "tenant", "status_code", "created_at"]
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
class WebhookEndpointAdmin(admin.ModelAdmin):
    list_display = ["url", "tenant", "active", "created_at"]
    list_filter = ["active"]
    search_fields = ["url", "description", "tenant__name"]
    raw_id_fields = ["tenant"]
    # The signing secrets stay out of the admin (shown once to the tenant; encrypted).
    exclude = ["secret_encrypted", "previous_secret_encrypted"]
    readonly_fields = ["first_event_id", "previous_secret_until", "created_at", "updated_at"]


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ["pk", "endpoint", "event", "state", "attempts", "next_attempt_at"]
    list_filter = ["state"]
    search_fields = ["endpoint__url", "endpoint__tenant__name"]
    raw_id_fields = ["endpoint", "event"]
    readonly_fields = ["lease_token", "lease_until", "created_at", "updated_at"]
    inlines = [WebhookAttemptInline]


@admin.register(WebhookAttempt)
class WebhookAttemptAdmin(admin.ModelAdmin):
    list_display = ["started_at", "endpoint", "delivery", "number", "status_code", "succeeded"]
    list_filter = ["succeeded"]
    search_fields = ["endpoint__url", "error"]
    raw_id_fields = ["delivery", "endpoint"]


@admin.register(WebhookOutbox)
class WebhookOutboxAdmin(admin.ModelAdmin):
    list_display = ["name", "position", "gap_seen_at", "updated_at"]
    readonly_fields = ["name", "position", "gap_seen_at", "updated_at"]
