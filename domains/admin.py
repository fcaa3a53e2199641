"""Operators' view of regions, apps and domains."""

from __future__ import annotations

import datetime

from django.conf import settings
from django.contrib import admin, messages
from django.db.models import OuterRef, Subquery
from django.http import HttpRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from certificates.admin import CertificateAdmin
from certificates.admin_badges import badge, one_line
from certificates.models import (
    Certificate,
    CertificateSource,
    RegisteredDomain,
    Revocation,
    RevocationOutcome,
    expiring_window,
)
from certificates.serving import in_serving_order, served_certificate_of
from domains.claims import renew_now
from domains.custom_certificates import remove_custom_certificate
from domains.domain_admin_forms import (
    CustomCertificateForm,
    DomainForm,
    ExpiringFilter,
    PausedByCAFilter,
    ProfileFilter,
)
from domains.issuer_choice import pin_issuer
from domains.models import App, Domain, DomainEvent, DomainStatus, Region
from domains.names import to_unicode
from domains.ownership import ownership_record
from domains.pauses import DomainPaused, unpause_domains
from domains.platform import ensure_platform_domain, platform_apps, platform_domains, remove_platform_domain
from domains.profiles import ProfileRefused, ProfileUnchecked, effective_profile
from domains.quota_policy import quota_of
from domains.read_only_admin import ReadOnlyAdmin
from domains.revocations import RevokeAndReplaceRefused, revoke_and_replace
from domains.services import (
    add_domain,
    delete_domain,
    dns_records_to_add,
    retry_now,
    set_letsencrypt,
    set_profile,
)


@admin.register(Region)
class RegionAdmin(admin.ModelAdmin):
    """Saving a region gives it its platform certificate domain `*.<suffix>` (domains/platform.py),
    or replaces it when the suffix changed; deleting one removes it."""

    list_display = [
        "name",
        "domain_suffix",
        "platform_certificate",
        "cname_target",
        "ingress_ipv4",
        "ingress_ipv6",
        "created",
    ]
    search_fields = ["name", "domain_suffix"]
    readonly_fields = ["platform_certificate", "created", "updated"]

    def get_queryset(self, request):
        now = timezone.now()
        platform = platform_domains().filter(app__region_id=OuterRef("pk")).order_by("pk")
        served = in_serving_order(now).filter(domain_id=OuterRef("pk"))
        return (
            super()
            .get_queryset(request)
            .annotate(
                platform_domain_id=Subquery(platform.values("pk")[:1]),
                platform_domain_name=Subquery(platform.values("name")[:1]),
                platform_domain_status=Subquery(platform.values("status")[:1]),
                platform_served_not_after=Subquery(
                    platform.annotate(served_not_after=Subquery(served.values("not_after")[:1])).values(
                        "served_not_after"
                    )[:1]
                ),
            )
        )

    @admin.display(description="Platform certificate")
    def platform_certificate(self, obj: Region) -> str:
        if getattr(obj, "platform_domain_id", None) is None:
            return "none yet (made when the region is saved, or at beat's next tick)"
        served = obj.platform_served_not_after
        return format_html(
            '<a href="{}">{}</a>: {}, {}',
            reverse("admin:domains_domain_change", args=[obj.platform_domain_id]),
            obj.platform_domain_name,
            DomainStatus(obj.platform_domain_status).label,
            f"served until {served:%Y-%m-%d}" if served else "nothing served yet",
        )

    def save_model(self, request, obj: Region, form, change: bool) -> None:
        super().save_model(request, obj, form, change)
        done = ensure_platform_domain(obj)
        if done is not None:
            level = messages.ERROR if done.what.startswith("refused") else messages.INFO
            self.message_user(request, f"Platform certificate {done.name}: {done.what}", level)

    def delete_model(self, request, obj: Region) -> None:
        remove_platform_domain(obj)
        super().delete_model(request, obj)

    def delete_queryset(self, request, queryset) -> None:
        for region in queryset:
            self.delete_model(request, region)

    def get_deleted_objects(self, objs, request):
        # The platform's own app would "protect" the region: it goes with it (delete_model), so
        # only customers' apps may stop the deletion.
        deleted, counts, perms, protected = super().get_deleted_objects(objs, request)
        ours = [
            reverse("admin:domains_app_change", args=[pk])
            for pk in platform_apps().filter(region__in=list(objs)).values_list("pk", flat=True)
        ]
        protected = [entry for entry in protected if not any(f'href="{url}"' in str(entry) for url in ours)]
        return deleted, counts, perms, protected


