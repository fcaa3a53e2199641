"""API tokens (shown once when created, stored only as a hash, revocable) and the customers who
hold them."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import User
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.utils import timezone


class ApiToken(models.Model):
    """One bearer token of a user. The token itself is never stored: its SHA-256 is (a token has
    256 bits of randomness, so no slow hash is needed), with its first characters to find it."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, help_text="What it is for, such as 'laptop CLI' or 'CI deploys'.")
    prefix = models.CharField(max_length=16, editable=False, help_text="The token's first characters.")
    digest = models.CharField(max_length=64, editable=False)
    created = models.DateTimeField(default=timezone.now, editable=False)
    last_used = models.DateTimeField(null=True, blank=True, editable=False)
    revoked = models.DateTimeField(null=True, blank=True, editable=False)
    # A router token's scope: the ids of the regions whose certificates (and keys) it may fetch;
    # empty, every region. Customers' tokens do not use it.
    regions = ArrayField(models.BigIntegerField(), default=list, blank=True, editable=False)

    class Meta:
        ordering = ["-created"]
        constraints = [
            models.UniqueConstraint(fields=["digest"], name="api_token_digest_unique"),
        ]
        indexes = [
            # Authentication: WHERE prefix = ? (then the digest is compared in constant time).
            models.Index(fields=["prefix"], name="api_token_prefix_idx"),
        ]

    def __str__(self) -> str:
        state = "revoked" if self.revoked else "active"
        return f"{self.name} ({self.prefix}..., {state})"

    @property
    def is_active(self) -> bool:
        return self.revoked is None


class Customer(User):
    """A user who owns apps and reaches the API with tokens, not staff: the admin's Customers page.
    A proxy, so a customer is an ordinary user row; api/customers.py says which users are customers."""

    class Meta:
        proxy = True
