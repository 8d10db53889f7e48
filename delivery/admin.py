from django.contrib import admin

from delivery.models import ApiKey, Event, IdempotencyKey, Message, Recipient, SmtpCredential


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
class MessageAdmin(admin.ModelAdmin):
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


@admin.register(Recipient)
class RecipientAdmin(admin.ModelAdmin):
    list_display = ["address", "state", "attempts", "next_attempt_at", "last_code", "message"]
    list_filter = ["state"]
    search_fields = ["address", "message__queue_id"]
    raw_id_fields = ["message", "tenant"]


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
