"""The periodic check: claim due domains, resolve them, and either start an order or back off.

A sweep claims due rows through the partial index `domain_due_idx`, marks them with one claim
token and pushes `next_attempt_at` forward as a lease, commits, then fans out chunks. A check
only writes to rows that still carry its token, so two sweeps, two workers or a redelivered task
never process one domain twice; a chunk that dies leaves its domains due again when the lease
expires.
"""

from __future__ import annotations

import dataclasses
import datetime
import uuid

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from certificates.dns01 import WILDCARD_MESSAGE, parked_wildcard
from certificates.models import AcmeAccount, Certificate, CertificateSource
from domains.backoff import retry_delay
from domains.enqueue import check_domains_later
from domains.models import SWEPT_STATUSES, Domain, DomainStatus, WaitingOn
from domains.orders import Start, start_orders
from domains.pauses import paused_message
from domains.quota_policy import Candidate, Granted, refund, reserve, when
from domains.status import StatusWrite, bulk_change_status
from workers.poison import isolate_poison
from workers.preflight import TRANSIENT_RETRY, PreflightRow, Verdict, avoided, preflight


def claim_due(now: datetime.datetime | None = None, limit: int | None = None) -> tuple[list[int], uuid.UUID]:
    """Claims up to `limit` due domains under one new token; returns their ids and the token."""
    now = now or timezone.now()
    limit = limit or settings.DOMAIN_SWEEP_BATCH
    token = uuid.uuid4()
    lease_end = now + datetime.timedelta(seconds=settings.DOMAIN_CHECK_LEASE_SECONDS)
    with transaction.atomic():
        ids = list(
            Domain.objects.select_for_update(skip_locked=True)
            .filter(status__in=SWEPT_STATUSES, next_attempt_at__lte=now)
            .order_by("next_attempt_at")
            .values_list("pk", flat=True)[:limit]
        )
        if ids:
            Domain.objects.filter(pk__in=ids).update(claim_token=token, next_attempt_at=lease_end)
    return ids, token


def sweep(now: datetime.datetime | None = None) -> int:
    """Claims every due domain (in batches, up to DOMAIN_SWEEP_MAX a tick) and sends their checks in
    chunks; returns how many were claimed. Each batch commits before its chunks are sent."""
    now = now or timezone.now()
    chunk = settings.DOMAIN_CHECK_CHUNK
    claimed = 0
    while claimed < settings.DOMAIN_SWEEP_MAX:
        with transaction.atomic():
            ids, token = claim_due(now, min(settings.DOMAIN_SWEEP_BATCH, settings.DOMAIN_SWEEP_MAX - claimed))
            for start in range(0, len(ids), chunk):
                check_domains_later(ids[start : start + chunk], str(token))
        claimed += len(ids)
        if len(ids) < settings.DOMAIN_SWEEP_BATCH:
            break
    return claimed


def check_claimed(domain_ids: list[int], token: str, now: datetime.datetime | None = None) -> dict[str, int]:
    """Checks the domains of `domain_ids` that still carry `token`: resolves all of them
    concurrently, runs the CAA pre-flight for those that point at the platform, then writes every
    outcome back in bulk and starts the orders, with a constant number of queries per chunk. A
    domain that makes the chunk raise is set aside alone (workers/poison.py)."""
    now = now or timezone.now()
    return isolate_poison(
        domain_ids,
        lambda ids: _check(ids, token, now),
        lambda domain_id, problem: _set_aside(domain_id, token, problem, now),
    )


def _set_aside(domain_id: int, token: str, problem: str, now: datetime.datetime) -> None:
    """A domain the check cannot process keeps its status, says why, and backs off."""
    failures = Domain.objects.filter(pk=domain_id).values_list("consecutive_failures", flat=True).first()
    if failures is None:
        return
    retry_at = now + retry_delay(failures + 1)
    message = f"Certwright could not check this domain: {problem}; next attempt at {when(retry_at)}"
    Domain.objects.filter(pk=domain_id, claim_token=token).update(
        claim_token=None,
        consecutive_failures=failures + 1,
        next_attempt_at=retry_at,
        last_error=message,
        updated=now,
    )


