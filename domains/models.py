"""Regions, apps and their custom domains."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.core.validators import RegexValidator
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone

from domains.names import registered_domain
from domains.ownership import ownership_token

APP_NAME_VALIDATOR = RegexValidator(
    r"^[a-z0-9](?:[a-z0-9-]{0,46}[a-z0-9])?$",
    "An app name is 1 to 48 lowercase letters, digits and hyphens, not starting or ending with a hyphen.",
)


class Region(models.Model):
    """A hosting region: its apps answer at `<app>.<domain_suffix>` behind the same ingress."""

    name = models.SlugField(max_length=32, help_text="Short name, such as osc-fr1.")
    domain_suffix = models.CharField(
        max_length=200, help_text="Apps answer at <app>.<suffix>, such as osc-fr1.example-paas.io."
    )
    ingress_ipv4 = ArrayField(
        models.GenericIPAddressField(protocol="IPv4"),
        default=list,
        blank=True,
        help_text="The ingress' IPv4 addresses: an apex domain's A records must all be among them.",
    )
    ingress_ipv6 = ArrayField(
        models.GenericIPAddressField(protocol="IPv6"),
        default=list,
        blank=True,
        help_text="The ingress' IPv6 addresses: an apex domain's AAAA records must all be among them.",
    )
    cname_target = models.CharField(
        max_length=253, help_text="The name customers may CNAME to, besides the app's own hostname."
    )
    created = models.DateTimeField(default=timezone.now, editable=False)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["name"], name="region_name_unique"),
            models.UniqueConstraint(fields=["domain_suffix"], name="region_domain_suffix_unique"),
        ]

    def __str__(self) -> str:
        return self.name


class App(models.Model):
    """A customer's app; it owns custom domains."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="apps")
    region = models.ForeignKey(Region, on_delete=models.PROTECT, related_name="apps")
    name = models.CharField(max_length=48, validators=[APP_NAME_VALIDATOR])
    created = models.DateTimeField(default=timezone.now, editable=False)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            # The default hostname <app>.<suffix> must be unique, so the name is unique per region.
            models.UniqueConstraint(fields=["region", "name"], name="app_name_unique_per_region"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def default_hostname(self) -> str:
        return f"{self.name}.{self.region.domain_suffix}"


class DomainStatus(models.TextChoices):
    """The status of a domain's Let's Encrypt certificate (the seed's names, plus failing and disabled)."""

    PENDING_DNS = "pending_dns", "Pending DNS"
    CREATING = "creating", "Creating"
    IN_USE = "in_use", "In use"
    NOT_USED = "not_used", "Not used"
    ACTION_REQUIRED = "action_required", "Action required"
    FAILING = "failing", "Failing"
    DISABLED = "disabled", "Disabled"


# Statuses whose domains the periodic check picks up when their next_attempt_at has come. A
# `creating` domain has a next_attempt_at only while it waits for a quota token (its order not
# placed yet); with an order in flight it has none.
SWEPT_STATUSES = (
    DomainStatus.PENDING_DNS,
    DomainStatus.FAILING,
    DomainStatus.ACTION_REQUIRED,
    DomainStatus.CREATING,
)


class WaitingOn(models.TextChoices):
    """What a domain not served yet (or failing) waits on: the `reason` of
    certwright_domains_waiting, and the overview's words. "" when nothing."""

    DNS = "dns", "DNS: the name does not point at the platform"
    RESOLVER = "resolver", "DNS lookups failing (retried in a minute)"
    OWNERSHIP = "ownership", "ownership: the TXT record that proves it"
    CAA = "caa", "CAA: a record that allows no issuer of the platform"
    DNS01 = "dns01", "the DNS-01 delegation of a wildcard"
    QUOTA = "quota", "a quota token (Let's Encrypt's limits)"
    ISSUER = "issuer", "a certificate authority available"
    CA = "ca", "the certificate authority (it failed or refused the order)"
    PAUSED = "paused", "the CA's pause of the name (an operator's unpause)"


class Domain(models.Model):
    """A custom domain attached to an app, and the state of its Let's Encrypt certificate."""

    app = models.ForeignKey(App, on_delete=models.PROTECT, related_name="domains")
    name = models.CharField(max_length=253, help_text="Normalized: lowercase A-labels, no trailing dot.")
    registered_domain = models.CharField(
        max_length=253,
        blank=True,
        default="",
        editable=False,
        help_text="The name's registered domain (Public Suffix List, private section included): "
        "Let's Encrypt counts certificates per registered domain.",
    )
    letsencrypt_enabled = models.BooleanField(default=True)
    # The CA profile its certificates are ordered with (empty: the platform's ACME_PROFILE).
    acme_profile = models.CharField(max_length=64, blank=True, default="", db_default="")
    # The CA paused this name for the platform's account after too many failed validations: nothing
    # is sent for it until an operator has visited this URL and marked the domain unpaused.
    ca_unpause_url = models.URLField(max_length=2000, blank=True, default="", db_default="")
    ca_paused_at = models.DateTimeField(null=True, blank=True)
    # The issuer (ACME_ISSUERS' name) every order of this domain goes to; empty: the first one its
    # CAA allows, in order.
    issuer = models.CharField(max_length=32, blank=True, default="", db_default="")
    # Issuers that failed this domain's last orders on their side (down, erroring, a long 429): its
    # next orders go to the next issuer until one succeeds or `avoid_issuers_until` passes.
    avoid_issuers = ArrayField(models.CharField(max_length=32), blank=True, default=list, db_default=[])
    avoid_issuers_until = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=20, choices=DomainStatus.choices, default=DomainStatus.PENDING_DNS)
    consecutive_failures = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_checked_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    # What it waits on (WaitingOn), written with last_error.
    waiting_on = models.CharField(
        max_length=16, choices=WaitingOn.choices, blank=True, default="", db_default="", editable=False
    )
    # Set by whoever claimed the domain's next check (the sweep, or creation); the check task
    # carries the same token, so a redelivered or duplicate task finds it gone and does nothing.
    claim_token = models.UUIDField(null=True, blank=True, editable=False)
    # The quota reservation a domain holds while it waits for its token; it moves to the order.
    quota_reservation = models.UUIDField(null=True, blank=True, editable=False)
    # Takeover protection (domains/ownership.py): the TXT value that proves the domain is this app's,
    # and when that was proven (by the record, or by a CNAME to the app's own hostname).
    ownership_token = models.CharField(max_length=64, blank=True, default="", editable=False)
    ownership_verified_at = models.DateTimeField(null=True, blank=True, editable=False)
    created = models.DateTimeField(default=timezone.now, editable=False)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["name"], name="domain_name_unique"),
            models.CheckConstraint(condition=models.Q(name=Lower("name")), name="domain_name_lowercase"),
            models.CheckConstraint(
                condition=models.Q(status__in=DomainStatus.values), name="domain_status_valid"
            ),
        ]
        indexes = [
            # The periodic check: WHERE status IN (swept) AND next_attempt_at <= now ORDER BY next_attempt_at.
            models.Index(
                fields=["next_attempt_at"],
                name="domain_due_idx",
                condition=models.Q(next_attempt_at__isnull=False, status__in=SWEPT_STATUSES),
            ),
            # The quota view and the rebuild of a lost bucket: WHERE registered_domain = ?.
            models.Index(fields=["registered_domain"], name="domain_registered_domain_idx"),
            # The overview and /metrics: counts per status and what it waits on (an index-only
            # scan), and the domains of one status (the overview's attention lists, the admin's
            # status filter). Changing neither, a write stays a HOT update.
            models.Index(fields=["status", "waiting_on"], name="domain_status_idx"),
            # The admin's profile filter: the profiles chosen (few domains choose one).
            models.Index(
                fields=["acme_profile"], name="domain_profile_idx", condition=~models.Q(acme_profile="")
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs) -> None:
        if self.name and not self.registered_domain:
            self.registered_domain = registered_domain(self.name) or ""
        if self.name and self.app_id and not self.ownership_token:
            self.ownership_token = ownership_token(self.app_id, self.name)
        super().save(*args, **kwargs)


class DomainEvent(models.Model):
    """One status change of a domain: when, from what, to what, and why, in plain words."""

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="events")
    created = models.DateTimeField(default=timezone.now, editable=False)
    from_status = models.CharField(max_length=20, choices=DomainStatus.choices, blank=True)
    to_status = models.CharField(max_length=20, choices=DomainStatus.choices)
    reason = models.TextField()

    class Meta:
        ordering = ["-created", "-pk"]
        indexes = [
            # A domain's history, newest first: WHERE domain_id = ? ORDER BY created DESC.
            models.Index(fields=["domain", "-created"], name="domain_event_history_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.from_status or '(new)'} -> {self.to_status}: {self.reason}"


class EventType(models.TextChoices):
    """What an outbox event tells (issue 16): a status someone must act on, an issuance, a renewal, an
    expiry coming or come."""

    DOMAIN_ACTION_REQUIRED = "domain.action_required", "Domain: action required"
    DOMAIN_FAILING = "domain.failing", "Domain: failing"
    DOMAIN_IN_USE = "domain.in_use", "Domain: in use"
    DOMAIN_DELETED = "domain.deleted", "Domain: deleted"
    CERTIFICATE_ISSUED = "certificate.issued", "Certificate: issued"
    CERTIFICATE_RENEWED = "certificate.renewed", "Certificate: renewed"
    CERTIFICATE_RENEWAL_FAILED = "certificate.renewal_failed", "Certificate: renewal failed"
    CERTIFICATE_EXPIRING = "certificate.expiring", "Certificate: expiring"
    CERTIFICATE_EXPIRED = "certificate.expired", "Certificate: expired"
    CUSTOM_CERTIFICATE_EXPIRING = "custom_certificate.expiring", "Custom certificate: expiring"


# The sequence behind Event.seq (migration 0006 creates it; the table owns it).
EVENT_SEQUENCE = "domains_event_seq"


class NextVal(models.Func):
    """nextval() of a named sequence, as a column's database default."""

    function = "nextval"
    arity = 1
    output_field = models.BigIntegerField()


class Event(models.Model):
    """One event for the platform and its customers (issue 16), written in the transaction of the
    change it tells of: the outbox that webhooks and email are delivered from.

    Unlike DomainEvent (the domain's history, deleted with it), an event keeps its app and domain as
    plain values and outlives the domain. `seq` orders a domain's events as their transactions
    committed: every writer holds the domain's row lock from before its insert until its commit
    (domains/events.py), so a later seq of the same domain never commits first."""

    # The webhook-id (Standard Webhooks): stable across redeliveries.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    seq = models.BigIntegerField(db_default=NextVal(models.Value(EVENT_SEQUENCE)), editable=False)
    created = models.DateTimeField(default=timezone.now, editable=False)
    type = models.CharField(max_length=40, choices=EventType.choices)
    app_id = models.BigIntegerField()
    app_name = models.CharField(max_length=48)
    domain_id = models.BigIntegerField()
    domain_name = models.CharField(max_length=253)
    from_status = models.CharField(max_length=20, choices=DomainStatus.choices, blank=True, default="")
    to_status = models.CharField(max_length=20, choices=DomainStatus.choices, blank=True, default="")
    # In the same words as the domain's last_error when the event is a problem to act on.
    reason = models.TextField(blank=True, default="")
    # The DNS records to add, in zone-file form (domain.action_required); empty otherwise.
    records = models.JSONField(default=list, blank=True)
    # Facts of the type: the certificate (fingerprint, not_after...), the threshold in days, whether
    # Let's Encrypt takes over from an expiring custom certificate.
    data = models.JSONField(default=dict, blank=True)
    # Events that a periodic task finds (expiry thresholds) carry a key, so that two runs, or two
    # beats at once, write each one once: the insert ignores a key already there. Empty: none.
    dedupe_key = models.CharField(max_length=200, blank=True, default="", db_default="", editable=False)

    class Meta:
        ordering = ["-seq"]
        constraints = [
            # Delivery's cursor: WHERE seq > ? ORDER BY seq LIMIT n (and the retention's walk).
            models.UniqueConstraint(fields=["seq"], name="event_seq_unique"),
            # INSERT ... ON CONFLICT DO NOTHING of the expiry events (workers/expiry_events.py).
            models.UniqueConstraint(
                fields=["dedupe_key"],
                condition=~models.Q(dedupe_key=""),
                name="event_dedupe_key_unique",
            ),
        ]
        indexes = [
            # A domain's events in order (delivery per domain, the admin): WHERE domain_id = ? ORDER BY seq.
            models.Index(fields=["domain_id", "seq"], name="event_domain_seq_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.domain_name}"


class EventBacklog(models.Model):
    """An event not fanned out yet (workers/webhook_delivery.py turns each into its webhook
    deliveries and waiting mails once, and deletes its row here in the same statement): the
    fan-out's queue, lowest seq first.

    A row is written by a trigger on domains_event (migration 0013), in the transaction of the
    event's insert, whatever statement inserts it. A narrow table of its own rather than a flag on
    the event: marking a wide event row dispatched rewrote it with every one of its index entries
    (the flag sat in a partial index's predicate, so no such UPDATE was HOT); deleting a row here
    writes no index entry."""

    seq = models.BigIntegerField(primary_key=True)
    # The event's (no foreign key: the row lives from the event's insert to its fan-out, and the
    # retention, which deletes old events, deletes their rows here with them).
    event_id = models.UUIDField()
    app_id = models.BigIntegerField()
    domain_id = models.BigIntegerField()
    type = models.CharField(max_length=40)

    class Meta:
        verbose_name_plural = "event backlog"

    def __str__(self) -> str:
        return f"event {self.event_id} (seq {self.seq}) to fan out"


# The webhook models live in their own module; importing them here registers them with this app.
from domains.notification_models import EmailNotification, NotificationSettings  # noqa: E402, F401
from domains.webhook_models import (  # noqa: E402, F401
    DeliveryState,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookQueue,
)
