"""Operators' view of ACME accounts and certificates. Private keys are never rendered."""

from django.conf import settings
from django.contrib import admin, messages
from django.utils import timezone
from django.utils.html import format_html

from certificates.admin_badges import ORDER_STATE_COLOURS, badge, one_line
from certificates.ari_schedule import check_soon
from certificates.issuers import label as issuer_label
from certificates.issuers import sync_issuers
from certificates.models import (
    AcmeAccount,
    Certificate,
    Challenge,
    Issuance,
    Issuer,
    Order,
    QuotaOverride,
    Revocation,
    RevocationOutcome,
    expiring_window,
)
from certificates.revocation_queue import ask_again


@admin.register(Issuer)
class IssuerAdmin(admin.ModelAdmin):
    """The ACME issuers as ACME_ISSUERS (or the ACME_* settings) configure them, in order, with what
    an operator must fix; written from the settings, never by hand. The HMAC key is never shown."""

    list_display = [
        "name",
        "position",
        "directory_url",
        "caa",
        "eab",
        "breaker",
        "configured",
        "last_error",
    ]
    readonly_fields = [
        "name",
        "position",
        "directory_url",
        "caa",
        "eab",
        "ca_bundle",
        "roots",
        "breaker",
        "breaker_failures",
        "breaker_reason",
        "configured",
        "last_error",
        "last_error_at",
        "created",
        "updated",
    ]
    fields = readonly_fields

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def changelist_view(self, request, extra_context=None):
        # The rows follow the settings of the process showing them.
        sync_issuers()
        return super().changelist_view(request, extra_context)

    @admin.display(description="CAA identities")
    def caa(self, obj: Issuer) -> str:
        return ", ".join(obj.caa_identities)

    @admin.display(description="Circuit breaker")
    def breaker(self, obj: Issuer) -> str:
        now = timezone.now()
        if obj.breaker_open_until is None:
            return (
                f"closed ({obj.breaker_failures} CA-side failures in a row)"
                if obj.breaker_failures
                else "closed"
            )
        if obj.breaker_open_until > now:
            return (
                f"open until {obj.breaker_open_until:%Y-%m-%d %H:%M:%S} UTC: new orders go to the next issuer"
            )
        return "half-open: one order tries it again"

    @admin.display(description="External Account Binding")
    def eab(self, obj: Issuer) -> str:
        return f"key id {obj.eab_key_id}" if obj.eab_key_id else "none"


@admin.register(AcmeAccount)
class AcmeAccountAdmin(admin.ModelAdmin):
    list_display = ["directory_url", "account_url", "contact", "created"]
    search_fields = ["directory_url", "account_url", "contact"]
    # The sealed key is not editable, so it is neither in the form nor here.
    readonly_fields = ["directory_url", "account_url", "contact", "created", "updated"]

    def has_add_permission(self, request) -> bool:
        # Accounts are registered by the workers against the configured directory, never typed in.
        return False


class RenewalFailingFilter(admin.SimpleListFilter):
    title = "renewal"
    parameter_name = "renewal_failing"

    def lookups(self, request, model_admin):
        return [("1", "Failing (still served while valid)")]

    def queryset(self, request, queryset):
        if self.value() == "1":
            return queryset.filter(renewal_failures__gt=0, renew_at__isnull=False)
        return queryset


