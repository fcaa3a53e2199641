"""Guarded status changes of a domain, each leaving a history row."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.db import connection, transaction
from django.utils import timezone

from domains.models import Domain, DomainEvent, DomainStatus


def change_status(
    domain_id: int,
    to: DomainStatus,
    reason: str,
    *,
    allowed_from: Iterable[str] | None = None,
    holding=None,
    now: datetime | None = None,
    **fields,
) -> bool:
    """Moves the domain to `to` (and sets `fields`) if it is in `allowed_from` and, when given, its
    claim token is still `holding`; records the change in its history. Returns whether it happened."""
    now = now or timezone.now()
    # No savepoint: inside a caller's transaction a failure here must undo the caller's work too.
    with transaction.atomic(savepoint=False):
        rows = Domain.objects.select_for_update().filter(pk=domain_id)
        if holding is not None:
            rows = rows.filter(claim_token=holding)
        current = rows.values_list("status", flat=True).first()
        if current is None or (allowed_from is not None and current not in set(allowed_from)):
            return False
        Domain.objects.filter(pk=domain_id).update(status=to, updated=now, **fields)
        if current != to:
            DomainEvent.objects.create(
                domain_id=domain_id, created=now, from_status=current, to_status=to, reason=reason
            )
    return True


KEEP = "keep"


@dataclass(frozen=True)
class StatusWrite:
    """One row of a bulk status write: the new status and scheduling of one claimed domain."""

    domain_id: int
    to: str
    reason: str
    error: str
    consecutive_failures: int
    next_attempt_at: datetime | None
    # The quota reservation the domain holds afterwards; KEEP leaves it as it is.
    quota_reservation: object = KEEP


_BULK_WRITE = """
WITH v(id, status, reason, error, failures, next_at, keep_reservation, reservation) AS (VALUES {values}),
old AS (
    SELECT d.id, d.status FROM domains_domain d JOIN v ON v.id = d.id
    WHERE d.claim_token = %s FOR UPDATE OF d
),
changed AS (
    UPDATE domains_domain d
    SET status = v.status, consecutive_failures = v.failures, next_attempt_at = v.next_at,
        last_error = v.error, last_checked_at = %s, claim_token = NULL, updated = %s,
        quota_reservation = CASE WHEN v.keep_reservation THEN d.quota_reservation ELSE v.reservation END
    FROM v, old
    WHERE d.id = v.id AND old.id = v.id
    RETURNING d.id, old.status AS old_status, v.status AS new_status, v.reason
)
INSERT INTO domains_domainevent (domain_id, created, from_status, to_status, reason)
SELECT id, %s, old_status, new_status, reason FROM changed WHERE old_status <> new_status
"""
_ROW = "(%s::bigint, %s::varchar, %s::text, %s::text, %s::integer, %s::timestamptz, %s::boolean, %s::uuid)"


def bulk_change_status(writes: list[StatusWrite], holding, now: datetime | None = None) -> None:
    """Writes many claimed domains' outcomes in one statement (a constant number of queries per
    chunk, whatever its size): only rows still carrying the claim token `holding` change, the
    claim is released, and each change of status leaves a history row."""
    if not writes:
        return
    now = now or timezone.now()
    params: list = []
    for write in writes:
        params += [
            write.domain_id,
            write.to,
            write.reason,
            write.error,
            write.consecutive_failures,
            write.next_attempt_at,
            write.quota_reservation == KEEP,
            None if write.quota_reservation == KEEP else write.quota_reservation,
        ]
    sql = _BULK_WRITE.format(values=", ".join([_ROW] * len(writes)))
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, holding, now, now, now])
