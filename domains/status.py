"""Guarded status changes of a domain, each leaving a history row."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.db import connection, transaction
from django.utils import timezone

from certificates.models import Certificate, CertificateSource
from domains.enqueue import deliver_webhooks_soon
from domains.events import event_reason, record_status_event, status_event
from domains.models import Domain, DomainEvent, DomainStatus
from domains.records import records_of


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
    claim token is still `holding`; records the change in its history. Returns whether it happened.
    What the domain waits on (`waiting_on`) is cleared unless `fields` names it."""
    now = now or timezone.now()
    fields.setdefault("waiting_on", "")
    # No savepoint: inside a caller's transaction a failure here must undo the caller's work too.
    with transaction.atomic(savepoint=False):
        rows = Domain.objects.select_for_update().filter(pk=domain_id)
        if holding is not None:
            rows = rows.filter(claim_token=holding)
        found = rows.values_list("status", "last_error").first()
        if found is None or (allowed_from is not None and found[0] not in set(allowed_from)):
            return False
        current, last_error = found
        Domain.objects.filter(pk=domain_id).update(status=to, updated=now, **fields)
        if current != to:
            DomainEvent.objects.create(
                domain_id=domain_id, created=now, from_status=current, to_status=to, reason=reason
            )
            record_status_event(domain_id, current, to, reason, fields.get("last_error", last_error), now)
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
    # What the domain waits on (domains.models.WaitingOn), "" when nothing.
    waiting_on: str = ""


# One statement for a whole chunk: lock the rows still claimed (in id order), update them, and
# write a history row for each change of status and an outbox event for each change into a status
# someone must hear about (v.event_type, set by the caller for those statuses only), under the same
# row locks: the events of a domain keep their commit order (domains/events.py).
_BULK_WRITE = """
WITH v(id, status, reason, error, failures, next_at, keep_reservation, reservation, event_type,
       event_reason, records, waiting_on) AS (VALUES {values}),
old AS (
    SELECT d.id, d.status FROM domains_domain d JOIN v ON v.id = d.id
    WHERE d.claim_token = %s ORDER BY d.id FOR UPDATE OF d
),
changed AS (
    UPDATE domains_domain d
    SET status = v.status, consecutive_failures = v.failures, next_attempt_at = v.next_at,
        last_error = v.error, waiting_on = v.waiting_on, last_checked_at = %s, claim_token = NULL,
        updated = %s,
        quota_reservation = CASE WHEN v.keep_reservation THEN d.quota_reservation ELSE v.reservation END
    FROM v, old
    WHERE d.id = v.id AND old.id = v.id
    RETURNING d.id, d.name, d.app_id, old.status AS old_status, v.status AS new_status, v.reason,
        v.event_type, v.event_reason, v.records
),
history AS (
    INSERT INTO domains_domainevent (domain_id, created, from_status, to_status, reason)
    SELECT id, %s, old_status, new_status, reason FROM changed WHERE old_status <> new_status
)
INSERT INTO domains_event (
    id, created, type, app_id, app_name, domain_id, domain_name, from_status, to_status, reason, records,
    data, dedupe_key
)
SELECT gen_random_uuid(), %s, c.event_type, c.app_id, a.name, c.id, c.name, c.old_status, c.new_status,
    c.event_reason, c.records, '{{}}'::jsonb, ''
FROM changed c JOIN domains_app a ON a.id = c.app_id
WHERE c.old_status <> c.new_status AND c.event_type IS NOT NULL
ORDER BY c.id
"""
_ROW = (
    "(%s::bigint, %s::varchar, %s::text, %s::text, %s::integer, %s::timestamptz, %s::boolean, %s::uuid,"
    " %s::varchar, %s::text, %s::jsonb, %s::varchar)"
)


