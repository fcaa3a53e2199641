"""Claiming one row for work now ("retry now"): a domain's check, its certificate's renewal, or its
order's next step. Each is the same move on a different row: a new token and a lease written in
one conditional update, and the task that holds that token sent after commit. The periodic sweeps
claim due rows in bulk the same way; this is the one place that claims a single row out of turn.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Callable

from django.conf import settings
from django.db import transaction
from django.db.models import Model, QuerySet
from django.utils import timezone

from certificates.models import ACTIVE_ORDER_STATES, Certificate, CertificateSource, Order
from domains.enqueue import advance_order_later, check_domains_later, renew_certificates_later
from domains.models import SWEPT_STATUSES, Domain
from domains.orders import lease_until


def claim_now(
    rows: QuerySet,
    *,
    claim_field: str,
    lease_field: str,
    lease_end: datetime.datetime,
    send: Callable[[Model, str], None],
    **fields,
) -> uuid.UUID | None:
    """Claims the first row of `rows` (locked, in the queryset's order) under a new token leased
    until `lease_end`, sets `fields`, and sends its task with `send(row, token)` after commit.
    Returns the token, or None when no row matches (any more)."""
    token = uuid.uuid4()
    with transaction.atomic():
        row = rows.select_for_update().first()
        if row is None:
            return None
        type(row).objects.filter(pk=row.pk).update(**{claim_field: token, lease_field: lease_end}, **fields)
        send(row, str(token))
    return token


def _check_lease(now: datetime.datetime) -> datetime.datetime:
    return now + datetime.timedelta(seconds=settings.DOMAIN_CHECK_LEASE_SECONDS)


def claim_check_now(domain_id: int, *, reset_backoff: bool = False, now: datetime.datetime | None = None):
    """Claims the domain's check now, whatever its next_attempt_at, and sends it after commit;
    returns the claim token, or None when the domain is not waiting for a check (or the CA paused
    it: only unpausing it claims its check, domains/pauses.py)."""
    now = now or timezone.now()
    return claim_now(
        Domain.objects.filter(
            pk=domain_id, status__in=SWEPT_STATUSES, letsencrypt_enabled=True, ca_unpause_url=""
        ),
        claim_field="claim_token",
        lease_field="next_attempt_at",
        lease_end=_check_lease(now),
        send=lambda domain, token: check_domains_later([domain.pk], token),
        **({"consecutive_failures": 0} if reset_backoff else {}),
    )


def renew_now(domain_id: int, now: datetime.datetime | None = None) -> bool:
    """Claims the domain's current Let's Encrypt certificate for renewal at once, whatever its
    renew_at and backoff, and sends the renewal after commit; False when it has no certificate to
    renew (none yet, Let's Encrypt off, an order already running, or the CA paused the name)."""
    now = now or timezone.now()
    if Order.objects.filter(domain_id=domain_id, state__in=ACTIVE_ORDER_STATES).exists():
        return False
    token = claim_now(
        Certificate.objects.filter(
            domain_id=domain_id,
            source=CertificateSource.LETSENCRYPT,
            renew_at__isnull=False,
            domain__ca_unpause_url="",
        ).order_by("-not_after"),
        claim_field="renewal_claim",
        lease_field="renew_at",
        lease_end=_check_lease(now),
        send=lambda cert, token: renew_certificates_later([cert.pk], token),
        renewal_failures=0,
    )
    return token is not None


def redrive_order_of(domain_id: int, now: datetime.datetime | None = None) -> bool:
    """Continues the domain's order in flight now, whoever held its lease."""
    now = now or timezone.now()
    token = claim_now(
        Order.objects.filter(domain_id=domain_id, state__in=ACTIVE_ORDER_STATES).order_by("pk"),
        claim_field="lease_token",
        lease_field="lease_until",
        lease_end=lease_until(now),
        send=lambda order, token: advance_order_later(order.pk, token, order.state),
        step_attempts=0,
    )
    return token is not None
