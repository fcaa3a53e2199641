"""ACME accounts and stored certificates."""

from __future__ import annotations

import datetime

from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.utils import timezone

from certificates.issuer_models import Issuer  # noqa: F401  (a model of this app)
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

    # No index of its own: certificate_served_idx and certificate_unique_per_domain start with it,
    # and every index here costs the renewal claim a write per claimed row.
    domain = models.ForeignKey(
        "domains.Domain", on_delete=models.CASCADE, related_name="certificates", db_index=False
    )
    source = models.CharField(max_length=20, choices=CertificateSource.choices)
    fullchain_pem = models.TextField(help_text="Leaf first, then the intermediates.")
    private_key = SealedSecretField()
    not_before = models.DateTimeField()
    not_after = models.DateTimeField()
    sans = ArrayField(models.CharField(max_length=253), default=list)
    issuer = models.CharField(max_length=500)
    serial = models.CharField(max_length=64, help_text="Hexadecimal.")
    fingerprint_sha256 = models.CharField(max_length=64, help_text="Hexadecimal SHA-256 of the leaf's DER.")
    # Let's Encrypt certificates only: when the renewal sweep next takes it (renewal_due: two thirds
    # of its lifetime, half under 10 days, or earlier when ARI says so; then the backoff after a
    # failed renewal, or a lease while a renewal runs). Null for custom certificates and for
    # certificates a newer one replaced.
    renew_at = models.DateTimeField(null=True, blank=True)
    renewal_claim = models.UUIDField(null=True, blank=True, editable=False)
    renewal_failures = models.PositiveIntegerField(default=0)
    renewal_error = models.TextField(blank=True, default="")
    # The quota reservation a renewal holds while it waits for its token (domains/quota.py).
    renewal_reservation = models.UUIDField(null=True, blank=True, editable=False)
    # Let's Encrypt certificates only: the account that ordered it (its renewal's `replaces` and
    # its revocation go through that account), and the CA's profile it was issued under.
    # No index: nothing looks certificates up by account, and an index costs every claim a write.
    account = models.ForeignKey(
        AcmeAccount,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="certificates",
        db_index=False,
    )
    profile = models.CharField(max_length=64, blank=True, default="", db_default="")
    # ACME Renewal Information (RFC 9773): the certificate's identifier at the CA (base64url of the
    # issuer's key identifier, a dot, base64url of the serial), the window the CA last suggested
    # and why, and when the ARI sweep next asks (null: never, as for custom certificates).
    ari_cert_id = models.CharField(max_length=200, blank=True, default="", db_default="")
    ari_window_start = models.DateTimeField(null=True, blank=True)
    ari_window_end = models.DateTimeField(null=True, blank=True)
    ari_explanation_url = models.URLField(max_length=2000, blank=True, default="", db_default="")
    ari_checked_at = models.DateTimeField(null=True, blank=True)
    ari_next_check = models.DateTimeField(null=True, blank=True)
    ari_error = models.TextField(blank=True, default="", db_default="")
    # Revocation at the CA (certificates/revocation.py): when, and the RFC 5280 reason's name.
    revoked_at = models.DateTimeField(null=True, blank=True)
    revocation_reason = models.CharField(max_length=40, blank=True, default="", db_default="")
    created = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["-not_after"]
        # Held by the routers' user (manage.py router_token): the routers' endpoint hands its
        # tokens the served certificate with its private key (api/routers.py).
        permissions = [
            ("fetch_served_keys", "Can fetch served certificates with their private keys (routers)")
        ]
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
            # A domain has at most one custom certificate: an upload replaces the previous one.
            models.UniqueConstraint(
                fields=["domain"],
                condition=models.Q(source=CertificateSource.CUSTOM),
                name="certificate_one_custom_per_domain",
            ),
        ]
        indexes = [
            # The served certificate: WHERE domain_id = ? AND source = ? AND not_after > now
            # ORDER BY not_after DESC.
            models.Index(fields=["domain", "source", "-not_after"], name="certificate_served_idx"),
            # No index on fingerprint_sha256 alone: nothing looks a certificate up by it (the admin's
            # search is a substring match, which a B-tree cannot serve), and every index costs the
            # renewal claim a write per claimed row. (domain, fingerprint) is indexed by the
            # unique constraint.
            # The renewal sweep: WHERE renew_at <= now ORDER BY renew_at LIMIT n FOR UPDATE SKIP LOCKED.
            models.Index(
                fields=["renew_at"],
                name="certificate_renewal_due_idx",
                condition=models.Q(renew_at__isnull=False),
            ),
            # The expiry tick: WHERE source = ? AND not_after > now - window AND not_after <= now.
            models.Index(fields=["source", "not_after"], name="certificate_expiry_idx"),
            # The ARI sweep: WHERE ari_next_check <= now ORDER BY ari_next_check LIMIT n
            # FOR UPDATE SKIP LOCKED.
            models.Index(
                fields=["ari_next_check"],
                name="certificate_ari_due_idx",
                condition=models.Q(ari_next_check__isnull=False),
            ),
            # The overview's renewals failing (few rows: a claim of a healthy certificate writes
            # no entry here), the soonest ending first.
            models.Index(
                fields=["not_after", "id"],
                name="certificate_renew_failing_idx",
                condition=models.Q(renewal_failures__gt=0, renew_at__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return (
            f"{self.get_source_display()} certificate for {self.domain_id}, until {self.not_after:%Y-%m-%d}"
        )

    def is_valid_at(self, now=None) -> bool:
        now = now or timezone.now()
        return self.not_before <= now < self.not_after


SHORT_LIFETIME = datetime.timedelta(days=10)


def renewal_due(not_before, not_after):
    """When a certificate valid from `not_before` to `not_after` is due for renewal, as Let's
    Encrypt's integration guide says: two thirds into its own lifetime (day 60 of 90, day 30 of
    45), or half of it for a certificate of less than 10 days (hour 80 of a 160-hour one)."""
    lifetime = not_after - not_before
    if lifetime < SHORT_LIFETIME:
        return not_before + lifetime / 2
    return not_before + lifetime * 2 / 3


def expiring_window(lifetime: datetime.timedelta, expiring_days: int) -> datetime.timedelta:
    """How long before its end a certificate of `lifetime` counts as expiring (the admin's flag and
    filter, the metrics): the last quarter of its lifetime or `expiring_days`
    (CERTIFICATE_EXPIRING_DAYS), whichever is shorter. 10 days of a 90- or 45-day certificate, 40
    hours of a 160-hour one: always after its renewal was due (two thirds, or half), so a
    certificate is flagged only when its renewal is late, never merely because it is short-lived."""
    return min(datetime.timedelta(days=expiring_days), lifetime / 4)


class OrderState(models.TextChoices):
    """Where an ACME order is; each active state names the step that runs next."""

    PENDING = "pending", "Pending: to be placed at the CA"
    AUTHORIZING = "authorizing", "Authorizing: answering challenges"
    VALIDATING = "validating", "Validating: the CA is checking the challenges"
    FINALIZING = "finalizing", "Finalizing: CSR sent, waiting for the certificate"
    DOWNLOADING = "downloading", "Downloading and storing the certificate"
    VALID = "valid", "Valid: certificate stored"
    INVALID = "invalid", "Invalid: the CA refused or failed"
    CANCELLED = "cancelled", "Cancelled"


ACTIVE_ORDER_STATES = (
    OrderState.PENDING,
    OrderState.AUTHORIZING,
    OrderState.VALIDATING,
    OrderState.FINALIZING,
    OrderState.DOWNLOADING,
)


class Order(models.Model):
    """An ACME order persisted step by step, so that any worker can continue it after a crash.

    Each step runs under a lease: `lease_token` names the task allowed to run the next step, and
    `lease_until` is when the periodic re-drive may assume that task lost and continue the order.
    """

    domain = models.ForeignKey("domains.Domain", on_delete=models.CASCADE, related_name="orders")
    account = models.ForeignKey(AcmeAccount, on_delete=models.PROTECT, related_name="orders")
    state = models.CharField(max_length=20, choices=OrderState.choices, default=OrderState.PENDING)
    names = ArrayField(models.CharField(max_length=253))
    is_renewal = models.BooleanField(default=False)
    # The certificate this order renews (the renewal sweep's orders): while it runs, and if it
    # fails, that certificate stays served and the domain keeps its status.
    renews = models.ForeignKey(
        "Certificate", on_delete=models.SET_NULL, null=True, blank=True, related_name="renewal_orders"
    )
    # The new certificate's key, fresh for every order, sealed; emptied once the order ends.
    private_key = SealedSecretField(null=True)
    order_url = models.URLField(max_length=500, blank=True, default="")
    finalize_url = models.URLField(max_length=500, blank=True, default="")
    certificate_url = models.URLField(max_length=500, blank=True, default="")
    lease_token = models.UUIDField(null=True, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    # Consecutive retries of the current step (bad nonces, network errors, polls); reset per step.
    step_attempts = models.PositiveIntegerField(default=0)
    # The CA profile asked for (empty: the CA's default), and the ARI identifier of the certificate
    # this renewal replaces (RFC 9773 `replaces`; empty when it names none).
    profile = models.CharField(max_length=64, blank=True, default="", db_default="")
    replaces = models.CharField(max_length=200, blank=True, default="", db_default="")
    # Revoke and replace: once this order's certificate is stored, the certificate it renews is
    # revoked with this reason (an RFC 5280 reason name such as keyCompromise); empty: not revoked.
    revoke_replaced = models.CharField(max_length=40, blank=True, default="", db_default="")
    # The quota tokens this order spent (domains/quota.py): committed when the certificate is
    # stored, refunded when the CA certainly issued nothing. Null for orders that spent none.
    quota_reservation = models.UUIDField(null=True, blank=True, editable=False)
    problem = models.TextField(blank=True, default="", help_text="Why the order failed, in plain words.")
    created = models.DateTimeField(default=timezone.now, editable=False)
    updated = models.DateTimeField(auto_now=True)
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]
        constraints = [
            # No step ever creates a second order for a domain that already has one in flight.
            models.UniqueConstraint(
                fields=["domain"],
                condition=models.Q(state__in=ACTIVE_ORDER_STATES),
                name="order_one_in_flight_per_domain",
            ),
            models.CheckConstraint(condition=models.Q(state__in=OrderState.values), name="order_state_valid"),
        ]
        indexes = [
            # The re-drive: WHERE state IN (active) AND lease_until <= now ORDER BY lease_until.
            models.Index(
                fields=["lease_until"],
                name="order_redrive_idx",
                condition=models.Q(state__in=ACTIVE_ORDER_STATES),
            ),
            # The overview's failed orders per hour: WHERE state = 'invalid' AND finished > ?.
            models.Index(
                fields=["finished"], name="order_failed_idx", condition=models.Q(state=OrderState.INVALID)
            ),
        ]

    def __str__(self) -> str:
        return f"order {self.pk} for {', '.join(self.names)} ({self.state})"

    @property
    def is_active(self) -> bool:
        return self.state in ACTIVE_ORDER_STATES


class ChallengeKind(models.TextChoices):
    HTTP_01 = "http-01", "HTTP-01"
    DNS_01 = "dns-01", "DNS-01"


class Challenge(models.Model):
    """One authorization of an order and the challenge we answer for it: HTTP-01, or DNS-01 for a
    wildcard (its TXT record published in the platform's zone, certificates/dns01.py)."""

    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="challenges")
    identifier = models.CharField(max_length=253)
    kind = models.CharField(max_length=10, choices=ChallengeKind.choices, default=ChallengeKind.HTTP_01)
    authorization_url = models.URLField(max_length=500)
    authorization_status = models.CharField(max_length=20, default="pending")
    challenge_url = models.URLField(max_length=500, blank=True, default="")
    token = models.CharField(max_length=128, blank=True, default="")
    key_authorization = models.CharField(max_length=300, blank=True, default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["order", "authorization_url"], name="challenge_unique_per_order"),
        ]
        indexes = [
            # The HTTP-01 responder: WHERE token = ? (joined to the order's state).
            models.Index(fields=["token"], name="challenge_token_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.identifier} ({self.authorization_status})"


class Issuance(models.Model):
    """One certificate the CA issued to the platform, per registered domain it covers: the ledger
    that rebuilds a lost quota bucket. It outlives the domain and the certificate, as Let's
    Encrypt's count does."""

    registered_domain = models.CharField(max_length=253)
    names = ArrayField(models.CharField(max_length=253))
    renewal = models.BooleanField(default=False, help_text="Same names as an earlier certificate.")
    fingerprint_sha256 = models.CharField(max_length=64)
    issued_at = models.DateTimeField(default=timezone.now)
    # The issuer (ACME_ISSUERS' name) that issued it; only those that spend Let's Encrypt's limits
    # count in a rebuild. Empty: written before there were several.
    issuer = models.CharField(max_length=32, blank=True, default="", db_default="")
    spends_letsencrypt_limits = models.BooleanField(default=True, db_default=True)

    class Meta:
        ordering = ["-issued_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["fingerprint_sha256", "registered_domain"], name="issuance_unique_per_domain"
            ),
        ]
        indexes = [
            # The rebuild: WHERE registered_domain = ? AND issued_at > now - period.
            models.Index(fields=["registered_domain", "issued_at"], name="issuance_window_idx"),
            # The pruning: WHERE issued_at < now - the longest period; and, index only, the
            # overview's chart of the last 7 days and its registered domains closest to the limit.
            # The ledger is only ever inserted into, so the included columns cost nothing more.
            models.Index(
                fields=["issued_at"],
                name="issuance_age_idx",
                include=["renewal", "spends_letsencrypt_limits", "fingerprint_sha256", "registered_domain"],
            ),
        ]

    def __str__(self) -> str:
        return f"{', '.join(self.names)} at {self.issued_at:%Y-%m-%d %H:%M}"


class QuotaKind(models.TextChoices):
    REGISTERED_DOMAIN = "registered_domain", "Certificates per registered domain"
    EXACT_SET = "exact_set", "Certificates per exact set of names"
    ACCOUNT = "account", "New orders per ACME account"


class QuotaOverride(models.Model):
    """A limit that differs from the settings for one subject, such as a registered domain for
    which Let's Encrypt granted a higher limit."""

    kind = models.CharField(max_length=20, choices=QuotaKind.choices)
    subject = models.CharField(
        max_length=2000,
        help_text="A registered domain (example.com), names joined by commas in any order "
        "(www.example.com,example.com), or an ACME account's id.",
    )
    capacity = models.PositiveIntegerField(help_text="Certificates (or orders) allowed per period.")
    period_seconds = models.PositiveIntegerField(help_text="The period; 604800 is a week.")
    reason = models.CharField(max_length=500, blank=True, default="")
    created = models.DateTimeField(default=timezone.now, editable=False)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["kind", "subject"]
        constraints = [
            models.UniqueConstraint(fields=["kind", "subject"], name="quota_override_unique"),
            models.CheckConstraint(
                condition=models.Q(capacity__gte=1), name="quota_override_capacity_positive"
            ),
            models.CheckConstraint(
                condition=models.Q(period_seconds__gte=1), name="quota_override_period_positive"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} for {self.subject}: {self.capacity} per {self.period_seconds} s"

    def save(self, *args, **kwargs) -> None:
        # Stored as the quota looks it up: lowercase, and a name set sorted and deduplicated.
        subject = self.subject.strip().lower()
        if self.kind == QuotaKind.EXACT_SET:
            subject = ",".join(sorted({name.strip() for name in subject.split(",") if name.strip()}))
        self.subject = subject
        super().save(*args, **kwargs)


class RegisteredDomain(models.Model):
    """A registered domain with custom domains on the platform (a database view): the admin lists
    its quota (tokens left, next token) from Redis."""

    name = models.CharField(max_length=253, primary_key=True)
    domain_count = models.PositiveIntegerField()

    class Meta:
        managed = False
        db_table = "certificates_registered_domain"
        ordering = ["name"]
        verbose_name = "registered domain quota"

    def __str__(self) -> str:
        return self.name


# The routers' change feed: PostgreSQL's NOTIFY channel a commit of feed rows wakes, and the key of
# the advisory lock that orders those commits (migration 0010 writes both into its trigger).
SERVED_CHANGES_CHANNEL = "certwright_served_changes"


class ServedChange(models.Model):
    """One change of what a TLS name serves: the routers' change feed (issue, renewal switch,
    upload, replacement or removal of a certificate, Let's Encrypt turned on or off, a domain
    deleted, renamed or moved). Written by the database itself (migration 0010's triggers), in
    the transaction of the change, at its commit: `seq` increases in commit order, so a router
    that has read up to `seq` never misses a change committed later. A row names what changed;
    what the name serves now is read from the certificates (certificates/feed.py)."""

    seq = models.BigAutoField(primary_key=True)
    name = models.CharField(max_length=255)
    # The region whose routers serve the name (a domain's app's region); null when the domain and
    # its app are both gone, which every router is told.
    region_id = models.BigIntegerField(null=True)
    created = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        indexes = [
            # A scoped router's changes: WHERE (region_id = ANY(...) OR region_id IS NULL)
            # AND seq > after ORDER BY seq.
            models.Index(fields=["region_id", "seq"], name="served_change_region_seq_idx"),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.name}"


class FeedHorizon(models.Model):
    """The last feed row pruned (workers/retention.py): one row, absent until the first prune. A
    router whose cursor is before it may have missed changes and must take a snapshot."""

    pruned_through = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"feed pruned through #{self.pruned_through}"


class RevocationOutcome(models.TextChoices):
    PENDING = "pending", "pending"
    REVOKED = "revoked", "revoked"
    ALREADY_REVOKED = "already_revoked", "already revoked"
    EXPIRED = "expired", "expired first (on no CRL: nothing to revoke)"
    REFUSED = "refused", "refused for good"
    GAVE_UP = "gave_up", "given up (the CA could not be asked)"


class Revocation(models.Model):
    """A revocation the platform owes a CA, written in the transaction that decides it (revoke and
    replace storing the new certificate, or a domain's deletion), so that a lost message or a dead
    worker delays it and never drops it: while `lease_until` is set the revocation is unsettled,
    and once it passes the re-drive (certificates/revocation_queue.py) sends it again. The leaf
    and the account are kept because a deleted domain's certificate rows are gone."""

    # Null once the certificate row is gone (its domain was deleted): the leaf below still says what.
    certificate = models.ForeignKey(
        Certificate,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="revocations",
        db_index=False,
    )
    # The account that signs the request (the one that issued the certificate); see revocation.py
    # for the key-signed keyCompromise request, which needs the certificate row's key.
    account = models.ForeignKey(
        AcmeAccount, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    domain_name = models.CharField(max_length=255)
    serial = models.CharField(max_length=64)
    leaf_pem = models.TextField()
    # An RFC 5280 reason's name (certificates/revocation.REASONS).
    reason = models.CharField(max_length=40)
    outcome = models.CharField(
        max_length=20, choices=RevocationOutcome.choices, default=RevocationOutcome.PENDING
    )
    # The last failure in plain words (the CA's refusal, or why it could not be asked).
    problem = models.TextField(blank=True, default="")
    attempts = models.PositiveIntegerField(default=0)
    # The message that may work on it now carries this token; a re-drive issues a new one, so a
    # late message of an earlier send does nothing.
    lease_token = models.UUIDField(null=True, blank=True)
    # When the re-drive sends it again unless it is settled first; null once settled.
    lease_until = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(default=timezone.now, editable=False)
    settled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(outcome__in=RevocationOutcome.values), name="revocation_outcome_valid"
            ),
            # Unsettled exactly while pending: the re-drive's index holds pending rows only.
            models.CheckConstraint(
                condition=models.Q(outcome=RevocationOutcome.PENDING, lease_until__isnull=False)
                | (~models.Q(outcome=RevocationOutcome.PENDING) & models.Q(lease_until__isnull=True)),
                name="revocation_leased_while_pending",
            ),
        ]
        indexes = [
            # The re-drive: WHERE lease_until <= now ORDER BY lease_until LIMIT n FOR UPDATE SKIP LOCKED.
            models.Index(
                fields=["lease_until"],
                name="revocation_due_idx",
                condition=models.Q(lease_until__isnull=False),
            ),
            # A certificate's revocations (its admin page), and ON DELETE SET NULL when certificates
            # are deleted: WHERE certificate_id = ANY(...).
            models.Index(
                fields=["certificate"],
                name="revocation_certificate_idx",
                condition=models.Q(certificate__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.domain_name} serial {self.serial} ({self.reason}): {self.get_outcome_display()}"
