"""Operators' view of regions, apps and domains."""

from __future__ import annotations

import datetime

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import DateTimeField, DurationField, ExpressionWrapper, F, OuterRef, Subquery, Value
from django.db.models.functions import Least
from django.http import HttpRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from certificates.custom import MAX_UPLOAD_BYTES, UploadRejected
from certificates.models import (
    Certificate,
    CertificateSource,
    RegisteredDomain,
    Revocation,
    RevocationOutcome,
    expiring_window,
)
from certificates.serving import in_serving_order, served_certificate_of
from domains.custom_certificates import install_custom_certificate, remove_custom_certificate
from domains.models import App, Domain, DomainEvent, DomainStatus, Region
from domains.names import to_unicode
from domains.ownership import ownership_record
from domains.pauses import DomainPaused, unpause_domains
from domains.platform import ensure_platform_domain, platform_apps, platform_domains, remove_platform_domain
from domains.profiles import PROFILE_HELP, ProfileRefused, ProfileUnchecked, check_profile, effective_profile
from domains.quota_policy import quota_of
from domains.read_only_admin import ReadOnlyAdmin
from domains.revocations import RevokeAndReplaceRefused, revoke_and_replace
from domains.services import (
    DomainLimitReached,
    InvalidDomainName,
    check_room_for_a_domain,
    clean_domain_name,
    create_domain,
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


class DomainForm(forms.ModelForm):
    class Meta:
        model = Domain
        fields = ["app", "name", "letsencrypt_enabled", "acme_profile"]
        labels = {"acme_profile": "CA profile"}
        help_texts = {"acme_profile": PROFILE_HELP}

    def clean_name(self) -> str:
        try:
            return clean_domain_name(self.cleaned_data["name"])
        except InvalidDomainName as exc:
            raise ValidationError(str(exc), code=exc.rule) from None

    def clean_acme_profile(self) -> str:
        try:
            # Asked of the CA now; the answer is cached for create_domain / set_profile.
            return check_profile(self.cleaned_data.get("acme_profile") or "")
        except (ProfileRefused, ProfileUnchecked) as exc:
            raise ValidationError(str(exc)) from None

    def clean_app(self):
        app = self.cleaned_data["app"]
        if self.instance.pk is None and app is not None:
            try:
                # Said early, on the form; create_domain checks again under the app's lock.
                check_room_for_a_domain(app, lock=False)
            except DomainLimitReached as exc:
                raise ValidationError(str(exc)) from None
        return app


class CustomCertificateForm(forms.Form):
    """The upload: formats are told apart by their bytes, never by the file name."""

    certificate = forms.FileField(
        help_text="PEM bundle (leaf and intermediates, any order), DER, PKCS#7 (.p7b) or PKCS#12 (.pfx)."
    )
    private_key = forms.FileField(
        required=False, help_text="PEM or DER (PKCS#1, PKCS#8 or SEC1); not needed with a PKCS#12 file."
    )
    intermediates = forms.FileField(
        required=False, help_text="Intermediates, if the certificate file does not carry them (PEM or DER)."
    )
    passphrase = forms.CharField(
        required=False,
        strip=False,
        widget=forms.PasswordInput,
        help_text="For an encrypted key or a PKCS#12 file.",
    )

    def clean(self):
        data = super().clean()
        for field in ("certificate", "private_key", "intermediates"):
            upload = data.get(field)
            # Refused before anything is read into memory or parsed.
            if upload is not None and upload.size > MAX_UPLOAD_BYTES:
                self.add_error(
                    field, f"{upload.size:,} bytes; at most {MAX_UPLOAD_BYTES:,} bytes (64 KiB) are accepted"
                )
        return data


class ExpiringFilter(admin.SimpleListFilter):
    title = "served certificate"
    parameter_name = "served"

    def lookups(self, request, model_admin):
        days = settings.CERTIFICATE_EXPIRING_DAYS
        return [
            ("expiring", f"Expiring (under {days} days or a quarter of its lifetime left)"),
            ("none", "Nothing served"),
        ]

    def queryset(self, request, queryset):
        now = timezone.now()
        if self.value() == "expiring":
            # expiring_window in SQL: LEAST(N days, (not_after - not_before) / 4).
            quarter = ExpressionWrapper(
                (F("served_not_after") - F("served_not_before")) / 4, output_field=DurationField()
            )
            days = Value(datetime.timedelta(days=settings.CERTIFICATE_EXPIRING_DAYS), DurationField())
            soon = ExpressionWrapper(Value(now) + Least(days, quarter), output_field=DateTimeField())
            return queryset.filter(served_not_after__lte=soon)
        if self.value() == "none":
            return queryset.filter(served_not_after__isnull=True)
        return queryset


class PausedByCAFilter(admin.SimpleListFilter):
    title = "paused by the CA"
    parameter_name = "ca_paused"

    def lookups(self, request, model_admin):
        return [("yes", "Paused by the CA"), ("no", "Not paused")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.exclude(ca_unpause_url="")
        if self.value() == "no":
            return queryset.filter(ca_unpause_url="")
        return queryset


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
        "mark_unpaused_action",
        "remove_custom_certificate_action",
        "revoke_and_replace_action",
    ]
    list_display = [
        "name",
        "unicode_name",
        "app",
        "status",
        "served",
        "expiring",
        "letsencrypt_enabled",
        "profile",
        "consecutive_failures",
        "next_attempt_at",
        "last_checked_at",
        "last_error",
    ]
    list_filter = [
        "status",
        PausedByCAFilter,
        ExpiringFilter,
        "letsencrypt_enabled",
        "acme_profile",
        "app__region",
    ]
    search_fields = ["name", "app__name", "registered_domain"]
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
        "next_attempt_at",
        "last_checked_at",
        "last_error",
        "created",
        "updated",
    ]

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
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                stored = install_custom_certificate(
                    domain,
                    data["certificate"].read(),
                    key=data["private_key"].read() if data.get("private_key") else None,
                    chain=data["intermediates"].read() if data.get("intermediates") else None,
                    passphrase=data.get("passphrase") or None,
                )
            except UploadRejected as exc:
                field = {"cert": "certificate", "key": "private_key", "chain": "intermediates"}.get(
                    exc.field or "", exc.field
                )
                form.add_error(field if field in form.fields else None, str(exc))
            else:
                self.message_user(
                    request,
                    f"{domain.name}: custom certificate stored and served, "
                    f"until {stored.not_after:%Y-%m-%d}.",
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
            return
        created = create_domain(
            obj.app, obj.name, letsencrypt=obj.letsencrypt_enabled, profile=obj.acme_profile
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
