"""The Domain admin's forms and list filters: adding or changing a domain (its name, profile and
certificate authority checked as the API checks them), uploading a custom certificate, and the
expiring and paused-by-the-CA filters."""

from __future__ import annotations

import datetime

from django import forms
from django.conf import settings
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db.models import DateTimeField, DurationField, ExpressionWrapper, F, Value
from django.db.models.functions import Least
from django.utils import timezone

from certificates.custom import MAX_UPLOAD_BYTES, UploadRejected
from certificates.issuers import by_name as issuer_named
from certificates.issuers import configured as configured_issuers
from domains.custom_certificates import install_custom_certificate
from domains.models import Domain
from domains.profiles import PROFILE_HELP, ProfileRefused, ProfileUnchecked, check_profile
from domains.services import (
    DomainLimitReached,
    InvalidDomainName,
    check_room_for_a_domain,
    clean_domain_name,
)


class DomainForm(forms.ModelForm):
    class Meta:
        model = Domain
        fields = ["app", "name", "letsencrypt_enabled", "acme_profile", "issuer"]
        labels = {"acme_profile": "CA profile", "issuer": "Certificate authority"}
        help_texts = {
            "acme_profile": PROFILE_HELP,
            "issuer": "Pins its orders to this issuer (a name of ACME_ISSUERS, see Issuers); empty: the "
            "first its CAA allows, in order, moving on when one fails on its side.",
        }

    def clean_issuer(self) -> str:
        name = (self.cleaned_data.get("issuer") or "").strip()
        if name and issuer_named(name) is None:
            known = ", ".join(issuer.name for issuer in configured_issuers())
            raise ValidationError(f"{name!r} is not one of the platform's certificate authorities ({known})")
        return name

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
    """The upload, for the admin and the customers' Domains tab: formats are told apart by their
    bytes, never by the file name. The request's whole body was capped before it was read
    (PAGE_MAX_BODY_BYTES, api.middleware); each file is capped here before it is parsed."""

    # How install_custom_certificate names the part it refused, and the field that carried it.
    FIELD_OF_PART = {"cert": "certificate", "key": "private_key", "chain": "intermediates"}

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

    def install(self, domain: Domain):
        """The valid form's files installed as the domain's custom certificate (served at once),
        or None with the refusal put on the form, on the field it names."""
        data = self.cleaned_data
        try:
            return install_custom_certificate(
                domain,
                data["certificate"].read(),
                key=data["private_key"].read() if data.get("private_key") else None,
                chain=data["intermediates"].read() if data.get("intermediates") else None,
                passphrase=data.get("passphrase") or None,
            )
        except UploadRejected as exc:
            field = self.FIELD_OF_PART.get(exc.field or "", exc.field)
            self.add_error(field if field in self.fields else None, str(exc))
            return None

    def problems(self) -> str:
        """The form's errors on one line, each after its field's label."""
        return "; ".join(
            " ".join(errors) if field == "__all__" else f"{self[field].label}: {' '.join(errors)}"
            for field, errors in self.errors.items()
        )


class ProfileFilter(admin.SimpleListFilter):
    """The ACME profile asked for, the platform's default named in words (a bare field filter shows
    the empty value as a link without text)."""

    title = "ACME profile"
    parameter_name = "acme_profile"

    def lookups(self, request, model_admin):
        chosen = (
            model_admin.get_queryset(request)
            .exclude(acme_profile="")
            .order_by("acme_profile")
            .values_list("acme_profile", flat=True)
            .distinct()[:50]
        )
        return [("-", "The platform's default"), *((name, name) for name in chosen)]

    def queryset(self, request, queryset):
        if self.value() == "-":
            return queryset.filter(acme_profile="")
        if self.value():
            return queryset.filter(acme_profile=self.value())
        return queryset


class ExpiringFilter(admin.SimpleListFilter):
    title = "served certificate"
    parameter_name = "served"

    def lookups(self, request, model_admin):
        days = settings.CERTIFICATE_EXPIRING_DAYS
        return [
            ("expiring", f"Expiring (under {days} days or a quarter of its lifetime left)"),
            ("ending_7d", "Ending within 7 days"),
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
        if self.value() == "ending_7d":
            return queryset.filter(served_not_after__lte=now + datetime.timedelta(days=7))
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
