"""The events outbox (issue 16): what happened to a domain or its certificate, written in the
transaction of the change itself, never by a task that may run twice; webhooks and email deliver
them later, in order per domain.

Order per domain: `Event.seq` is drawn at insert, and every writer holds the domain's row lock
from before its insert until its commit, so of two transactions writing events of one domain the
second draws its seq after the first committed. record_event takes that lock itself (FOR NO KEY
UPDATE, the lock an UPDATE of the row takes, which excludes every other writer's and waits for no
foreign key); the bulk status writer (domains/status.py) locks its rows in the statement that
inserts, and the expiry events (workers/expiry_events.py) in their transaction, before the insert.
"""

from __future__ import annotations

import datetime
import json
import uuid

from django.db import connection

from domains.enqueue import deliver_webhooks_soon
from domains.models import DomainStatus, EventType
from domains.records import records_of

# The statuses someone must hear about, and the event each transition into them writes.
STATUS_EVENTS = {
    DomainStatus.ACTION_REQUIRED: EventType.DOMAIN_ACTION_REQUIRED,
    DomainStatus.FAILING: EventType.DOMAIN_FAILING,
    DomainStatus.IN_USE: EventType.DOMAIN_IN_USE,
}

# Statuses whose event says what is wrong in the words of the domain's last_error.
_PROBLEMS = (DomainStatus.ACTION_REQUIRED, DomainStatus.FAILING)


def status_event(to: str) -> EventType | None:
    """The event a change of status into `to` writes, if any."""
    return STATUS_EVENTS.get(to)


def event_reason(to: str, reason: str, last_error: str) -> str:
    """What a status event says: for a problem to act on, the domain's new `last_error` (the words
    the API and the admin show); otherwise, or when it has none, the history's `reason`."""
    return last_error if to in _PROBLEMS and last_error else reason


_INSERT = """
WITH d AS (
    SELECT d.id, d.name, d.status, d.app_id, a.name AS app_name
    FROM domains_domain d JOIN domains_app a ON a.id = d.app_id
    WHERE d.id = %(domain_id)s
    FOR NO KEY UPDATE OF d
)
INSERT INTO domains_event (
    id, created, type, app_id, app_name, domain_id, domain_name, from_status, to_status, reason,
    records, data, dedupe_key
)
SELECT %(id)s, %(created)s, %(type)s, d.app_id, d.app_name, d.id, d.name,
    COALESCE(%(from_status)s, d.status), COALESCE(%(to_status)s, d.status), %(reason)s,
    %(records)s::jsonb, %(data)s::jsonb, ''
FROM d
RETURNING id
"""


def record_event(
    type: EventType,
    domain_id: int,
    now: datetime.datetime,
    *,
    reason: str = "",
    from_status: str | None = None,
    to_status: str | None = None,
    records: list[str] | None = None,
    data: dict | None = None,
) -> uuid.UUID | None:
    """Writes one event of the domain (its app and name read under its row lock, which is held to
    commit); a status left None is the domain's current one. Call inside the change's transaction.
    Returns the event's id, or None when the domain is gone."""
    params = {
        "id": uuid.uuid4(),
        "created": now,
        "type": str(type),
        "domain_id": domain_id,
        "from_status": from_status,
        "to_status": to_status,
        "reason": reason,
        "records": json.dumps(records or []),
        "data": json.dumps(data or {}),
    }
    with connection.cursor() as cursor:
        cursor.execute(_INSERT, params)
        row = cursor.fetchone()
    if row:
        deliver_webhooks_soon()
    return row[0] if row else None


def record_status_event(
    domain_id: int, from_status: str, to: str, reason: str, last_error: str, now: datetime.datetime
) -> uuid.UUID | None:
    """Writes the event of a change of status into `to`, when it is one someone must hear about:
    its reason in the words of `last_error` (event_reason), and for `action_required` the records
    to add. Returns the event's id, or None when the change writes none."""
    event = status_event(to)
    if event is None or from_status == to:
        return None
    return record_event(
        event,
        domain_id,
        now,
        reason=event_reason(to, reason, last_error),
        from_status=from_status,
        to_status=to,
        records=records_of([domain_id]).get(domain_id) if to == DomainStatus.ACTION_REQUIRED else None,
    )


def certificate_data(
    fingerprint_sha256: str,
    serial: str,
    issuer: str,
    not_before: datetime.datetime,
    not_after: datetime.datetime,
) -> dict:
    """A certificate as events describe it (`data`), its times in UTC ISO 8601."""
    return {
        "fingerprint_sha256": fingerprint_sha256,
        "serial": serial,
        "issuer": issuer,
        "not_before": event_time(not_before),
        "not_after": event_time(not_after),
    }


def event_time(moment: datetime.datetime) -> str:
    """A time in an event's `data`: UTC, ISO 8601 with Z."""
    return moment.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z")
