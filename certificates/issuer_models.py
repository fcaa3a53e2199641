"""The issuers' rows: each configured ACME issuer (config/issuers.py) as the database knows it, for
the admin to show and the workers to read its sealed External Account Binding key; written from the
settings by certificates/issuers.py, never edited by hand."""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.utils import timezone

from certificates.sealing import SealedSecretField


class Issuer(models.Model):
    """One ACME issuer, in the settings' order (`position`, 0 is the primary)."""

    name = models.CharField(max_length=32, unique=True)
    position = models.PositiveSmallIntegerField(help_text="Its place in ACME_ISSUERS; 0 is the primary.")
    directory_url = models.URLField(max_length=500)
    caa_identities = ArrayField(models.CharField(max_length=253), default=list)
    ca_bundle = models.CharField(max_length=500, blank=True, default="")
    roots = models.CharField(max_length=500, blank=True, default="")
    eab_key_id = models.CharField(max_length=200, blank=True, default="")
    eab_hmac_key = SealedSecretField(null=True, blank=True, editable=False)
    # False once the settings no longer name it: kept for the accounts and certificates it issued.
    configured = models.BooleanField(default=True)
    # The last problem an operator must fix (its account could not be registered...), in plain words.
    last_error = models.TextField(blank=True, default="")
    last_error_at = models.DateTimeField(null=True, blank=True)
    # The circuit breaker (certificates/issuers.py): CA-side failures in a row; while
    # `breaker_open_until` is ahead new orders skip the issuer, after it one probe order
    # (`breaker_probe_until`: its lease) tries it again.
    breaker_failures = models.PositiveIntegerField(default=0)
    breaker_open_until = models.DateTimeField(null=True, blank=True)
    breaker_probe_until = models.DateTimeField(null=True, blank=True)
    breaker_reason = models.TextField(blank=True, default="")
    created = models.DateTimeField(default=timezone.now, editable=False)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-configured", "position", "name"]

    def __str__(self) -> str:
        return self.name