def _check(domain_ids: list[int], token: str, now: datetime.datetime) -> dict[str, int]:
    # A renewal at Let's Encrypt: the domain holds a Let's Encrypt certificate for exactly its name.
    renewal = Exists(
        Certificate.objects.filter(
            domain_id=OuterRef("pk"),
            source=CertificateSource.LETSENCRYPT,
            sans__len=1,
            sans__0=OuterRef("name"),
        )
    )
    rows = list(
        Domain.objects.filter(pk__in=domain_ids, claim_token=token, letsencrypt_enabled=True)
        .annotate(renewal=renewal)
        .order_by("pk")
        .values_list(
            "pk",
            "name",
            "consecutive_failures",
            "app__name",
            "app__region_id",
            "quota_reservation",
            "renewal",
            "ownership_token",
            "ownership_verified_at",
            "ca_unpause_url",
            "issuer",
            "avoid_issuers",
            "avoid_issuers_until",
            named=True,
        )
    )
    counts = {"checked": 0, "ordered": 0, "failed": 0, "parked": 0, "waiting": 0}
    writes: list[StatusWrite] = []
    checkable = []
    for row in rows:
        if row.ca_unpause_url:
            # Paused by the CA (however this check was claimed): nothing is sent for the name, and
            # nothing is due until an operator unpauses it (domains/pauses.py).
            message = paused_message(row.name)
            writes.append(
                StatusWrite(
                    row.pk,
                    DomainStatus.ACTION_REQUIRED,
                    message,
                    message,
                    row.consecutive_failures,
                    None,
                    waiting_on=WaitingOn.PAUSED,
                )
            )
            counts["parked"] += 1
        elif parked_wildcard(row.name):
            writes.append(
                StatusWrite(
                    row.pk,
                    DomainStatus.ACTION_REQUIRED,
                    WILDCARD_MESSAGE,
                    WILDCARD_MESSAGE,
                    row.consecutive_failures,
                    None,
                    waiting_on=WaitingOn.DNS01,
                )
            )
            counts["parked"] += 1
        else:
            checkable.append(row)
    verdicts = preflight(
        [
            PreflightRow(
                row.pk,
                row.name,
                row.app__name,
                row.app__region_id,
                "" if row.ownership_verified_at else row.ownership_token,
                row.issuer,
                avoided(row.avoid_issuers, row.avoid_issuers_until, now),
            )
            for row in checkable
        ]
    )
    # Ownership is proven once: by the TXT record, or by a CNAME to the app's own hostname.
    proven = [row.pk for row in checkable if row.ownership_verified_at is None and verdicts[row.pk].ok]
    if proven:
        Domain.objects.filter(pk__in=proven, claim_token=token).update(ownership_verified_at=now)
    # Domains to order for: what the quota needs of each, the reason, and its failures so far.
    to_order: dict[int, tuple[Candidate, str, int]] = {}
    # Domains that held a booked quota token and no longer want it (their DNS went wrong).
    released: list = []
    for row in checkable:
        counts["checked"] += 1
        verdict = verdicts[row.pk]
        failures = row.consecutive_failures
        if verdict.ok:
            candidate = Candidate(row.pk, row.name, row.quota_reservation, row.renewal)
            to_order[row.pk] = (candidate, verdict.message, failures)
            continue
        write = _failure(row.pk, verdict, failures, now)
        if row.quota_reservation and write.consecutive_failures > failures:
            # A real failure (not the resolvers'): the booked token goes to the next in line.
            released.append((row.quota_reservation, row.name))
            write = dataclasses.replace(write, quota_reservation=None)
        writes.append(write)
    counts["failed"] = len(writes) - counts["parked"]
    # Each issuer's orders are reserved and started with its own account.
    by_account: dict[int, tuple[AcmeAccount, list[Candidate]]] = {}
    for pk, (candidate, _, _) in to_order.items():
        account = verdicts[pk].account
        by_account.setdefault(account.pk, (account, []))[1].append(candidate)
    starts: dict[int, list[Start]] = {}
    for account, candidates in by_account.values():
        for pk, outcome in reserve(candidates, account.pk, now).items():
            candidate, reason, failures = to_order[pk]
            if isinstance(outcome, Granted):
                start = Start(pk, candidate.name, reason, outcome.reservation, outcome.renewal)
                starts.setdefault(account.pk, []).append(start)
            else:
                # Not a failure: the backoff does not grow; it is checked again when its token arrives.
                writes.append(
                    StatusWrite(
                        pk,
                        DomainStatus.CREATING,
                        outcome.message,
                        outcome.message,
                        failures,
                        outcome.until,
                        outcome.reservation,
                        waiting_on=WaitingOn.QUOTA,
                    )
                )
                counts["waiting"] += 1
    pending = dict(starts)
    counts["ordered"] = 0
    try:
        bulk_change_status(writes, holding=token, now=now)
        for account_id, group in starts.items():
            counts["ordered"] += start_orders(group, token, by_account[account_id][0], now)
            del pending[account_id]
    except Exception:
        # The tokens just granted and not yet ordered with go back before the chunk is split to
        # find the row that raised (each issuer's group is ordered in one transaction).
        for account_id, group in pending.items():
            for start in group:
                refund(start.reservation, [start.name], account_id, "its order could not be started")
        raise
    for reservation, name in released:
        # Booked for an earlier order's account, which may not be the primary's: refunded where it
        # can be (a token not refunded comes back as its bucket refills).
        refund(reservation, [name], None, "its DNS no longer points at the platform")
    if len(rows) < len(domain_ids):
        # Claimed but turned off meanwhile: release without a check.
        Domain.objects.filter(pk__in=domain_ids, claim_token=token, letsencrypt_enabled=False).update(
            claim_token=None
        )
    return counts


def _failure(pk: int, verdict: Verdict, failures: int, now: datetime.datetime) -> StatusWrite:
    """A failed check: the backoff grows, unless the resolvers themselves failed (retried soon);
    the domain waits on what the verdict names."""
    failures = failures if verdict.transient else failures + 1
    delay = TRANSIENT_RETRY if verdict.transient else retry_delay(failures)
    message = verdict.message
    return StatusWrite(pk, verdict.status, message, message, failures, now + delay, waiting_on=verdict.reason)