@admin.register(App)
class AppAdmin(admin.ModelAdmin):
    list_display = ["name", "region", "owner", "default_hostname", "created"]
    list_filter = ["region"]
    search_fields = ["name", "owner__username"]
    list_select_related = ["region", "owner"]
    raw_id_fields = ["owner"]
    readonly_fields = ["created", "updated"]


def _served_subquery(field: str, now: datetime.datetime) -> Subquery:
    """One field of the certificate served now."""
    return Subquery(in_serving_order(now).filter(domain_id=OuterRef("pk")).values(field)[:1])


class DomainEventInline(admin.TabularInline):
    model = DomainEvent
    extra = 0
    can_delete = False
    fields = ["created", "from_status", "to_status", "reason"]
    readonly_fields = fields
    ordering = ["-created", "-pk"]
    verbose_name_plural = "History"

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Domain)
class DomainAdmin(admin.ModelAdmin):
    form = DomainForm
    inlines = [DomainEventInline]
    actions = [
        "retry_now_action",
        "renew_now_action",
        "mark_unpaused_action",
        "remove_custom_certificate_action",
        "revoke_and_replace_action",
    ]
    list_display = [
        "name",
        "unicode_name",
        "app",
        "status_badge",
        "served",
        "expiring",
        "letsencrypt_enabled",
        "profile",
        "consecutive_failures",
        "next_attempt_at",
        "last_checked_at",
        "reason",
    ]
    list_filter = [
        "status",
        "waiting_on",
        PausedByCAFilter,
        ExpiringFilter,
        "letsencrypt_enabled",
        ProfileFilter,
        "app__region",
    ]
    search_fields = ["name", "app__name", "registered_domain"]
    # One count (of the filtered rows) per page, not a second of the whole table.
    show_full_result_count = False
    search_help_text = (
        "A name (or part of one), an app, a registered domain, a name a certificate covers (SAN), "
        "or a certificate's SHA-256 fingerprint (or its first 8 or more hex digits, colons allowed)."
    )
    list_select_related = ["app"]
    raw_id_fields = ["app"]
    readonly_fields = [
        "status",
        "ca_pause",
        "served_certificate",
        "renewal",
        "revoked_certificates",
        "ownership",
        "registered_domain",
        "quota",
        "dns_records",
        "consecutive_failures",
        "avoid_issuers",
        "avoid_issuers_until",
        "next_attempt_at",
        "last_checked_at",
        "last_error",
        "created",
        "updated",
    ]

    def get_search_results(self, request, queryset, search_term):
        """Besides the names: the domains whose certificates cover `search_term` (a SAN, exactly)
        or whose fingerprint starts with it."""
        found, duplicates = super().get_search_results(request, queryset, search_term)
        term = search_term.strip().lower()
        if not term:
            return found, duplicates
        hex_digits = term.replace(":", "")
        certificates = Certificate.objects.filter(sans__contains=[term])
        if len(hex_digits) >= 8 and all(c in "0123456789abcdef" for c in hex_digits):
            certificates = certificates | Certificate.objects.filter(
                fingerprint_sha256__startswith=hex_digits
            )
        by_certificate = queryset.filter(pk__in=certificates.values("domain_id"))
        return found | by_certificate, duplicates

    def get_queryset(self, request):
        now = timezone.now()
        return (
            super()
            .get_queryset(request)
            .annotate(
                served_source=_served_subquery("source", now),
                served_not_before=_served_subquery("not_before", now),
                served_not_after=_served_subquery("not_after", now),
            )
        )

    def get_urls(self):
        upload = self.admin_site.admin_view(self.upload_certificate_view)
        return [
            path("<int:pk>/certificate/", upload, name="domains_domain_upload_certificate"),
            *super().get_urls(),
        ]

    def upload_certificate_view(self, request: HttpRequest, pk: int):
        """Uploads a custom certificate through install_custom_certificate, as the command and API do."""
        domain = get_object_or_404(Domain, pk=pk)
        if not self.has_change_permission(request, domain):
            return HttpResponseRedirect(reverse("admin:domains_domain_changelist"))
        form = CustomCertificateForm(request.POST or None, request.FILES or None)
        stored = form.install(domain) if request.method == "POST" and form.is_valid() else None
        if stored is not None:
            self.message_user(
                request,
                f"{domain.name}: custom certificate stored and served, until {stored.not_after:%Y-%m-%d}.",
                messages.SUCCESS,
            )
            return HttpResponseRedirect(reverse("admin:domains_domain_change", args=[domain.pk]))
        context = {
            **self.admin_site.each_context(request),
            "title": f"Upload a custom certificate for {domain.name}",
            "form": form,
            "domain": domain,
            "opts": self.model._meta,
            "original": domain,
        }
        return TemplateResponse(request, "admin/domains/domain/upload_certificate.html", context)

    def get_inlines(self, request, obj=None):
        # A domain being added has no history yet.
        return self.inlines if obj is not None else []

    def get_readonly_fields(self, request, obj=None):
        # A domain's name and app are its identity: a different name is a different domain.
        fixed = ["name", "app"] if obj is not None else []
        return [*fixed, *self.readonly_fields]

    def save_model(self, request, obj: Domain, form, change: bool) -> None:
        if change:
            if "letsencrypt_enabled" in form.changed_data:
                set_letsencrypt(obj, obj.letsencrypt_enabled)
            if "acme_profile" in form.changed_data:
                try:
                    set_profile(obj, obj.acme_profile)
                except (ProfileRefused, ProfileUnchecked) as exc:
                    # The CA's offer changed since the form was checked: the profile is left as it was.
                    self.message_user(request, f"{obj.name}: profile not changed: {exc}", messages.ERROR)
            if "issuer" in form.changed_data:
                pin_issuer(obj, obj.issuer)
            return
        created = add_domain(
            obj.app,
            obj.name,
            letsencrypt=obj.letsencrypt_enabled,
            profile=obj.acme_profile,
            issuer=obj.issuer,
        )
        obj.pk = created.pk
        obj.refresh_from_db()

    def delete_model(self, request, obj: Domain) -> None:
        delete_domain(obj)

    def delete_queryset(self, request, queryset) -> None:
        for domain in queryset:
            delete_domain(domain)

    @admin.action(description="Remove the custom certificate (the Let's Encrypt one is served at once)")
    def remove_custom_certificate_action(self, request, queryset) -> None:
        removed = [domain.name for domain in queryset if remove_custom_certificate(domain)]
        if removed:
            self.message_user(request, f"Custom certificate removed: {', '.join(removed)}", messages.SUCCESS)
        else:
            self.message_user(request, "None of these domains had a custom certificate.", messages.WARNING)

    @admin.display(description="Status", ordering="status")
    def status_badge(self, obj: Domain) -> str:
        return badge(obj.status, obj.get_status_display())

    @admin.display(description="Last error", ordering="last_error")
    def reason(self, obj: Domain) -> str:
        return one_line(obj.last_error)

    @admin.display(description="Served", ordering="served_not_after")
    def served(self, obj: Domain) -> str:
        if obj.served_source is None:
            return "nothing"
        return f"{CertificateSource(obj.served_source).label}, until {obj.served_not_after:%Y-%m-%d}"

    @admin.display(description="Profile", ordering="acme_profile")
    def profile(self, obj: Domain) -> str:
        if obj.acme_profile:
            return obj.acme_profile
        platform = effective_profile("")
        return f"default ({platform})" if platform else "default (the CA's)"

    @admin.display(description="Expiring", boolean=True)
    def expiring(self, obj: Domain) -> bool | None:
        if obj.served_not_after is None:
            return None
        lifetime = obj.served_not_after - obj.served_not_before
        return obj.served_not_after - timezone.now() < expiring_window(
            lifetime, settings.CERTIFICATE_EXPIRING_DAYS
        )

    @admin.display(description="Served certificate")
    def served_certificate(self, obj: Domain) -> str:
        if obj.pk is None:
            return ""
        upload = reverse("admin:domains_domain_upload_certificate", args=[obj.pk])
        cert = served_certificate_of(obj.pk)
        if cert is None:
            return format_html('Nothing is served. <a href="{}">Upload a custom certificate</a>', upload)
        return format_html(
            "{} certificate for {}<br>issuer {}, profile {}<br>valid {} to {} UTC<br>SHA-256 {}<br>"
            '<a href="{}">Upload a custom certificate</a>',
            cert.get_source_display(),
            ", ".join(cert.sans),
            cert.issuer,
            (cert.profile or "(the CA's default)") if cert.source == CertificateSource.LETSENCRYPT else "-",
            f"{cert.not_before:%Y-%m-%d %H:%M}",
            f"{cert.not_after:%Y-%m-%d %H:%M}",
            cert.fingerprint_sha256,
            upload,
        )

    @admin.display(description="Renewal")
    def renewal(self, obj: Domain) -> str:
        if obj.pk is None:
            return ""
        cert = (
            Certificate.objects.filter(domain_id=obj.pk, source=CertificateSource.LETSENCRYPT)
            .order_by("-not_after")
            .first()
        )
        if cert is None:
            return "no Let's Encrypt certificate yet"
        if cert.renew_at is None:
            return (
                "not scheduled (Let's Encrypt disabled)" if not obj.letsencrypt_enabled else "not scheduled"
            )
        text = f"next attempt at {cert.renew_at:%Y-%m-%d %H:%M} UTC"
        if cert.renewal_error:
            text += f"; {cert.renewal_failures} failed: {cert.renewal_error}"
        return text

    @admin.display(description="Revoked certificates")
    def revoked_certificates(self, obj: Domain) -> str:
        if obj.pk is None:
            return ""
        revoked = list(
            Certificate.objects.filter(domain_id=obj.pk, revoked_at__isnull=False)
            .order_by("-revoked_at", "-pk")
            .values_list("serial", "revoked_at", "revocation_reason")[:10]
        )
        lines = [
            f"serial {serial}: revoked {at:%Y-%m-%d %H:%M} UTC ({reason})" for serial, at, reason in revoked
        ]
        # Revocations owed and not done: still pending, or failed for good (the operator must act).
        lines += [
            f"serial {serial}: NOT revoked ({reason}), {outcome.replace('_', ' ')}"
            + (f": {problem}" if problem else "")
            for serial, reason, outcome, problem in Revocation.objects.filter(certificate__domain_id=obj.pk)
            .exclude(
                outcome__in=[
                    RevocationOutcome.REVOKED,
                    RevocationOutcome.ALREADY_REVOKED,
                    RevocationOutcome.EXPIRED,
                ]
            )
            .order_by("-created", "-pk")
            .values_list("serial", "reason", "outcome", "problem")[:10]
        ]
        return "\n".join(lines) or "none"

    @admin.action(description="Revoke and replace the certificate (key compromise)")
    def revoke_and_replace_action(self, request, queryset) -> None:
        for domain in queryset.order_by("name"):
            try:
                self.message_user(request, revoke_and_replace(domain), messages.SUCCESS)
            except RevokeAndReplaceRefused as exc:
                self.message_user(request, f"Not revoked: {exc}", messages.ERROR)

    @admin.action(description="Renew now (the served Let's Encrypt certificate, whatever its renewal date)")
    def renew_now_action(self, request, queryset) -> None:
        _renew_now(self, request, queryset.order_by("name").values_list("pk", "name"))

    @admin.action(description="Retry now (check DNS, or continue the order, with the backoff reset)")
    def retry_now_action(self, request, queryset) -> None:
        for domain in queryset:
            try:
                self.message_user(request, retry_now(domain), messages.INFO)
            except DomainPaused as exc:
                self.message_user(request, str(exc), messages.WARNING)

    @admin.action(description="Mark unpaused at the CA (after visiting its unpause URL)")
    def mark_unpaused_action(self, request, queryset) -> None:
        done = unpause_domains(list(queryset.values_list("pk", flat=True)))
        if done:
            self.message_user(request, f"Unpaused, and due now: {', '.join(sorted(done))}", messages.SUCCESS)
        else:
            self.message_user(request, "None of these domains was paused by the CA.", messages.WARNING)

    @admin.display(description="Paused by the CA")
    def ca_pause(self, obj: Domain) -> str:
        if not obj.ca_unpause_url:
            return "no"
        return format_html(
            "since {} UTC: Let's Encrypt refuses every order for this name from the platform's "
            'account. Visit <a href="{}" rel="noreferrer" target="_blank">its unpause page</a> '
            "(the platform account's own link: it may lift the pause of other names too; keep it "
            "from customers), then use the action "
            '"Mark unpaused at the CA". Nothing is sent for this name until then.',
            f"{obj.ca_paused_at:%Y-%m-%d %H:%M}" if obj.ca_paused_at else "?",
            obj.ca_unpause_url,
        )

    @admin.display(description="Let's Encrypt quota of its registered domain")
    def quota(self, obj: Domain) -> str:
        if not obj.registered_domain:
            return ""
        entry = quota_of([obj.registered_domain])[0]
        if entry.tokens_left is None:
            return "unknown: the quota store is unreachable"
        next_at = f"; next token at {entry.next_token_at:%Y-%m-%d %H:%M:%S %Z}" if entry.next_token_at else ""
        return f"{entry.tokens_left} of {entry.limit} left{next_at}"

    @admin.display(description="Ownership")
    def ownership(self, obj: Domain) -> str:
        if obj.pk is None:
            return ""
        if obj.ownership_verified_at:
            return f"proven {obj.ownership_verified_at:%Y-%m-%d %H:%M} UTC"
        return (
            f"not proven yet: {ownership_record(obj.name, obj.ownership_token)} "
            f"(or a CNAME to {obj.app.default_hostname})"
        )

    @admin.display(description="DNS records to add")
    def dns_records(self, obj: Domain) -> str:
        return "\n".join(dns_records_to_add(obj)) if obj.pk else ""

    @admin.display(description="Unicode name")
    def unicode_name(self, obj: Domain) -> str:
        shown = to_unicode(obj.name)
        return shown if shown != obj.name else ""


