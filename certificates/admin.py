"""Operators' view of ACME accounts and certificates. Private keys are never rendered."""

from django.contrib import admin

from certificates.models import (
    AcmeAccount,
    Certificate,
    Challenge,
    Issuance,
    Order,
    QuotaOverride,
)


@admin.register(AcmeAccount)
class AcmeAccountAdmin(admin.ModelAdmin):
    list_display = ["directory_url", "account_url", "contact", "created"]
    search_fields = ["directory_url", "account_url", "contact"]
    # The sealed key is not editable, so it is neither in the form nor here.
    readonly_fields = ["directory_url", "account_url", "contact", "created", "updated"]

    def has_add_permission(self, request) -> bool:
        # Accounts are registered by the workers against the configured directory, never typed in.
        return False


@admin.register(Certificate)
class CertificateAdmin(admin.ModelAdmin):
    list_display = [
        "domain",
        "source",
        "not_before",
        "not_after",
        "renew_at",
        "renewal_failures",
        "issuer",
        "profile",
        "fingerprint_sha256",
        "created",
    ]
    list_filter = ["source", "issuer", "profile"]
    search_fields = ["domain__name", "fingerprint_sha256", "serial", "sans"]
    list_select_related = ["domain"]
    raw_id_fields = ["domain"]
    readonly_fields = [
        "domain",
        "source",
        "fullchain_pem",
        "not_before",
        "not_after",
        "sans",
        "issuer",
        "serial",
        "fingerprint_sha256",
        "profile",
        "account",
        "renew_at",
        "renewal_failures",
        "renewal_error",
        "created",
    ]

    def has_add_permission(self, request) -> bool:
        # Certificates come from ACME or from the upload service, which checks them first.
        return False


class ChallengeInline(admin.TabularInline):
    model = Challenge
    extra = 0
    can_delete = False
    fields = ["identifier", "kind", "authorization_status", "authorization_url", "challenge_url", "token"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = [
        "__str__",
        "domain",
        "state",
        "profile",
        "step_attempts",
        "lease_until",
        "created",
        "finished",
        "problem",
    ]
    list_filter = ["state", "is_renewal"]
    search_fields = ["domain__name", "order_url"]
    list_select_related = ["domain"]
    inlines = [ChallengeInline]
    readonly_fields = [
        "domain",
        "account",
        "state",
        "names",
        "is_renewal",
        "profile",
        "replaces",
        "quota_reservation",
        "order_url",
        "finalize_url",
        "certificate_url",
        "lease_token",
        "lease_until",
        "step_attempts",
        "problem",
        "created",
        "updated",
        "finished",
    ]

    def has_add_permission(self, request) -> bool:
        # Orders are started by the DNS check, never by hand.
        return False


@admin.register(QuotaOverride)
class QuotaOverrideAdmin(admin.ModelAdmin):
    list_display = ["subject", "kind", "capacity", "period_seconds", "reason", "updated"]
    list_filter = ["kind"]
    search_fields = ["subject", "reason"]
    readonly_fields = ["created", "updated"]


@admin.register(Issuance)
class IssuanceAdmin(admin.ModelAdmin):
    """The ledger of certificates issued, which rebuilds a lost registered-domain bucket."""

    list_display = ["registered_domain", "names", "renewal", "issued_at", "fingerprint_sha256"]
    list_filter = ["renewal"]
    search_fields = ["registered_domain", "fingerprint_sha256"]
    date_hierarchy = "issued_at"
    readonly_fields = ["registered_domain", "names", "renewal", "fingerprint_sha256", "issued_at"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
