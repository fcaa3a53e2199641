"""Webhook endpoints, their deliveries and every attempt (issue 16); imported by domains.models.

An endpoint belongs to an app (its owner's, managed through the API and the CLI) or to the platform
(no app: the operators', managed in the admin) and receives the outbox's events (domains.Event) of
the types it asks for (none named: all). Each event an endpoint should get becomes one delivery,
sent at least once and in order per domain (workers/webhook_delivery.py); each try is an attempt.
"""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.utils import timezone

from certificates.sealing import SealedSecretField

# The longest endpoint URL accepted.
MAX_URL_LENGTH = 2000
# How much of a receiver's answer an attempt keeps.
EXCERPT_BYTES = 1024


class WebhookEndpoint(models.Model):
    """Where an app's (or the platform's) events are POSTed, signed as Standard Webhooks says."""

    app = models.ForeignKey(
        "domains.App", null=True, blank=True, on_delete=models.CASCADE, related_name="webhook_endpoints"
    )
    url = models.CharField(max_length=MAX_URL_LENGTH)
    description = models.CharField(max_length=200, blank=True, default="")
    # The event types sent; empty: every type.
    event_types = ArrayField(models.CharField(max_length=40), default=list, blank=True)
    # The signing secret (whsec_...), sealed like private keys; shown once, at creation or rotation.
    secret = SealedSecretField()
    # After a rotation, the old secret also signs until `previous_secret_until` (24 hours).
    previous_secret = SealedSecretField(null=True, blank=True)
    previous_secret_until = models.DateTimeField(null=True, blank=True)
    enabled = models.BooleanField(default=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.TextField(blank=True, default="")
    # The first failed attempt since the last answered one: five days of it disable the endpoint.
    failing_since = models.DateTimeField(null=True, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(default=timezone.now, editable=False)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        verbose_name = "webhook endpoint"

    def __str__(self) -> str:
        return self.url

    def wants(self, event_type: str) -> bool:
        return not self.event_types or event_type in self.event_types


class DeliveryState(models.TextChoices):
    PENDING = "pending", "Pending"
    DELIVERED = "delivered", "Delivered"
    # Retried for WEBHOOK_RETRY_SECONDS without a 2xx, or its endpoint was disabled: given up.
    FAILED = "failed", "Failed"


class WebhookDelivery(models.Model):
    """One event for one endpoint. `seq` and `domain_id` are the event's: a pending delivery is sent
    only when no pending delivery of the same endpoint and domain has a lower seq."""

    # No index of its own: the unique (endpoint, event) and the list index both begin with it, and
    # every index costs each claim and each write a row (neither update can be HOT).
    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries", db_index=False
    )
    event = models.ForeignKey("domains.Event", on_delete=models.CASCADE, related_name="deliveries")
    seq = models.BigIntegerField()
    domain_id = models.BigIntegerField()
    state = models.CharField(max_length=12, choices=DeliveryState.choices, default=DeliveryState.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    # When a pending delivery is due. Null once it is no longer pending.
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # While a run holds the delivery, the end of its hold (the claim's token). In no index and in no
    # index's condition, so that the claim's UPDATE is a HOT one on the table's free space
    # (fillfactor 50), writing no index entry.
    lease_until = models.DateTimeField(null=True, blank=True)
    # A failure after this gives the delivery up (WEBHOOK_RETRY_SECONDS from its creation, or from
    # an operator's or customer's redelivery).
    give_up_at = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(default=timezone.now, editable=False)
    delivered_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-seq"]
        verbose_name_plural = "webhook deliveries"
        constraints = [
            models.UniqueConstraint(fields=["endpoint", "event"], name="webhook_delivery_once"),
        ]
        indexes = [
            # The sender's claim: WHERE state = 'pending' AND next_attempt_at <= now.
            models.Index(
                fields=["next_attempt_at"],
                name="webhook_delivery_due_idx",
                condition=models.Q(state="pending"),
            ),
            # Order per domain: no pending delivery of the same endpoint and domain with a lower seq.
            models.Index(
                fields=["endpoint", "domain_id", "seq"],
                name="webhook_delivery_head_idx",
                condition=models.Q(state="pending"),
            ),
            # An endpoint's deliveries, newest first (the API, the CLI, the admin).
            models.Index(fields=["endpoint", "-seq"], name="webhook_delivery_list_idx"),
        ]

    def __str__(self) -> str:
        return f"delivery {self.pk} of event {self.event_id}"


class WebhookAttempt(models.Model):
    """One POST of a delivery: what the receiver answered (or why nothing), and how fast."""

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log")
    at = models.DateTimeField(default=timezone.now)
    # None: no HTTP answer (refused address, connection, timeout).
    status_code = models.PositiveIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(default=0)
    # The first EXCERPT_BYTES of the answer, decoded leniently.
    response_excerpt = models.TextField(blank=True, default="")
    error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["delivery", "-at"], name="webhook_attempt_delivery_idx")]

    def __str__(self) -> str:
        return f"attempt {self.pk} of delivery {self.delivery_id}"
