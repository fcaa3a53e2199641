"""What the API reads and writes. Output serializers describe the presenters' dicts (for the
schema); input serializers check shapes and sizes, and the services check everything else."""

from __future__ import annotations

import re

from rest_framework import serializers

from certificates.custom import MAX_UPLOAD_BYTES
from domains.models import APP_NAME_VALIDATOR, DomainStatus
from domains.profiles import PROFILE_HELP


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()


class RegionSerializer(serializers.Serializer):
    name = serializers.CharField()
    domain_suffix = serializers.CharField()
    cname_target = serializers.CharField()
    ingress_ipv4 = serializers.ListField(child=serializers.CharField())
    ingress_ipv6 = serializers.ListField(child=serializers.CharField())


class IssuerSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="What a domain is pinned to (its `issuer`).")
    primary = serializers.BooleanField(
        help_text="The first issuer, which orders go to unless CAA or a failure says otherwise."
    )
    caa = serializers.ListField(
        child=serializers.CharField(), help_text='The CAA issuer domain names that allow it (issue "...").'
    )
    state = serializers.ChoiceField(
        choices=["closed", "open", "half-open"],
        help_text="Its circuit breaker: closed (in use), open (failing on its side: new orders skip it for "
        "now), half-open (one order tries it again).",
    )


class AppSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=48, validators=[APP_NAME_VALIDATOR])
    region = serializers.CharField(max_length=32)
    owner = serializers.CharField(read_only=True)
    hostname = serializers.CharField(read_only=True)
    domain_count = serializers.IntegerField(read_only=True)
    created = serializers.DateTimeField(read_only=True)


class RenewalInfoSerializer(serializers.Serializer):
    window_start = serializers.DateTimeField(
        allow_null=True, help_text="The CA's suggested renewal window (ACME Renewal Information, RFC 9773)."
    )
    window_end = serializers.DateTimeField(allow_null=True)
    explanation_url = serializers.CharField(
        allow_blank=True, help_text="The CA's page explaining the window (an incident), if it gave one."
    )
    checked_at = serializers.DateTimeField(allow_null=True, help_text="When the CA last answered a window.")
    next_check = serializers.DateTimeField(allow_null=True, help_text="null: no longer checked.")
    error = serializers.CharField(allow_blank=True, help_text="Why the last check gave no window, if so.")


class CertificateSerializer(serializers.Serializer):
    source = serializers.ChoiceField(choices=["letsencrypt", "custom"])
    sans = serializers.ListField(child=serializers.CharField())
    issuer = serializers.CharField(help_text="The certificate's issuer, as its X.509 issuer name says.")
    issued_by = serializers.CharField(
        allow_blank=True,
        help_text="The certificate authority that issued it, by its name in the platform's issuers "
        "(empty for an uploaded one).",
    )
    not_before = serializers.DateTimeField()
    not_after = serializers.DateTimeField()
    fingerprint_sha256 = serializers.CharField()
    renew_at = serializers.DateTimeField(
        allow_null=True, help_text="When it is renewed (null: not renewed by Certwright, as a custom one)."
    )
    ari = RenewalInfoSerializer(allow_null=True, help_text="null for a custom certificate.")
    profile = serializers.CharField(
        allow_blank=True, help_text="The CA profile it was issued under (empty: the CA's default, or custom)."
    )


class RevokedCertificateSerializer(serializers.Serializer):
    serial = serializers.CharField(help_text="Hexadecimal.")
    fingerprint_sha256 = serializers.CharField()
    not_after = serializers.DateTimeField()
    revoked_at = serializers.DateTimeField()
    reason = serializers.CharField(help_text="The RFC 5280 reason, such as keyCompromise.")


class DnsSerializer(serializers.Serializer):
    ok = serializers.BooleanField(
        allow_null=True, help_text="null: not checked (Let's Encrypt off, or parked)."
    )
    message = serializers.CharField(help_text="The diagnosis in plain words.")
    records = serializers.ListField(
        child=serializers.CharField(), help_text="The records that point it here."
    )


class QuotaSerializer(serializers.Serializer):
    registered_domain = serializers.CharField()
    limit = serializers.IntegerField()
    period_seconds = serializers.IntegerField()
    tokens_left = serializers.IntegerField(allow_null=True, help_text="null: the quota store is unreachable.")
    next_token_at = serializers.DateTimeField(allow_null=True)


class OwnershipSerializer(serializers.Serializer):
    verified = serializers.BooleanField(help_text="Whether the domain was proven to be this app's.")
    verified_at = serializers.DateTimeField(allow_null=True)
    record = serializers.CharField(help_text="The TXT record that proves it (zone-file form).")
    help = serializers.CharField()


