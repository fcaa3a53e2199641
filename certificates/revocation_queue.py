"""The revocations the platform owes its CAs, as rows (certificates.models.Revocation): written in
the transaction that decides them, leased to the message that carries them, re-driven once the
lease has expired, settled once. The broker keeps nothing on disk, so the row, not the message, is
what makes a compromised key's certificate end up revoked.

Each send carries the row's lease token: a message of an earlier send finds another token and does
nothing, so two messages never work on one revocation (and revokeCert is idempotent besides).
"""

from __future__ import annotations

import datetime
import uuid

from cryptography.hazmat.primitives import serialization
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from certificates.models import Certificate, Revocation, RevocationOutcome
from certificates.revocation import leaf_of

# How long a send (or an attempt under way) has before the re-drive sends again: well above the
# revoke task's 90 s time limit, so a working attempt is never doubled.
LEASE = datetime.timedelta(minutes=5)
# The CA could not be asked: asked again after 30 s, doubling to an hour, 15 times in all (about
# ten hours), then given up.
MAX_ATTEMPTS = 15


def retry_delay(attempts: int) -> datetime.timedelta:
    """How long after its `attempts`-th failed attempt a revocation the CA could not take is due."""
    return datetime.timedelta(seconds=min(30 * 2 ** max(attempts - 1, 0), 3600))


def owe_revocation(
    cert: Certificate, reason: str, account_id: int | None, domain_name: str, now: datetime.datetime
) -> tuple[int, str]:
    """The one writer of an owed revocation: records that `cert` must be revoked with `reason`,
    in the caller's transaction; returns the row's id and the token of its first send."""
    token = uuid.uuid4()
    leaf = leaf_of(cert.fullchain_pem).public_bytes(serialization.Encoding.PEM).decode()
    row = Revocation.objects.create(
        certificate_id=cert.pk,
        account_id=account_id,
        domain_name=domain_name,
        serial=cert.serial,
        leaf_pem=leaf,
        reason=reason,
        lease_token=token,
        lease_until=now + LEASE,
        created=now,
    )
    return row.pk, str(token)


def claim_expired(now: datetime.datetime | None = None, limit: int = 500) -> list[tuple[int, str]]:
    """Claims up to `limit` unsettled revocations whose lease has expired (their message was lost,
    or their worker died): each gets a new token and lease. Returns (id, token) pairs to send once
    the caller's transaction, if any, commits; rows another claimer holds are skipped."""
    now = now or timezone.now()
    claimed = []
    with transaction.atomic():
        due = list(
            Revocation.objects.select_for_update(skip_locked=True)
            .filter(lease_until__lte=now)
            .order_by("lease_until", "pk")
            .values_list("pk", flat=True)[:limit]
        )
        for pk in due:
            token = uuid.uuid4()
            Revocation.objects.filter(pk=pk).update(lease_token=token, lease_until=now + LEASE)
            claimed.append((pk, str(token)))
    return claimed


def take(revocation_id: int, token: str, now: datetime.datetime) -> Revocation | None:
    """Starts an attempt: counts it and pushes the lease forward first (a row that makes the
    attempt crash is re-driven after the lease, never in a loop). Returns the row, or None when
    `token` is no longer its token (settled, or sent again by the re-drive)."""
    taken = Revocation.objects.filter(pk=revocation_id, lease_token=token, lease_until__isnull=False).update(
        lease_until=now + LEASE, attempts=F("attempts") + 1
    )
    if taken != 1:
        return None
    return Revocation.objects.select_related("account", "certificate").get(pk=revocation_id)


def settle(revocation_id: int, token: str, outcome: str, problem: str, now: datetime.datetime) -> bool:
    """The one writer of how a revocation ended (revoked, already revoked, expired, refused for
    good, given up); it is re-driven no more. Returns whether `token` still held it."""
    return (
        Revocation.objects.filter(pk=revocation_id, lease_token=token, lease_until__isnull=False).update(
            outcome=outcome, problem=problem, settled_at=now, lease_until=None
        )
        == 1
    )


settle.alters_data = True


def defer(revocation_id: int, token: str, problem: str, attempts: int, now: datetime.datetime) -> bool:
    """The CA could not be asked now: the re-drive sends it again after retry_delay(attempts).
    Returns whether `token` still held it."""
    return (
        Revocation.objects.filter(pk=revocation_id, lease_token=token, lease_until__isnull=False).update(
            problem=problem, lease_until=now + retry_delay(attempts)
        )
        == 1
    )


def ask_again(revocation_ids: list[int], now: datetime.datetime | None = None) -> int:
    """An operator's "try again" for settled revocations that failed (refused or given up), once
    the cause is fixed: pending again, attempts reset, due at the re-drive's next tick. Returns
    how many."""
    now = now or timezone.now()
    return Revocation.objects.filter(
        pk__in=revocation_ids, outcome__in=[RevocationOutcome.REFUSED, RevocationOutcome.GAVE_UP]
    ).update(
        outcome=RevocationOutcome.PENDING, attempts=0, settled_at=None, lease_token=None, lease_until=now
    )
