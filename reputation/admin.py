from django.contrib import admin

from reputation.models import InboundReport, SendCounter, Suppression


@admin.register(InboundReport)
class InboundReportAdmin(admin.ModelAdmin):
    list_display = ["received_at", "tenant", "recipient", "envelope_from", "peer"]
    search_fields = ["recipient__address", "envelope_from"]
    exclude = ["raw"]
    raw_id_fields = ["tenant", "recipient"]


@admin.register(Suppression)
class SuppressionAdmin(admin.ModelAdmin):
    """The global view of every tenant's suppression list."""

    list_display = ["address", "tenant", "reason", "created_at", "note"]
    list_filter = ["reason"]
    search_fields = ["address", "tenant__name"]
    raw_id_fields = ["tenant"]

    def save_model(self, request, obj, form, change):
        obj.address = obj.address.strip().lower()
        super().save_model(request, obj, form, change)


@admin.register(SendCounter)
class SendCounterAdmin(admin.ModelAdmin):
    """Messages per tenant and clock hour, against the plan rate."""

    list_display = ["tenant", "hour", "count"]
    list_filter = ["hour"]
    search_fields = ["tenant__name"]
    readonly_fields = ["tenant", "hour", "count"]
