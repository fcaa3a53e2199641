"""The renewal sweep: claim Let's Encrypt certificates due for renewal, re-run the pre-flight, and
order their successors, while they stay served.

A renewal names the certificate it `replaces` (RFC 9773) when the CA answers ARI, the certificate
has an ARI identifier and was ordered by the same account. Let's Encrypt exempts such a renewal
from every rate limit once the certificate's ARI window has opened, so it then spends no quota
token; before that (retry now, the lifetime rule while ARI fails) it spends the quota of an
ordinary renewal, as do the others (and a renewal the CA would not let replace its certificate,
workers/acme_steps.py). Every
renewal asks for the domain's effective profile (domains/profiles.py), as its first order did.

A certificate is due at two thirds of its own lifetime, half of it under 10 days, or earlier when
the CA's ARI window says so (`Certificate.renew_at`). The sweep claims
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
from django.db import connection, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from certificates.directory import DirectoryUnavailable, directory
from certificates.models import (
    ACTIVE_ORDER_STATES,
    AcmeAccount,
    Certificate,
    Order,
)
from domains.backoff import retry_delay
from domains.enqueue import renew_certificates_later
from domains.events import certificate_data, event_time, record_event
from domains.locking import lock_certificates
from domains.models import Domain, EventType
from domains.orders import Start, create_orders, fresh_keys, renewal_lease_until
from domains.profiles import effective_profile
from domains.quota_policy import Candidate, Granted, Waiting, refund, reserve, when
from workers.poison import isolate_poison
from workers.preflight import TRANSIENT_RETRY, PreflightRow, avoided, preflight

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


def _order_lease(now: datetime.datetime) -> datetime.datetime:
    # Shared with revoke and replace (domains/revocations.py), which starts renewals too.
    return renewal_lease_until(now)


def renew_claimed(cert_ids: list[int], token: str, now: datetime.datetime | None = None) -> dict[str, int]:
    """Renews the certificates of `cert_ids` that still carry `token`: the DNS and CAA pre-flight
    for all of them at once, then the quota, then the orders; a constant number of queries per
    chunk. A certificate that makes the chunk raise is set aside alone (isolate_poison)."""
    now = now or timezone.now()
    return isolate_poison(
        cert_ids,
        lambda ids: _renew(ids, token, now),
        lambda cert_id, problem: _set_aside(cert_id, token, problem, now),
    )


def _set_aside(cert_id: int, token: str, problem: str, now: datetime.datetime) -> None:
    domain_id = Certificate.objects.filter(pk=cert_id).values_list("domain_id", flat=True).first()
    if domain_id is not None:
        record_renewal_failure(cert_id, domain_id, problem, now, holding=token)


def _renew(cert_ids: list[int], token: str, now: datetime.datetime) -> dict[str, int]:
    busy = Exists(Order.objects.filter(domain_id=OuterRef("domain_id"), state__in=ACTIVE_ORDER_STATES))
    rows = list(
        Certificate.objects.filter(pk__in=cert_ids, renewal_claim=token)
        .annotate(busy=busy)
        .order_by("pk")
        .values_list(
            "pk",
            "sans",
            "renewal_reservation",
            "busy",
            "domain_id",
            "domain__name",
            "domain__letsencrypt_enabled",
            "domain__app__name",
            "domain__app__region_id",
            "domain__acme_profile",
            "ari_cert_id",
            "account_id",
            "domain__ca_unpause_url",
            "ari_window_start",
            "domain__issuer",
            "domain__avoid_issuers",
            "domain__avoid_issuers_until",
            named=True,
        )
    )
    counts = {"claimed": len(rows), "ordered": 0, "failed": 0, "waiting": 0, "skipped": 0}
    mine = Certificate.objects.filter(renewal_claim=token)
    # Let's Encrypt turned off, or the CA paused the name (whatever scheduled this renewal since,
    # an ARI window say): no renewal until it is turned on again or an operator unpauses it.
    off = [row.pk for row in rows if not row.domain__letsencrypt_enabled or row.domain__ca_unpause_url]
    # An order is already in flight for the domain: look again once it has had its time.
    busy_ids = [row.pk for row in rows if row.pk not in off and row.busy]
    if off:
        mine.filter(pk__in=off).update(renewal_claim=None, renew_at=None)
    if busy_ids:
        mine.filter(pk__in=busy_ids).update(renewal_claim=None, renew_at=_order_lease(now))
    counts["skipped"] = len(off) + len(busy_ids)
    rows = [row for row in rows if row.pk not in off and not row.busy]
    verdicts = preflight(
        [
            PreflightRow(
                row.domain_id,
                row.domain__name,
                row.domain__app__name,
                row.domain__app__region_id,
                pinned=row.domain__issuer,
                avoid=avoided(row.domain__avoid_issuers, row.domain__avoid_issuers_until, now),
            )
            for row in rows
        ]
    )
    # Per account (so per issuer): the renewals to reserve quota for, and those to start.
    candidates: dict[int, dict[int, tuple]] = {}
    accounts: dict[int, AcmeAccount] = {}
    # The renewals that name the certificate they replace inside its opened window: they spend no
    # quota. Those that replace before the window opened spend it as any renewal (early_replaces).
    starts: dict[int, list[Start]] = {}
    early_replaces: set[int] = set()
    ari: dict[int, bool] = {}
    for row in rows:
        verdict = verdicts[row.domain_id]
        name = row.domain__name
        if verdict.ok:
            account = accounts.setdefault(verdict.account.pk, verdict.account)
            if account.pk not in ari:
                ari[account.pk] = _ca_answers_ari(account)
            # A renewal at another issuer than the certificate's carries no `replaces`: no CA
            # replaces another CA's certificate (_may_replace asks for the same account).
            if ari[account.pk] and _may_replace(row, account):
                if _window_opened(row, now):
                    starts.setdefault(account.pk, []).append(
                        Start(
                            row.domain_id,
                            name,
                            renewal=True,
                            renews=row.pk,
                            profile=effective_profile(row.domain__acme_profile),
                            replaces=row.ari_cert_id,
                        )
                    )
                    continue
                early_replaces.add(row.pk)
            candidates.setdefault(account.pk, {})[row.domain_id] = (
                Candidate(row.domain_id, name, row.renewal_reservation, sorted(row.sans) == [name]),
                row,
            )
            continue
        if verdict.transient:
            # The resolvers' problem: retried soon, no failure counted, the booked token kept.
            retry_at = now + TRANSIENT_RETRY
            record_renewal_failure(
                row.pk, row.domain_id, verdict.message, now, retry_at=retry_at, counted=False, holding=token
            )
        else:
            record_renewal_failure(row.pk, row.domain_id, verdict.message, now, holding=token)
            if row.renewal_reservation:
                refund(row.renewal_reservation, [name], None, "its DNS no longer allows a renewal")
        counts["failed"] += 1
    for account_id, group in candidates.items():
        outcomes = reserve([c for c, _ in group.values()], account_id, now)
        for domain_id, outcome in outcomes.items():
            candidate, row = group[domain_id]
            if isinstance(outcome, Granted):
                starts.setdefault(account_id, []).append(
                    Start(
                        domain_id,
                        candidate.name,
                        reservation=outcome.reservation,
                        renewal=True,
                        renews=row.pk,
                        profile=effective_profile(row.domain__acme_profile),
                        replaces=row.ari_cert_id if row.pk in early_replaces else "",
                    )
                )
            else:
                renewal_waits(row.pk, outcome, now, holding=token)
                counts["waiting"] += 1
    counts["ordered"] = 0
    pending = dict(starts)
    try:
        for account_id, group in starts.items():
            counts["ordered"] += start_renewals(group, token, accounts[account_id], now)
            del pending[account_id]
    except Exception:
        # Nothing of this issuer's group was ordered (one transaction): its tokens, and those of the
        # groups not started yet, go back before the chunk is split to find the row that raised.
        for account_id, group in pending.items():
            for start in group:
                refund(start.reservation, [start.name], account_id, "its renewal could not be started")
        raise
    return counts


def _ca_answers_ari(account: AcmeAccount) -> bool:
    """Whether the account's CA has ACME Renewal Information (and so takes `replaces`); a CA whose
    directory cannot be read is taken to have none (the renewal then spends its quota, safely)."""
    try:
        return bool(directory(account.directory_url).renewal_info)
    except DirectoryUnavailable as exc:
        logger.info("renewals without replaces: %s", exc)
        return False


def _may_replace(row, account: AcmeAccount) -> bool:
    """Whether the renewal of `row` may name the certificate it replaces: it has an ARI identifier,
    the same account ordered it (the CA refuses another account's), it covers exactly the domain's
    name, and no quota token is booked for it (a renewal whose `replaces` the CA refused before)."""
    return (
        bool(row.ari_cert_id)
        and row.account_id == account.pk
        and sorted(row.sans) == [row.domain__name]
        and row.renewal_reservation is None
    )


def _window_opened(row, now: datetime.datetime) -> bool:
    """Whether the CA's ARI window of `row` has opened: Let's Encrypt exempts a renewal that names
    the certificate it replaces from every rate limit only then (an earlier one, by "retry now" or
    the lifetime rule while ARI fails, counts at the CA, so it spends our quota too)."""
    return row.ari_window_start is not None and row.ari_window_start <= now


def renewal_waits(
    cert_id: int, waiting: Waiting, now: datetime.datetime, *, holding: str | None = None
) -> None:
    """The one writer of a renewal waiting for its quota token: the certificate stays served and is
    due again when the token arrives, which stays booked for it. With `holding`, only while the
    certificate is still claimed by it."""
    rows = Certificate.objects.filter(pk=cert_id, **({"renewal_claim": holding} if holding else {}))
    rows.update(
        renewal_claim=None,
        renew_at=waiting.until,
        renewal_reservation=waiting.reservation,
        renewal_error=waiting.message,
    )


def record_renewal_failure(
    cert_id: int,
    domain_id: int,
    problem: str,
    now: datetime.datetime,
    *,
    retry_at: datetime.datetime | None = None,
    counted: bool = True,
    holding: str | None = None,
) -> bool:
    """The one writer of a renewal that did not happen (the pre-flight, the CA, a rate limit, or an
    internal error): the certificate stays served, the domain keeps its status and says why in
    `last_error`, and the next attempt is at `retry_at`, else on the backoff schedule. `counted`
    False (the resolvers' or the CA's rate limit, not the customer's) keeps the backoff and any
    booked quota token. With `holding`, only while the certificate is still claimed by it."""
    with transaction.atomic():
        rows = lock_certificates([cert_id], **({"renewal_claim": holding} if holding else {}))
        cert = rows.only(
            "pk", "renewal_failures", "fingerprint_sha256", "serial", "issuer", "not_before", "not_after"
        ).first()
        if cert is None:
            return False
        failures = cert.renewal_failures + (1 if counted else 0)
        retry_at = retry_at or now + retry_delay(failures)
        message = f"Renewal failed: {problem.rstrip('.')}. Next renewal attempt at {when(retry_at)}."
        fields = {
            "renewal_claim": None,
            "renew_at": retry_at,
            "renewal_failures": failures,
            "renewal_error": message,
        }
        if counted:
            fields["renewal_reservation"] = None
        Certificate.objects.filter(pk=cert_id).update(**fields)
        if counted:
            # The customer hears of failures that count, on the backoff's schedule; not of the
            # resolvers' or the CA's own trouble, retried within minutes without counting.
            record_event(
                EventType.CERTIFICATE_RENEWAL_FAILED,
                domain_id,
                now,
                reason=message,
                data={
                    **certificate_data(
                        cert.fingerprint_sha256, cert.serial, cert.issuer, cert.not_before, cert.not_after
                    ),
                    "failures": failures,
                    "next_attempt_at": event_time(retry_at),
                },
            )
        Domain.objects.filter(pk=domain_id).update(last_error=message, updated=now)
    return True


def start_renewals(starts: list[Start], token: str, account: AcmeAccount, now: datetime.datetime) -> int:
    """Creates one renewal order (fresh key) per start whose certificate is still claimed by
    `token`, and hands the certificate to its order; returns how many started. A domain that got an
    order meanwhile is skipped and its reservation refunded."""
    keys = fresh_keys(starts)
    with transaction.atomic():
        held = set(
            lock_certificates([start.renews for start in starts], renewal_claim=token).values_list(
                "pk", flat=True
            )
        )
        for start in starts:
            if start.renews not in held:
                refund(start.reservation, [start.name], account.pk, "the renewal's claim was taken over")
        orders = create_orders([start for start in starts if start.renews in held], keys, account, now)
        Certificate.objects.filter(pk__in=held).update(
            renewal_claim=None, renew_at=_order_lease(now), renewal_reservation=None
        )
    return len(orders)
