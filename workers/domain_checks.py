"""The periodic check: claim due domains, resolve them, and either start an order or back off.

A sweep claims due rows through the partial index `domain_due_idx`, marks them with one claim
token and pushes `next_attempt_at` forward as a lease, commits, then fans out chunks. A check
only writes to rows that still carry its token, so two sweeps, two workers or a redelivered task
never process one domain twice; a chunk that dies leaves its domains due again when the lease
expires.
"""

from __future__ import annotations

import datetime
import logging
import uuid

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from domains.backoff import retry_delay
from domains.models import SWEPT_STATUSES, Domain, DomainStatus, Region
from domains.names import is_wildcard
from domains.services import WILDCARD_MESSAGE
from domains.status import change_status
from domains.targeting import Diagnosis, Target, diagnose
from workers.acme_steps import start_order
from workers.enqueue import check_domains_later
from workers.resolver import lookup_many_sync

logger = logging.getLogger(__name__)

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
    """Claims due domains and sends their checks in chunks; returns how many were claimed."""
    ids, token = claim_due(now)
    chunk = settings.DOMAIN_CHECK_CHUNK
    with transaction.atomic():
        for start in range(0, len(ids), chunk):
            check_domains_later(ids[start : start + chunk], str(token))
    return len(ids)


def claim_one(domain_id: int, now: datetime.datetime | None = None) -> uuid.UUID | None:
    """Claims one domain now, whatever its next_attempt_at (creation, "retry now")."""
    now = now or timezone.now()
    token = uuid.uuid4()
    lease_end = now + datetime.timedelta(seconds=settings.DOMAIN_CHECK_LEASE_SECONDS)
    claimed = Domain.objects.filter(pk=domain_id, status__in=SWEPT_STATUSES, letsencrypt_enabled=True).update(
        claim_token=token, next_attempt_at=lease_end
    )
    return token if claimed else None


def _targets(domains: list[Domain]) -> dict[int, Target]:
    suffixes = tuple(Region.objects.values_list("domain_suffix", flat=True))
    targets = {}
    for domain in domains:
        region = domain.app.region
        targets[domain.pk] = Target(
            app_hostname=domain.app.default_hostname,
            cname_target=region.cname_target,
            ingress_ipv4=frozenset(region.ingress_ipv4),
            ingress_ipv6=frozenset(region.ingress_ipv6),
            platform_suffixes=suffixes,
        )
    return targets


def check_claimed(domain_ids: list[int], token: str, now: datetime.datetime | None = None) -> dict[str, int]:
    """Checks the domains of `domain_ids` that still carry `token`: resolves all of them
    concurrently, then starts an order for each that points at the platform and backs off the rest."""
    now = now or timezone.now()
    domains = list(
        Domain.objects.select_related("app__region")
        .filter(pk__in=domain_ids, claim_token=token)
        .order_by("pk")
    )
    counts = {"checked": 0, "ordered": 0, "failed": 0, "parked": 0}
    if not domains:
        return counts
    checkable = []
    for domain in domains:
        if not domain.letsencrypt_enabled:
            Domain.objects.filter(pk=domain.pk, claim_token=token).update(
                claim_token=None, next_attempt_at=None
            )
        elif is_wildcard(domain.name):
            park_wildcard(domain, token, now)
            counts["parked"] += 1
        else:
            checkable.append(domain)
    lookups = lookup_many_sync([d.name for d in checkable]) if checkable else {}
    targets = _targets(checkable)
    for domain in checkable:
        counts["checked"] += 1
        diagnosis = diagnose(lookups[domain.name], targets[domain.pk])
        if diagnosis.ok:
            if start_order(domain.pk, token, f"DNS points at the platform ({diagnosis.message})", now):
                counts["ordered"] += 1
        else:
            record_dns_failure(domain, token, diagnosis, now)
            counts["failed"] += 1
    return counts


def park_wildcard(domain: Domain, token, now: datetime.datetime) -> None:
    change_status(
        domain.pk,
        DomainStatus.ACTION_REQUIRED,
        WILDCARD_MESSAGE,
        holding=token,
        now=now,
        next_attempt_at=None,
        last_checked_at=now,
        last_error=WILDCARD_MESSAGE,
        claim_token=None,
    )


def record_dns_failure(domain: Domain, token, diagnosis: Diagnosis, now: datetime.datetime) -> bool:
    """Pending DNS with the diagnosis; the backoff grows unless the resolver itself failed."""
    failures = domain.consecutive_failures if diagnosis.transient else domain.consecutive_failures + 1
    delay = TRANSIENT_RETRY if diagnosis.transient else retry_delay(failures)
    return change_status(
        domain.pk,
        DomainStatus.PENDING_DNS,
        diagnosis.message,
        holding=token,
        now=now,
        consecutive_failures=failures,
        next_attempt_at=now + delay,
        last_checked_at=now,
        last_error=diagnosis.message,
        claim_token=None,
    )
