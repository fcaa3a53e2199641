"""ACME accounts and stored certificates."""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.utils import timezone

from certificates.sealing import SealedSecretField


class AcmeAccount(models.Model):
    """The platform's account at one ACME directory; registered once, its key sealed."""

    directory_url = models.URLField(max_length=500)
    key = SealedSecretField(help_text="The account's private key (JWK), sealed.")
    account_url = models.URLField(max_length=500, blank=True, default="")
    contact = models.EmailField(blank=True, default="")
    created = models.DateTimeField(default=timezone.now, editable=False)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            # One account per directory: every worker must use the same one.
            models.UniqueConstraint(fields=["directory_url"], name="acme_account_directory_unique"),
        ]

    def __str__(self) -> str:
        return self.account_url or f"(unregistered) {self.directory_url}"


class CertificateSource(models.TextChoices):
    LETSENCRYPT = "letsencrypt", "Let's Encrypt"
    CUSTOM = "custom", "Custom (uploaded)"


class Certificate(models.Model):
    """A certificate chain and its sealed private key, for one domain."""

    domain = models.ForeignKey("domains.Domain", on_delete=models.CASCADE, related_name="certificates")
    source = models.CharField(max_length=20, choices=CertificateSource.choices)
    fullchain_pem = models.TextField(help_text="Leaf first, then the intermediates.")
    private_key = SealedSecretField()
    not_before = models.DateTimeField()
    not_after = models.DateTimeField()
    sans = ArrayField(models.CharField(max_length=253), default=list)
    issuer = models.CharField(max_length=500)
    serial = models.CharField(max_length=64, help_text="Hexadecimal.")
    fingerprint_sha256 = models.CharField(max_length=64, help_text="Hexadecimal SHA-256 of the leaf's DER.")
    created = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["-not_after"]
        constraints = [
            models.UniqueConstraint(
                fields=["domain", "fingerprint_sha256"], name="certificate_unique_per_domain"
            ),
            models.CheckConstraint(
                condition=models.Q(not_before__lt=models.F("not_after")), name="certificate_validity_ordered"
            ),
            models.CheckConstraint(
                condition=models.Q(source__in=CertificateSource.values), name="certificate_source_valid"
            ),
        ]
        indexes = [
            # The served certificate: WHERE domain_id = ? AND source = ? AND not_after > now
            # ORDER BY not_after DESC.
            models.Index(fields=["domain", "source", "-not_after"], name="certificate_served_idx"),
            # Lookups by fingerprint (admin search, routers asking whether they hold the latest).
            models.Index(fields=["fingerprint_sha256"], name="certificate_fingerprint_idx"),
        ]

    def __str__(self) -> str:
        return (
            f"{self.get_source_display()} certificate for {self.domain_id}, until {self.not_after:%Y-%m-%d}"
        )

    def is_valid_at(self, now=None) -> bool:
        now = now or timezone.now()
        return self.not_before <= now < self.not_after
