"""Retention: the history tables are kept for a stated time, so that their size follows the number
of domains and not the platform's age.

What goes, hourly (beat's *Prune history*), and what always stays:
- domain events (`DomainEvent`) older than HISTORY_RETENTION_DAYS, except each domain's newest,
  which says why the domain is in its status;
- outbox events (`Event`, for webhooks and email) older than HISTORY_RETENTION_DAYS, all of them
  (with their deliveries, mail lines, and backlog rows if they were never fanned out);
- ended orders (and their challenges) that finished more than HISTORY_RETENTION_DAYS ago, except
  each domain's newest order and its newest valid one (the account of a certificate stored before
  certificates recorded theirs is read from it: certificates/revocation.issuing_account);
- settled revocations older than HISTORY_RETENTION_DAYS;
- the routers' change feed (`ServedChange`) older than FEED_RETENTION_DAYS, except its newest row
  (the feed's end, which tells a restored database from this one). A router whose cursor is older
  than what the feed keeps is told to take a snapshot (api/routers.py), as after a restore.

Each table is walked from its oldest row up by primary key, a batch of ids at a time, and the walk
stops at the first batch holding nothing old enough: ids grow with time, so no index on the time
columns is needed and a run reads little more than what it deletes. The few rows kept forever
(newest per domain) are read again by each run; they are at most one or two per domain.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from psycopg import sql

from certificates.models import ACTIVE_ORDER_STATES, OrderState, RevocationOutcome

logger = logging.getLogger(__name__)

BATCH = 5000


@dataclass(frozen=True)
class Table:
    """One pruned table: how its rows are walked (`walk_time`: a time that never decreases much
    with the primary key) and the statement deleting the old ones of a range of ids."""

    label: str
    table: str
    key: str
    walk_time: str
    delete: str


# Each delete takes the range (%(low)s, %(high)s] of the key, the cutoff, and returns how many went.
_EVENTS = Table(
    "domain events",
    "domains_domainevent",
    "id",
    "created",
    """
    WITH gone AS (
      DELETE FROM domains_domainevent e
      WHERE e.id > %(low)s AND e.id <= %(high)s AND e.created < %(cutoff)s
        AND EXISTS (SELECT 1 FROM domains_domainevent n WHERE n.domain_id = e.domain_id AND n.id > e.id)
      RETURNING 1
    ) SELECT count(*) FROM gone
    """,
)

# The outbox (domains.Event) keeps no newest row: an event says what happened, not why a domain is
# in its status, and by then it was delivered long ago. Its webhook deliveries (with their
# attempts) and mail lines go with it: their foreign keys are checked at commit.
_OUTBOX = Table(
    "outbox events",
    "domains_event",
    "seq",
    "created",
    """
    WITH doomed AS (
      SELECT e.id FROM domains_event e
      WHERE e.seq > %(low)s AND e.seq <= %(high)s AND e.created < %(cutoff)s
    ), attempts AS (
      DELETE FROM domains_webhookattempt a USING domains_webhookdelivery d
      WHERE a.delivery_id = d.id AND d.event_id IN (SELECT id FROM doomed)
    ), deliveries AS (
      DELETE FROM domains_webhookdelivery d WHERE d.event_id IN (SELECT id FROM doomed)
    ), mails AS (
      DELETE FROM domains_emailnotification n WHERE n.event_id IN (SELECT id FROM doomed)
    ), backlog AS (
      DELETE FROM domains_eventbacklog b
      WHERE b.seq > %(low)s AND b.seq <= %(high)s AND b.event_id IN (SELECT id FROM doomed)
    ), gone AS (
      DELETE FROM domains_event e WHERE e.id IN (SELECT id FROM doomed) RETURNING 1
    ) SELECT count(*) FROM gone
    """,
)

_ORDERS = Table(
    "ended orders",
    "certificates_order",
    "id",
    "created",
    """
    WITH doomed AS (
      SELECT o.id FROM certificates_order o
      WHERE o.id > %(low)s AND o.id <= %(high)s AND o.finished < %(cutoff)s
        AND NOT (o.state = ANY(%(active)s))
        AND EXISTS (
          SELECT 1 FROM certificates_order n
          WHERE n.domain_id = o.domain_id AND n.id > o.id AND (o.state <> %(valid)s OR n.state = %(valid)s)
        )
    ), challenges AS (
      DELETE FROM certificates_challenge c WHERE c.order_id IN (SELECT id FROM doomed)
    ), gone AS (
      DELETE FROM certificates_order o WHERE o.id IN (SELECT id FROM doomed) RETURNING 1
    ) SELECT count(*) FROM gone
    """,
)

_REVOCATIONS = Table(
    "settled revocations",
    "certificates_revocation",
    "id",
    "created",
    """
    WITH gone AS (
      DELETE FROM certificates_revocation r
      WHERE r.id > %(low)s AND r.id <= %(high)s AND r.outcome <> %(pending)s AND r.settled_at < %(cutoff)s
      RETURNING 1
    ) SELECT count(*) FROM gone
    """,
)

# Also moves the feed's horizon (FeedHorizon, one row) to the last row deleted, in the same
# transaction: a router's cursor before it is refused from the moment the rows are gone.
_FEED = Table(
    "feed rows",
    "certificates_servedchange",
    "seq",
    "created",
    """
    WITH gone AS (
      DELETE FROM certificates_servedchange s
      WHERE s.seq > %(low)s AND s.seq <= %(high)s AND s.created < %(cutoff)s
        AND s.seq < (SELECT max(seq) FROM certificates_servedchange)
      RETURNING s.seq
    ), horizon AS (
      INSERT INTO certificates_feedhorizon (id, pruned_through)
      SELECT 1, max(seq) FROM gone HAVING count(*) > 0
      ON CONFLICT (id) DO UPDATE
        SET pruned_through = GREATEST(certificates_feedhorizon.pruned_through, EXCLUDED.pruned_through)
    ) SELECT count(*) FROM gone
    """,
)


def _prune(table: Table, cutoff: datetime.datetime, batch: int) -> int:
    """Deletes `table`'s old rows, walking its key upwards from the oldest; returns how many went."""
    window = sql.SQL(
        """
        SELECT max(k), min(t), count(*) FROM (
          SELECT {key} AS k, {time} AS t FROM {table}
          WHERE {key} > %(low)s ORDER BY {key} LIMIT %(batch)s
        ) w
        """
    ).format(
        key=sql.Identifier(table.key), time=sql.Identifier(table.walk_time), table=sql.Identifier(table.table)
    )
    params = {
        "cutoff": cutoff,
        "batch": batch,
        "active": list(ACTIVE_ORDER_STATES),
        "valid": OrderState.VALID.value,
        "pending": RevocationOutcome.PENDING.value,
    }
    low, total = 0, 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(window, {**params, "low": low})
            high, oldest, rows = cursor.fetchone()
            if not rows or oldest >= cutoff:
                return total
            cursor.execute(table.delete, {**params, "low": low, "high": high})
            total += cursor.fetchone()[0]
        low = high


def prune_history(now: datetime.datetime | None = None, batch: int = BATCH) -> dict[str, int]:
    """Deletes what the retention settings no longer keep (see the module's docstring); returns
    how many rows went, per table."""
    now = now or timezone.now()
    history_cutoff = now - datetime.timedelta(days=settings.HISTORY_RETENTION_DAYS)
    feed_cutoff = now - datetime.timedelta(days=settings.FEED_RETENTION_DAYS)
    pruned = {}
    for table, cutoff in (
        (_EVENTS, history_cutoff),
        (_OUTBOX, history_cutoff),
        (_ORDERS, history_cutoff),
        (_REVOCATIONS, history_cutoff),
        (_FEED, feed_cutoff),
    ):
        pruned[table.label] = _prune(table, cutoff, batch)
    if any(pruned.values()):
        logger.info("pruned history: %s", ", ".join(f"{count} {label}" for label, count in pruned.items()))
    return pruned