class DomainSerializer(serializers.Serializer):
    name = serializers.CharField()
    unicode_name = serializers.CharField()
    app = serializers.CharField()
    status = serializers.ChoiceField(choices=DomainStatus.choices)
    status_label = serializers.CharField()
    letsencrypt = serializers.BooleanField()
    profile = serializers.CharField(
        allow_blank=True, help_text="The CA profile chosen for this domain (empty: the platform's default)."
    )
    effective_profile = serializers.CharField(
        allow_blank=True,
        help_text="The profile its next certificate is ordered under (empty: the CA's default).",
    )
    issuer = serializers.CharField(
        allow_blank=True,
        help_text="The certificate authority its orders are pinned to (empty: the first its CAA allows, in "
        "the platform's order, moving on to the next when one fails on its side).",
    )
    custom_certificate = serializers.BooleanField(help_text="Whether a custom certificate is uploaded.")
    certificate = CertificateSerializer(allow_null=True, help_text="The certificate served now, if any.")
    revoked_certificates = RevokedCertificateSerializer(
        many=True, help_text="Its certificates revoked at the CA (still stored), newest first."
    )
    dns = DnsSerializer()
    ownership = OwnershipSerializer()
    next_attempt_at = serializers.DateTimeField(allow_null=True)
    last_error = serializers.CharField(allow_blank=True)
    quota = QuotaSerializer(allow_null=True, help_text="Let's Encrypt's limit of its registered domain.")
    created = serializers.DateTimeField()


# Control characters (C0 but tab and line ends, DEL, C1) and U+FFFD, what binary turns into when
# decoded as text: no PEM file has them, every DER or PKCS#12 file does.
_BINARY = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffd]")


class PemField(serializers.CharField):
    """PEM text, capped before anything parses it (the certificate checks say the rest); a binary
    file put into the JSON string is refused as such, with what to do instead."""

    def __init__(self, what: str, **kwargs) -> None:
        self.what = what
        kwargs.update(required=False, allow_blank=False, trim_whitespace=False, max_length=MAX_UPLOAD_BYTES)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if _BINARY.search(value):
            raise serializers.ValidationError(
                f"this is binary data (a DER or PKCS#12 file?), not PEM text: the API takes {self.what} "
                "as PEM text; ./certwright domains-ssl converts DER, PKCS#7 and PKCS#12 files to PEM "
                "for you",
                code="binary",
            )
        return value


class DomainCertificateInput(serializers.Serializer):
    tlscert = PemField(
        "the certificate",
        help_text="The certificate as PEM text: the leaf and its intermediates, in any order. Binary "
        "files (DER, PKCS#12) are refused: ./certwright domains-ssl converts them to PEM.",
    )
    tlskey = PemField(
        "the private key",
        help_text="Its private key as PEM text (PKCS#1, PKCS#8 or SEC1), maybe encrypted.",
    )
    tlskey_passphrase = serializers.CharField(
        required=False,
        trim_whitespace=False,
        max_length=1024,
        write_only=True,
        help_text="For an encrypted key.",
    )

    def validate(self, data):
        if ("tlskey" in data or "tlskey_passphrase" in data) and "tlscert" not in data:
            raise serializers.ValidationError({"tlscert": ["a key or passphrase was given without tlscert"]})
        if "tlscert" in data and "tlskey" not in data:
            raise serializers.ValidationError({"tlskey": ["tlscert needs its private key (tlskey)"]})
        return data


ISSUER_HELP = (
    "Pins the domain's orders to this certificate authority (a name the platform's issuers list, as "
    "GET /api/v1/issuers shows); empty: any, in the platform's order."
)


class DomainCreateSerializer(DomainCertificateInput):
    name = serializers.CharField(
        max_length=300, help_text="The domain, such as www.example.com (Unicode accepted)."
    )
    letsencrypt = serializers.BooleanField(default=True)
    profile = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=64, help_text=PROFILE_HELP
    )
    issuer = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=32, help_text=ISSUER_HELP
    )


class DomainUpdateSerializer(DomainCertificateInput):
    letsencrypt = serializers.BooleanField(required=False)
    profile = serializers.CharField(required=False, allow_blank=True, max_length=64, help_text=PROFILE_HELP)
    issuer = serializers.CharField(required=False, allow_blank=True, max_length=32, help_text=ISSUER_HELP)
    app = serializers.CharField(required=False, max_length=48, help_text="Staff only: move it to this app.")


class EventSerializer(serializers.Serializer):
    created = serializers.DateTimeField()
    from_status = serializers.CharField(allow_blank=True)
    to_status = serializers.CharField()
    reason = serializers.CharField()


class MessageSerializer(serializers.Serializer):
    detail = serializers.CharField()
