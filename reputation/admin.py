from django.contrib import admin

from reputation.models import InboundReport


@admin.register(InboundReport)
class InboundReportAdmin(admin.ModelAdmin):
    list_display = ["received_at", "tenant", "recipient", "envelope_from", "peer"]
    search_fields = ["recipient__address", "envelope_from"]
    exclude = ["raw"]
    raw_id_fields = ["tenant", "recipient"]