def bulk_change_status(writes: list[StatusWrite], holding, now: datetime | None = None) -> None:
    """Writes many claimed domains' outcomes in one statement (a constant number of queries per
    chunk, whatever its size): only rows still carrying the claim token `holding` change, the
    claim is released, and each change of status leaves a history row (and an outbox event, for
    the statuses of domains/events.py). Rows are locked in id order, as every multi-row lock is
    (domains/locking.py), so no two writers deadlock."""
    if not writes:
        return
    now = now or timezone.now()
    records = records_of([write.domain_id for write in writes if write.to == DomainStatus.ACTION_REQUIRED])
    params: list = []
    for write in writes:
        event = status_event(write.to)
        params += [
            write.domain_id,
            write.to,
            write.reason,
            write.error,
            write.consecutive_failures,
            write.next_attempt_at,
            write.quota_reservation == KEEP,
            None if write.quota_reservation == KEEP else write.quota_reservation,
            None if event is None else str(event),
            event_reason(write.to, write.reason, write.error),
            json.dumps(records.get(write.domain_id, [])),
            write.waiting_on,
        ]
    sql = _BULK_WRITE.format(values=", ".join([_ROW] * len(writes)))
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, holding, now, now, now, now])
    if any(status_event(write.to) is not None for write in writes):
        deliver_webhooks_soon()


NOTHING_SERVED = (
    "No certificate is served: Let's Encrypt is disabled for this domain and it has no valid custom "
    "certificate. Upload a certificate or enable Let's Encrypt."
)


def settle_status(domain_id: int, why: str, now: dt.datetime | None = None) -> bool:
    """After what is served changed (an upload, a deletion, an expiry), makes the domain's status
    say so: `not_used` while a valid custom certificate is served, `in_use` while its Let's Encrypt
    one is, `failing` when a served domain has nothing valid left; a domain with Let's Encrypt
    disabled keeps `disabled` and says whether anything is served. Statuses of domains still on
    their way to a first certificate (pending DNS, creating...) are left to that flow. Returns
    whether anything changed."""
    now = now or timezone.now()
    with transaction.atomic():
        domain = (
            Domain.objects.select_for_update()
            .filter(pk=domain_id)
            .values_list("status", "letsencrypt_enabled", "last_error", "next_attempt_at")
            .first()
        )
        if domain is None:
            return False
        status, enabled, last_error, next_attempt_at = domain
        valid = set(
            Certificate.objects.filter(domain_id=domain_id, not_before__lte=now, not_after__gt=now)
            .values_list("source", flat=True)
            .distinct()
        )
        custom = CertificateSource.CUSTOM in valid
        if not enabled:
            error = "" if custom else NOTHING_SERVED
            if error == last_error:
                return False
            return bool(Domain.objects.filter(pk=domain_id).update(last_error=error, updated=now))
        # `failing` without a next attempt is what this function sets when nothing valid is left
        # (the renewal sweep owns that domain); a `failing` order's domain has its backoff instead.
        expired = status == DomainStatus.FAILING and next_attempt_at is None
        if status not in (DomainStatus.IN_USE, DomainStatus.NOT_USED) and not expired:
            return False
        if custom:
            to, reason, error = DomainStatus.NOT_USED, why, ""
        elif CertificateSource.LETSENCRYPT in valid:
            to, reason, error = DomainStatus.IN_USE, f"{why}; the Let's Encrypt certificate is served", ""
        else:
            renewal = (
                Certificate.objects.filter(domain_id=domain_id, source=CertificateSource.LETSENCRYPT)
                .exclude(renewal_error="")
                .values_list("renewal_error", flat=True)
                .first()
            )
            to, reason = DomainStatus.FAILING, f"{why}; no valid certificate is served"
            error = f"{why[0].upper()}{why[1:]}: no valid certificate is served." + (
                f" {renewal}" if renewal else ""
            )
        if to == status and (to != DomainStatus.FAILING or error == last_error):
            return False
        # A renewal error stays on a served domain; an expiry's message goes once something is served.
        fields = {"last_error": error} if DomainStatus.FAILING in (to, status) else {}
        return change_status(domain_id, to, reason, now=now, **fields)
