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
from dataclasses import dataclass

import requests
from acme import errors as acme_errors
from acme import messages
from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from certificates import dns01
from certificates.acme_client import get_account
from certificates.models import AcmeAccount, Certificate, CertificateSource
from domains.backoff import retry_delay
from domains.caa import evaluate as evaluate_caa
from domains.models import SWEPT_STATUSES, Domain, DomainStatus, Region
from domains.names import is_wildcard
from domains.ownership import challenge_name, ownership_message
from domains.services import WILDCARD_MESSAGE, parked_wildcard, target_in
from domains.status import StatusWrite, bulk_change_status
from domains.targeting import Target, diagnose
from workers.acme_steps import Start, start_orders
from workers.enqueue import check_domains_later
from workers.quota_policy import Candidate, Granted, refund, reserve
from workers.resolver import CaaLookupFailed, TxtLookupFailed, resolve_for_check

# A resolver problem is not the customer's: try again soon, without growing the backoff.
TRANSIENT_RETRY = datetime.timedelta(seconds=60)


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


def _targets(rows: list[PreflightRow]) -> dict[int, Target]:
    regions = {region.pk: region for region in Region.objects.all()}
    suffixes = tuple(region.domain_suffix for region in regions.values())
    return {row.pk: target_in(regions[row.region_id], row.app_name, suffixes) for row in rows}


@dataclass(frozen=True)
class PreflightRow:
    """What the pre-flight needs of one domain."""

    pk: int
    name: str
    app_name: str
    region_id: int
    # The token its ownership TXT record must hold; empty once ownership is proven (or for a renewal).
    ownership_token: str = ""


@dataclass(frozen=True)
class Verdict:
    """The pre-flight's answer for one domain: go ahead (`ok`, `message` says why), or the status
    it stays in and why; `transient` failures are the resolvers', not the customer's."""

    ok: bool
    message: str
    status: str = DomainStatus.PENDING_DNS
    transient: bool = False


def preflight(rows: list[PreflightRow]) -> tuple[dict[int, Verdict], AcmeAccount | None]:
    """DNS and CAA for many domains at once: resolves all of them concurrently, then checks CAA
    (with the platform's ACME account URI) for those that point at the platform. Returns a verdict
    per domain and the account, when it was needed and reachable."""
    if not rows:
        return {}, None
    targets = _targets(rows)
    by_name = {row.name: row for row in rows}
    accepted = {
        row.name: frozenset({targets[row.pk].app_hostname, targets[row.pk].cname_target}) for row in rows
    }
    diagnoses = {}

    def points_at_platform(lookup) -> bool:
        diagnoses[lookup.name] = diagnose(lookup, targets[by_name[lookup.name].pk])
        return diagnoses[lookup.name].ok

    def ownership_txt(name: str) -> str | None:
        """The TXT record that must prove `name` is this app's, if anything must."""
        row = by_name[name]
        if not row.ownership_token or diagnoses[name].code == "ok_app_cname":
            return None
        return challenge_name(name)

    def delegation(name: str) -> str | None:
        """Where a wildcard's DNS-01 CNAME must be (certificates/dns01.py)."""
        return dns01.challenge_owner(name) if is_wildcard(name) else None

    _, caa, txt, cnames = resolve_for_check(
        list(by_name),
        accepted,
        points_at_platform,
        lambda lookup: ownership_txt(lookup.name),
        lambda lookup: delegation(lookup.name),
    )
    account = account_uri = None
    if caa:
        try:
            account = get_account()
            account_uri = account.account_url
        except (messages.Error, requests.RequestException, acme_errors.Error) as exc:
            # Without the account there is no CAA accounturi check and no order: try again soon.
            problem = f"the CA could not be reached to register the platform's account ({type(exc).__name__})"
            caa = {name: CaaLookupFailed(problem) for name in caa}
    verdicts = {}
    for name, row in by_name.items():
        diagnosis = diagnoses[name]
        if not diagnosis.ok:
            verdicts[row.pk] = Verdict(False, diagnosis.message, transient=diagnosis.transient)
            continue
        published = txt.get(challenge_name(name)) if ownership_txt(name) else None
        if isinstance(published, TxtLookupFailed):
            verdicts[row.pk] = Verdict(False, f"{published}; retried in a minute.", transient=True)
            continue
        if published is not None and row.ownership_token not in published:
            message = ownership_message(name, row.ownership_token, targets[row.pk].app_hostname)
            verdicts[row.pk] = Verdict(False, message, DomainStatus.ACTION_REQUIRED)
            continue
        if delegation(name):
            chain = cnames[delegation(name)]
            if isinstance(chain, TxtLookupFailed):
                verdicts[row.pk] = Verdict(False, f"{chain}; retried in a minute.", transient=True)
                continue
            if dns01.delegation_target(name) not in chain:
                found_text = f"it is a CNAME to {chain[0]}" if chain else "it has no CNAME record"
                message = (
                    f"A wildcard certificate is validated over DNS: add the record "
                    f"{dns01.delegation_record(name)} ({dns01.challenge_owner(name)}: {found_text})."
                )
                verdicts[row.pk] = Verdict(False, message, DomainStatus.ACTION_REQUIRED)
                continue
        found = caa[name]
        if isinstance(found, CaaLookupFailed):
            verdicts[row.pk] = Verdict(False, f"{found}; retried in a minute.", transient=True)
            continue
        decision = evaluate_caa(
            name,
            found,
            identity=settings.ACME_CAA_IDENTITY,
            account_uri=account_uri,
            method="dns-01" if is_wildcard(name) else "http-01",
        )
        if decision.allowed:
            verdicts[row.pk] = Verdict(True, f"DNS points at the platform ({diagnosis.message})")
        else:
            verdicts[row.pk] = Verdict(False, decision.message, DomainStatus.ACTION_REQUIRED)
    return verdicts, account