@admin.register(RegisteredDomain)
class RegisteredDomainAdmin(ReadOnlyAdmin):
    """Each registered domain with custom domains, and its Let's Encrypt quota read from Redis (one
    round trip per page)."""

    list_display = ["name", "domain_count", "limit", "tokens_left", "next_token_at"]
    search_fields = ["name"]
    list_per_page = 100

    def get_changelist_instance(self, request):
        changelist = super().get_changelist_instance(request)
        rows = list(changelist.result_list)
        report = {entry.registered_domain: entry for entry in quota_of([row.name for row in rows])}
        for row in rows:
            row.quota = report[row.name]
        changelist.result_list = rows
        return changelist

    @admin.display(description="limit")
    def limit(self, obj) -> str:
        return obj.quota.limit

    @admin.display(description="tokens left")
    def tokens_left(self, obj) -> str:
        left = obj.quota.tokens_left
        return "quota store unreachable" if left is None else f"{left} of {obj.quota.capacity}"

    @admin.display(description="next token at")
    def next_token_at(self, obj):
        return obj.quota.next_token_at or "-"


# Registered by importing them: the outbox's and the notifications' admin live in their own modules.
from domains import event_admin, notification_admin  # noqa: E402, F401


def _renew_now(model_admin: admin.ModelAdmin, request, domains) -> None:
    """Renews the Let's Encrypt certificate of each (domain id, name) now, and says which could not
    be renewed and why."""
    renewed, skipped = [], []
    for domain_id, name in domains:
        (renewed if renew_now(domain_id) else skipped).append(name)
    if renewed:
        model_admin.message_user(request, f"Renewing now: {', '.join(renewed)}", messages.SUCCESS)
    if skipped:
        model_admin.message_user(
            request,
            "Not renewed (no Let's Encrypt certificate yet, Let's Encrypt turned off, an order "
            f"already running, or paused by the CA): {', '.join(skipped)}",
            messages.WARNING,
        )


@admin.action(
    description="Renew now (their domains' Let's Encrypt certificates, whatever their renewal date)"
)
def renew_certificates_now(model_admin, request, queryset) -> None:
    _renew_now(
        model_admin,
        request,
        queryset.order_by("domain__name").values_list("domain_id", "domain__name").distinct(),
    )


# The certificate list's bulk "Renew now": the renewal is this layer's (certificates/admin.py
# imports nothing from domains).
CertificateAdmin.actions = [*CertificateAdmin.actions, renew_certificates_now]
