"""The renewal sweep: claim Let's Encrypt certificates due for renewal, re-run the pre-flight, and
order their successors, while they stay served.

A certificate is due at two thirds of its own lifetime (`Certificate.renew_at`). The sweep claims
due rows through the partial index `certificate_renewal_due_idx` with one UPDATE (the rows it
takes are locked with SKIP LOCKED, so two sweeps never take the same row), pushes `renew_at`
forward as a lease, commits, then fans out chunks. A chunk re-checks DNS and CAA, takes the quota
(a renewal of the same names spends only the exact-set bucket) and starts the orders. A failed
renewal leaves the certificate served and the domain's status as it is: it records the error
and pushes `renew_at` out on the backoff schedule.
"""

from __future__ import annotations

import datetime
import logging
import uuid

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from certificates.keys import generate_private_key_pem
from certificates.models import (
    ACTIVE_ORDER_STATES,
    AcmeAccount,
    Certificate,
    CertificateSource,
    Order,
    OrderState,
)
from certificates.sealing import seal
from domains.backoff import retry_delay
from domains.models import Domain
from workers.preflight import TRANSIENT_RETRY, PreflightRow, preflight
from domains.enqueue import advance_order_later, renew_certificates_later
from domains.quota_policy import Candidate, Granted, refund, reserve, when

logger = logging.getLogger(__name__)

_CLAIM = """
UPDATE certificates_certificate SET renewal_claim = %s, renew_at = %s
WHERE id IN (
    SELECT id FROM certificates_certificate
    WHERE renew_at IS NOT NULL AND renew_at <= %s
    ORDER BY renew_at
    LIMIT %s
    FOR UPDATE SKIP LOCKED
)
RETURNING id
"""


def claim_due_renewals(
    now: datetime.datetime | None = None, limit: int | None = None
) -> tuple[list[int], uuid.UUID]:
    """Claims up to `limit` certificates due for renewal under one new token, in one statement;
    returns their ids and the token."""
    now = now or timezone.now()
    limit = limit or settings.RENEWAL_SWEEP_BATCH
    token = uuid.uuid4()
    lease_end = now + datetime.timedelta(seconds=settings.DOMAIN_CHECK_LEASE_SECONDS)
    with connection.cursor() as cursor:
        cursor.execute(_CLAIM, [token, lease_end, now, limit])
        ids = [row[0] for row in cursor.fetchall()]
    return ids, token


def sweep_renewals(now: datetime.datetime | None = None) -> int:
    """Claims every certificate due for renewal (in batches, up to RENEWAL_SWEEP_MAX a tick) and
    sends their renewals in chunks; returns how many were claimed."""
    now = now or timezone.now()
    chunk = settings.DOMAIN_CHECK_CHUNK
    claimed = 0
    while claimed < settings.RENEWAL_SWEEP_MAX:
        batch = min(settings.RENEWAL_SWEEP_BATCH, settings.RENEWAL_SWEEP_MAX - claimed)
        with transaction.atomic():
            ids, token = claim_due_renewals(now, batch)
            for start in range(0, len(ids), chunk):
                renew_certificates_later(ids[start : start + chunk], str(token))
        claimed += len(ids)
        if len(ids) < batch:
            break
    return claimed


def renew_now(domain_id: int, now: datetime.datetime | None = None) -> bool:
    """Claims the domain's current Let's Encrypt certificate for renewal at once, whatever its
    renew_at and backoff ("retry now"), and sends the renewal after commit; False when it has no
    certificate to renew (none yet, Let's Encrypt off, or a renewal order already running)."""
    now = now or timezone.now()
    token = uuid.uuid4()
    lease_end = now + datetime.timedelta(seconds=settings.DOMAIN_CHECK_LEASE_SECONDS)
    with transaction.atomic():
        busy = Order.objects.filter(domain_id=domain_id, state__in=ACTIVE_ORDER_STATES).exists()
        current = (
            Certificate.objects.select_for_update()
            .filter(domain_id=domain_id, source=CertificateSource.LETSENCRYPT, renew_at__isnull=False)
            .order_by("-not_after")
            .first()
        )
        if busy or current is None:
            return False
        Certificate.objects.filter(pk=current.pk).update(
            renewal_claim=token, renew_at=lease_end, renewal_failures=0
        )
        renew_certificates_later([current.pk], str(token))
    return True


def _order_lease(now: datetime.datetime) -> datetime.datetime:
    """How long a certificate whose renewal order runs is left alone: the order's whole time
    budget, after which the sweep takes it again (an order that ended without a word)."""
    seconds = settings.ACME_ORDER_TIMEOUT_SECONDS + settings.ACME_ORDER_LEASE_SECONDS
    return now + datetime.timedelta(seconds=seconds)


