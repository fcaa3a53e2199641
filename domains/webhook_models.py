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
    """One event for one endpoint. `seq` and `domain_id` are the event's. The pending deliveries of
    one endpoint and domain are sent one at a time, lowest seq first: their WebhookQueue says when
    the next may go, which run holds it and how far it has come.

    No column a delivery's outcome changes is in an index, so that writing it is a HOT update on
    the page's free space (fillfactor 70), adding no index entry."""

    # No index of its own: the unique (endpoint, seq) and the queue index both begin with it.
    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries", db_index=False
    )
    event = models.ForeignKey("domains.Event", on_delete=models.CASCADE, related_name="deliveries")
    seq = models.BigIntegerField()
    domain_id = models.BigIntegerField()
    state = models.CharField(max_length=12, choices=DeliveryState.choices, default=DeliveryState.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    # When a pending delivery may be tried (its queue's time governs: the delivery goes when it is
    # the first of its queue and the queue is due). Null once it is no longer pending.
    next_attempt_at = models.DateTimeField(null=True, blank=True)
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
            # An event once per endpoint (an event has one seq); also an endpoint's deliveries newest
            # first, for the API, the CLI and the admin.
            models.UniqueConstraint(fields=["endpoint", "seq"], name="webhook_delivery_once"),
        ]
        indexes = [
            # A queue's deliveries in order: its next one is the first pending after its cursor.
            models.Index(fields=["endpoint", "domain_id", "seq"], name="webhook_delivery_queue_idx"),
        ]

    def __str__(self) -> str:
        return f"delivery {self.pk} of event {self.event_id}"


class WebhookQueue(models.Model):
    """The pending deliveries of one endpoint and domain: there is a row while there is one. A run
    claims due queues, not deliveries, and sends each one's first delivery (lowest seq); so a claim
    reads the queues it takes (and those other runs hold), never the deliveries waiting in them,
    and a queue stalled behind a failing delivery costs nothing until its retry is due.

    Rows are added by the fan-out and by a redelivery, and removed by the write that ends a queue's
    last delivery, each under the queue lock (domains/webhooks.lock_queue), so that none misses a
    delivery another has just added."""

    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="queues", db_index=False
    )
    domain_id = models.BigIntegerField()
    # The queue's cursor: every delivery of it up to this seq has ended (delivered or given up), so
    # its next delivery is the first pending one after it. Moved back by a redelivery.
    after_seq = models.BigIntegerField()
    # When the queue's first delivery may be tried: at once, or after its last failure's backoff.
    next_attempt_at = models.DateTimeField()
    # While a run holds the queue, the end of its hold (the claim's token: only a run whose token is
    # still on the queue writes what came of its delivery). In no index, so that the claim's and the
    # write's UPDATEs are HOT ones on the table's free space (fillfactor 50), writing no index entry.
    lease_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["endpoint", "domain_id"], name="webhook_queue_once"),
        ]
        indexes = [models.Index(fields=["next_attempt_at"], name="webhook_queue_due_idx")]

    def __str__(self) -> str:
        return f"queue of endpoint {self.endpoint_id}, domain {self.domain_id}"


class WebhookAttempt(models.Model):
    """One POST of a delivery: what the receiver answered (or why nothing), and how fast."""

    # No index of its own: the attempt index begins with it.
    delivery = models.ForeignKey(
        WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log", db_index=False
    )
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