def check_claimed(domain_ids: list[int], token: str, now: datetime.datetime | None = None) -> dict[str, int]:
    """Checks the domains of `domain_ids` that still carry `token`: resolves all of them
    concurrently, runs the CAA pre-flight for those that point at the platform, then writes every
    outcome back in bulk and starts the orders, with a constant number of queries per chunk."""
    now = now or timezone.now()
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
        )
    )
    counts = {"checked": 0, "ordered": 0, "failed": 0, "parked": 0, "waiting": 0}
    writes: list[StatusWrite] = []
    checkable = []
    for row in rows:
        pk, name, failures = row[:3]
        if parked_wildcard(name):
            writes.append(
                StatusWrite(
                    pk, DomainStatus.ACTION_REQUIRED, WILDCARD_MESSAGE, WILDCARD_MESSAGE, failures, None
                )
            )
            counts["parked"] += 1
        else:
            checkable.append(row)
    verdicts, account = preflight(
        [PreflightRow(row[0], row[1], row[3], row[4], "" if row[8] else row[7]) for row in checkable]
    )
    # Ownership is proven once: by the TXT record, or by a CNAME to the app's own hostname.
    proven = [row[0] for row in checkable if row[8] is None and verdicts[row[0]].ok]
    if proven:
        Domain.objects.filter(pk__in=proven, claim_token=token).update(ownership_verified_at=now)
    # Domains to order for: what the quota needs of each, the reason, and its failures so far.
    to_order: dict[int, tuple[Candidate, str, int]] = {}
    # Domains that held a booked quota token and no longer want it (their DNS went wrong).
    released: list = []
    for pk, name, failures, _, _, reservation, renewing, *_ in checkable:
        counts["checked"] += 1
        verdict = verdicts[pk]
        if verdict.ok:
            to_order[pk] = (Candidate(pk, name, reservation, renewing), verdict.message, failures)
            continue
        write = _failure(pk, verdict.status, verdict.message, failures, verdict.transient, now)
        if reservation and write.consecutive_failures > failures:
            # A real failure (not the resolvers'): the booked token goes to the next in line.
            released.append((reservation, name))
            write = dataclasses.replace(write, quota_reservation=None)
        writes.append(write)
    counts["failed"] = len(writes) - counts["parked"]
    starts = []
    outcomes = reserve([c for c, _, _ in to_order.values()], account.pk, now) if to_order else {}
    for pk, outcome in outcomes.items():
        candidate, reason, failures = to_order[pk]
        if isinstance(outcome, Granted):
            starts.append(Start(pk, reason, outcome.reservation, outcome.renewal, candidate.name))
        else:
            # Not a failure: the backoff does not grow; the domain is checked again when its token arrives.
            writes.append(
                StatusWrite(
                    pk,
                    DomainStatus.CREATING,
                    outcome.message,
                    outcome.message,
                    failures,
                    outcome.until,
                    outcome.reservation,
                )
            )
            counts["waiting"] += 1
    bulk_change_status(writes, holding=token, now=now)
    for reservation, name in released:
        refund(
            reservation, [name], account.pk if account else None, "its DNS no longer points at the platform"
        )
    counts["ordered"] = start_orders(starts, token, now, account=account if starts else None)
    if len(rows) < len(domain_ids):
        # Claimed but turned off meanwhile: release without a check.
        Domain.objects.filter(pk__in=domain_ids, claim_token=token, letsencrypt_enabled=False).update(
            claim_token=None
        )
    return counts


def _failure(
    pk: int, status: str, message: str, failures: int, transient: bool, now: datetime.datetime
) -> StatusWrite:
    """A failed check: the backoff grows, unless the resolvers themselves failed (retried soon)."""
    failures = failures if transient else failures + 1
    delay = TRANSIENT_RETRY if transient else retry_delay(failures)
    return StatusWrite(pk, status, message, message, failures, now + delay)