@admin.register(Certificate)
class CertificateAdmin(admin.ModelAdmin):
    list_display = [
        "domain",
        "state_badge",
        "source",
        "not_before",
        "not_after",
        "renew_at",
        "ari_window_end",
        "renewal_failures",
        "revoked_at",
        "revocation_reason",
        "issued_by",
        "issuer",
        "profile",
        "fingerprint_sha256",
        "created",
    ]
    list_filter = [
        "source",
        RenewalFailingFilter,
        "account__directory_url",
        "revocation_reason",
        "issuer",
        "profile",
    ]
    search_fields = ["domain__name", "fingerprint_sha256", "serial", "sans"]
    list_select_related = ["domain", "account"]
    raw_id_fields = ["domain"]
    readonly_fields = [
        "domain",
        "source",
        "fullchain_pem",
        "not_before",
        "not_after",
        "sans",
        "issued_by",
        "issuer",
        "serial",
        "fingerprint_sha256",
        "profile",
        "account",
        "renew_at",
        "renewal_failures",
        "renewal_error",
        "ari_identifier",
        "ari_window",
        "explanation",
        "ari_last_answer",
        "ari_next",
        "ari_problem",
        "revoked_at",
        "revocation_reason",
        "revocation_attempts",
        "created",
    ]
    # The ARI columns are shown through the read-only displays above (the action checks now).
    exclude = [
        "ari_cert_id",
        "ari_window_start",
        "ari_window_end",
        "ari_explanation_url",
        "ari_checked_at",
        "ari_next_check",
        "ari_error",
    ]
    # domains/admin.py adds "Renew now" (the renewal is the domains layer's).
    actions = ["check_renewal_information_now"]

    @admin.display(description="State", ordering="not_after")
    def state_badge(self, obj: Certificate) -> str:
        now = timezone.now()
        if obj.revoked_at is not None:
            return badge("failing", "Revoked")
        if obj.not_after <= now:
            return badge("disabled", "Expired")
        if obj.not_before > now:
            return badge("creating", "Not yet valid")
        if obj.not_after - now < expiring_window(
            obj.not_after - obj.not_before, settings.CERTIFICATE_EXPIRING_DAYS
        ):
            return badge("action_required", "Expiring")
        if obj.renewal_failures:
            return badge("pending_dns", "Renewal failing")
        return badge("in_use", "Valid")

    @admin.display(description="Issued by", ordering="account__directory_url")
    def issued_by(self, obj: Certificate) -> str:
        """The CA of ACME_ISSUERS that issued it (empty for an uploaded one)."""
        return issuer_label(obj.account.directory_url) if obj.account_id else ""

    @admin.display(description="Revocation requests (pending, settled, failed for good)")
    def revocation_attempts(self, obj: Certificate) -> str:
        rows = list(obj.revocations.order_by("-created", "-pk")[:5]) if obj.pk else []
        return "\n".join(_describe_revocation(row) for row in rows) or "none"

    def has_add_permission(self, request) -> bool:
        # Certificates come from ACME or from the upload service, which checks them first.
        return False

    @admin.display(description="ARI window (the CA's suggested renewal window, RFC 9773)")
    def ari_window(self, obj: Certificate) -> str:
        if obj.ari_window_start is None or obj.ari_window_end is None:
            return "none yet" if obj.ari_cert_id else "not applicable (no ARI identifier)"
        return f"{obj.ari_window_start:%Y-%m-%d %H:%M:%S} to {obj.ari_window_end:%Y-%m-%d %H:%M:%S} UTC"

    @admin.display(description="ARI certificate ID")
    def ari_identifier(self, obj: Certificate) -> str:
        return obj.ari_cert_id or "-"

    @admin.display(description="Last ARI answer")
    def ari_last_answer(self, obj: Certificate) -> str:
        return f"{obj.ari_checked_at:%Y-%m-%d %H:%M:%S} UTC" if obj.ari_checked_at else "never"

    @admin.display(description="Next ARI check")
    def ari_next(self, obj: Certificate) -> str:
        return f"{obj.ari_next_check:%Y-%m-%d %H:%M:%S} UTC" if obj.ari_next_check else "not checked"

    @admin.display(description="ARI error")
    def ari_problem(self, obj: Certificate) -> str:
        return obj.ari_error or "-"

    @admin.display(description="ARI explanation")
    def explanation(self, obj: Certificate) -> str:
        if not obj.ari_explanation_url:
            return "-"
        # An http(s) URL only (certificates/ari.py refuses any other), opened away from the admin.
        return format_html(
            '<a href="{}" rel="noopener noreferrer" target="_blank">{}</a>',
            obj.ari_explanation_url,
            obj.ari_explanation_url,
        )

    @admin.action(description="Check renewal information (ARI) now")
    def check_renewal_information_now(self, request, queryset) -> None:
        marked = check_soon(queryset, timezone.now())
        skipped = queryset.count() - marked
        text = f"{marked} certificate(s) will have their renewal information checked within a minute"
        if skipped:
            text += (
                f"; {skipped} not checked (custom, replaced, expired, revoked or without an ARI identifier)"
            )
        self.message_user(request, text + ".", messages.INFO)


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
        "state_badge",
        "profile",
        "step_attempts",
        "lease_until",
        "created",
        "finished",
        "reason",
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
        "revoke_replaced",
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

    @admin.display(description="State", ordering="state")
    def state_badge(self, obj: Order) -> str:
        return badge(ORDER_STATE_COLOURS.get(obj.state, "disabled"), obj.state.capitalize())

    @admin.display(description="Problem", ordering="problem")
    def reason(self, obj: Order) -> str:
        return one_line(obj.problem)

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


def _describe_revocation(row: Revocation) -> str:
    text = f"{row.created:%Y-%m-%d %H:%M} UTC, {row.reason}: {row.get_outcome_display()}"
    if row.outcome == RevocationOutcome.PENDING:
        text += f", {row.attempts} attempt(s), next send by {row.lease_until:%Y-%m-%d %H:%M} UTC"
    return text + (f"; {row.problem}" if row.problem else "")


@admin.register(Revocation)
class RevocationAdmin(admin.ModelAdmin):
    """Revocations owed to the CA: revoke and replace, and deleted domains' certificates. A row
    refused for good or given up stays so until an operator asks again."""

    list_display = [
        "domain_name",
        "serial",
        "reason",
        "outcome",
        "attempts",
        "lease_until",
        "created",
        "settled_at",
        "problem",
    ]
    list_filter = ["outcome", "reason"]
    search_fields = ["domain_name", "serial"]
    readonly_fields = [
        "certificate",
        "account",
        "domain_name",
        "serial",
        "reason",
        "outcome",
        "problem",
        "attempts",
        "lease_until",
        "created",
        "settled_at",
        "leaf_pem",
    ]
    exclude = ["lease_token"]
    actions = ["ask_again_action"]

    def has_add_permission(self, request) -> bool:
        # Owed by revoke and replace and by deletions, never typed in.
        return False

    @admin.action(description="Ask the CA again (refused or given-up revocations)")
    def ask_again_action(self, request, queryset) -> None:
        asked = ask_again(list(queryset.values_list("pk", flat=True)))
        skipped = queryset.count() - asked
        text = f"{asked} revocation(s) will be sent again within two minutes"
        if skipped:
            text += f"; {skipped} left alone (pending or settled at the CA)"
        self.message_user(request, text + ".", messages.INFO)