def renew_claimed(cert_ids: list[int], token: str, now: datetime.datetime | None = None) -> dict[str, int]:
    """Renews the certificates of `cert_ids` that still carry `token`: the DNS and CAA pre-flight
    for all of them at once, then the quota, then the orders; a constant number of queries per
    chunk."""
    now = now or timezone.now()
    busy = Exists(Order.objects.filter(domain_id=OuterRef("domain_id"), state__in=ACTIVE_ORDER_STATES))
    rows = list(
        Certificate.objects.filter(pk__in=cert_ids, renewal_claim=token)
        .annotate(busy=busy)
        .order_by("pk")
        .values_list(
            "pk",
            "sans",
            "renewal_failures",
            "renewal_reservation",
            "busy",
            "domain_id",
            "domain__name",
            "domain__letsencrypt_enabled",
            "domain__app__name",
            "domain__app__region_id",
        )
    )
    counts = {"claimed": len(rows), "ordered": 0, "failed": 0, "waiting": 0, "skipped": 0}
    mine = Certificate.objects.filter(renewal_claim=token)
    # Let's Encrypt turned off: no renewal until it is turned on again (the normal check then).
    off = [row[0] for row in rows if not row[7]]
    # An order is already in flight for the domain: look again once it has had its time.
    busy_ids = [row[0] for row in rows if row[7] and row[4]]
    if off:
        mine.filter(pk__in=off).update(renewal_claim=None, renew_at=None)
    if busy_ids:
        mine.filter(pk__in=busy_ids).update(renewal_claim=None, renew_at=_order_lease(now))
    counts["skipped"] = len(off) + len(busy_ids)
    rows = [row for row in rows if row[7] and not row[4]]
    verdicts, account = preflight([PreflightRow(row[5], row[6], row[8], row[9]) for row in rows])
    candidates: dict[int, tuple] = {}
    for row in rows:
        cert_id, sans, failures, reservation, _, domain_id, name = row[:7]
        verdict = verdicts[domain_id]
        if verdict.ok:
            candidates[domain_id] = (Candidate(domain_id, name, reservation, sorted(sans) == [name]), row)
            continue
        _renewal_failed(cert_id, domain_id, token, verdict.message, failures, verdict.transient, now)
        if reservation and not verdict.transient:
            refund(reservation, [name], account.pk if account else None, "its DNS no longer allows a renewal")
        counts["failed"] += 1
    outcomes = reserve([c for c, _ in candidates.values()], account.pk, now) if candidates else {}
    starts = []
    for domain_id, outcome in outcomes.items():
        candidate, row = candidates[domain_id]
        if isinstance(outcome, Granted):
            starts.append((row[0], domain_id, candidate.name, outcome.reservation))
        else:
            mine.filter(pk=row[0]).update(
                renewal_claim=None,
                renew_at=outcome.until,
                renewal_reservation=outcome.reservation,
                renewal_error=outcome.message,
            )
            counts["waiting"] += 1
    counts["ordered"] = start_renewals(starts, token, account, now) if starts else 0
    return counts


def _renewal_failed(
    cert_id: int,
    domain_id: int,
    token: str,
    message: str,
    failures: int,
    transient: bool,
    now: datetime.datetime,
) -> None:
    """The pre-flight refused a renewal: the certificate stays served, the domain says why, and
    the next try backs off (a resolver failure is retried soon and keeps any booked token)."""
    failures = failures if transient else failures + 1
    retry_at = now + (TRANSIENT_RETRY if transient else retry_delay(failures))
    error = f"Renewal failed: {message.rstrip('.')}. Next renewal attempt at {when(retry_at)}."
    fields = {
        "renewal_claim": None,
        "renew_at": retry_at,
        "renewal_failures": failures,
        "renewal_error": error,
    }
    if not transient:
        fields["renewal_reservation"] = None
    if Certificate.objects.filter(pk=cert_id, renewal_claim=token).update(**fields):
        Domain.objects.filter(pk=domain_id).update(last_error=error, updated=now)


def start_renewals(
    starts: list[tuple[int, int, str, uuid.UUID | None]],
    token: str,
    account: AcmeAccount,
    now: datetime.datetime,
) -> int:
    """Creates one renewal order (fresh key) per (certificate, domain, name, reservation) still
    claimed by `token` and sends its first step; returns how many started. A domain that got an
    order meanwhile is skipped and its reservation refunded."""
    lease_until = now + datetime.timedelta(seconds=settings.ACME_ORDER_LEASE_SECONDS)
    started = 0
    with transaction.atomic():
        held = set(
            Certificate.objects.select_for_update()
            .filter(pk__in=[cert_id for cert_id, *_ in starts], renewal_claim=token)
            .values_list("pk", flat=True)
        )
        for cert_id, domain_id, name, reservation in starts:
            if cert_id not in held:
                refund(reservation, [name], account.pk, "the renewal's claim was taken over")
                continue
            try:
                # One savepoint per order: a domain whose order started meanwhile (the unique
                # order_one_in_flight_per_domain) is skipped alone.
                with transaction.atomic():
                    order = Order.objects.create(
                        domain_id=domain_id,
                        account=account,
                        names=[name],
                        is_renewal=True,
                        renews_id=cert_id,
                        quota_reservation=reservation,
                        private_key=seal(generate_private_key_pem(settings.ACME_KEY_TYPE)),
                        lease_token=uuid.uuid4(),
                        lease_until=lease_until,
                        created=now,
                    )
            except IntegrityError:
                transaction.on_commit(
                    lambda r=reservation, n=name: refund(
                        r, [n], account.pk, "the domain already had an order"
                    )
                )
                order = None
            Certificate.objects.filter(pk=cert_id).update(
                renewal_claim=None, renew_at=_order_lease(now), renewal_reservation=None
            )
            if order is not None:
                advance_order_later(order.pk, str(order.lease_token), OrderState.PENDING)
                started += 1
    return started
