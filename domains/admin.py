from django import forms
from django.contrib import admin, messages

from domains.checks.run import check_domain
from domains.dkim_keys import KeyActionError, start_rotation
from domains.models import DkimKey, Domain, DomainCheck, DomainEvent, Membership, Tenant
from domains.names import InvalidDomain, normalize_domain
from domains.tenancy import add_domain


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ["name", "suspended", "list_unsubscribe", "created_at"]
    list_filter = ["suspended", "list_unsubscribe"]
    search_fields = ["name"]
    inlines = [MembershipInline]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "tenant", "role", "created_at"]
    list_filter = ["role"]
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


@admin.register(Domain)
class DomainAdmin(admin.ModelAdmin):
    form = DomainAdminForm
    list_display = ["name", "tenant", "status", "health_score", "score_partial", "checked_at"]
    list_filter = ["status", "score_partial", "require_tls"]
    search_fields = ["name", "tenant__name"]
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
        obj.pk, obj._state.adding = created.pk, False

    @admin.action(description="Check DNS now")
    def check_now(self, request, queryset):
        for domain in queryset:
            report = check_domain(domain)
            state = {True: "verified", False: "not verified", None: "undetermined"}
            self.message_user(
                request, f"{domain.name}: score {report.score}, {state[report.verified]}."
            )

    @admin.action(description="Rotate the RSA DKIM key (switches once DNS serves it)")
    def rotate_key(self, request, queryset):
        for domain in queryset:
            try:
                key = start_rotation(domain=domain)
            except KeyActionError as exc:
                self.message_user(request, f"{domain.name}: {exc}", messages.WARNING)
            else:
                self.message_user(request, f"{domain.name}: publish {key.record_name}.")

    @admin.action(description="Disable (refuse mail from these domains)")
    def disable(self, request, queryset):
        for domain in queryset:
            domain.disable()

    @admin.action(description="Enable")
    def enable(self, request, queryset):
        for domain in queryset:
            domain.enable()


@admin.register(DkimKey)
class DkimKeyAdmin(admin.ModelAdmin):
    list_display = ["selector", "domain", "algorithm", "bits", "state", "created_at"]
    list_filter = ["algorithm", "state"]
    search_fields = ["selector", "domain__name"]
    # The encrypted private key is never shown, not even to operators.
    exclude = ["private_key_encrypted"]
    readonly_fields = ["public_key"]


@admin.register(DomainCheck)
class DomainCheckAdmin(admin.ModelAdmin):
    list_display = ["domain", "checked_at", "score", "partial", "verified"]
    list_filter = ["partial", "verified"]
    search_fields = ["domain__name"]
    raw_id_fields = ["domain"]


@admin.register(DomainEvent)
class DomainEventAdmin(admin.ModelAdmin):
    list_display = ["type", "domain", "created_at", "message"]
    list_filter = ["type"]
    search_fields = ["domain__name", "message"]
    raw_id_fields = ["domain", "tenant"]
