"""Webhook delivery (issue 16): the outbox's events to the endpoints that want them, signed as
Standard Webhooks says, at least once, in order per domain, never to an address that is not public.

A run (workers/tasks/webhooks.py: asked for when a transaction writes events, and by beat as a
backstop) loops until nothing is due:

- fan-out: the events of the backlog (domains.EventBacklog, written with each event) become one
  delivery per endpoint that wants them (its app's and the platform's, enabled, of the types it
  names) and one waiting mail line per user mailed of them (workers/notification_mail.py sends
  those), and leave the backlog, in one statement, by one run at a time (an advisory lock): two
  runs fanning out at once could commit a domain's later event before its earlier one. The
  pending deliveries of one endpoint and domain are a queue (domains.webhook_models.WebhookQueue),
  made with its first delivery;
- claim: due queues, with one UPDATE ... SKIP LOCKED that sets their `lease_until` (the claim's
  token: only a run whose token is still on a queue writes what came of its delivery; a column in
  no index, so the UPDATE writes no index), and each one's first pending delivery (lowest seq).
  A claim reads the queues it takes and those other runs hold, never the deliveries waiting in
  them: a queue stalled behind a retrying delivery costs nothing until the retry is due;
- send: every claimed delivery signed and POSTed concurrently (WEBHOOK_CONCURRENCY in flight) by
  workers/webhook_send.py, only to addresses that pass domains/webhook_targets.py;
- write: one attempt row per POST, and per delivery: a 2xx delivers it, anything else schedules the
  next try with backoff (5 s, 30 s, 2 min, 5 min ... up to 8 h, jittered) until `give_up_at`
  (WEBHOOK_RETRY_SECONDS), then it is failed; in the same statement its queue is let go (due at
  once, or at the retry) or removed when nothing of it is pending. An endpoint without a 2xx for
  WEBHOOK_DISABLE_AFTER_SECONDS is disabled, its pending deliveries failed, its owner told by mail.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import random
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings
from django.core.mail import mail_admins, send_mail
from django.db import connection, transaction
from django.utils import timezone
from standardwebhooks import Webhook

from domains.enqueue import deliver_webhooks_soon
from domains.notification_models import DEFAULT_EMAIL_EVENTS
from domains.webhook_models import WebhookEndpoint
from domains.webhooks import lock_queue, signing_secrets
from workers import webhook_sql as sql
from workers.webhook_send import (
    SLOW_SHARE,
    WITHDRAWN,
    Flight,
    Outcome,
    progress,
    slow_keys,
    start,
    wait,
    withdraw,
)

logger = logging.getLogger(__name__)

# While a run holds a claimed delivery (longer than a batch can take: WEBHOOK_BATCH requests,
# WEBHOOK_CONCURRENCY at a time, each WEBHOOK_TIMEOUT_SECONDS at most, at the defaults 160 s).
LEASE = datetime.timedelta(minutes=5)
# The waits after the 1st, 2nd ... failure; the last repeats until the delivery is given up.
BACKOFF_SECONDS = (5, 30, 120, 300, 900, 1800, 3600, 7200, 14400, 28800)
# A batch is written once no request of it was answered for this long: those still in flight are
# written by a later round.
STALL_SECONDS = 0.5
# Events fanned out per statement.
DISPATCH_BATCH = 2000
# pg_try_advisory_xact_lock's key for the fan-out (any constant the product uses nowhere else).
DISPATCH_LOCK = 0x6365727477656268


@dataclass(frozen=True, slots=True)
class Claimed:
    # The queue held for it.
    queue_id: int
    id: int
    endpoint_id: int
    event_id: str
    attempts: int
    # When the delivery is given up (seconds since the epoch), or None: never.
    give_up_at: float | None
    # The JSON text the event is sent as (domains.webhooks.PAYLOAD_SQL).
    body: str


@dataclass(frozen=True, slots=True)
class Batch:
    """What a claim holds until `lease`: each due queue's first delivery, and the queues that
    turned out to have none."""

    deliveries: list[Claimed]
    lease: datetime.datetime
    empty_queues: list[int]


# --- the fan-out and the claim -------------------------------------------------------------------


def dispatch(now: datetime.datetime | None = None, limit: int = DISPATCH_BATCH) -> tuple[int, int, int]:
    """Fans out up to `limit` events of the backlog to the webhook endpoints and the users mailed of
    them (domains/notification_models.py); returns (events, deliveries, mails) written, all 0
    when another run holds the fan-out."""
    now = now or timezone.now()
    give_up_at = now + datetime.timedelta(seconds=settings.WEBHOOK_RETRY_SECONDS)
    with connection.cursor() as cursor:
        # Most calls find nothing new (a run calls this before each claim): one index probe says
        # so, without the fan-out's locks and planning.
        cursor.execute(sql.FIRST_UNDISPATCHED)
        first = cursor.fetchone()
        if first is None:
            return 0, 0, 0
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [DISPATCH_LOCK])
        if not cursor.fetchone()[0]:
            return 0, 0, 0
        lock_queue(cursor, exclusive=True)
        cursor.execute(
            sql.DISPATCH,
            {
                "first": first[0],
                "limit": limit,
                "now": now,
                "give_up_at": give_up_at,
                "default_mail_types": list(DEFAULT_EMAIL_EVENTS),
            },
        )
        events, deliveries, mails = cursor.fetchone()
    return events, deliveries, mails


def claim(
    now: datetime.datetime | None = None,
    limit: int | None = None,
    skip: Iterable[int] = (),
    endpoint: int | None = None,
) -> Batch:
    """Holds up to `limit` due queues (WEBHOOK_BATCH), of `endpoint` only or of any endpoint but
    those of `skip`, and reads each one's first delivery. The lease is `now` + LEASE: claims made
    with the same `now` make one batch."""
    now = now or timezone.now()
    lease = now + LEASE
    deliveries, empty = [], []
    params = {"now": now, "lease": lease, "limit": limit or settings.WEBHOOK_BATCH}
    if endpoint is None:
        statement, params["skip"] = sql.CLAIM, sorted(skip)
    else:
        statement, params["endpoint"] = sql.CLAIM_ONE, endpoint
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(statement, params)
        for row in cursor.fetchall():
            if row[1] is None:
                empty.append(row[0])
            else:
                deliveries.append(Claimed(*row))
    return Batch(deliveries, lease, empty)


# --- one batch -----------------------------------------------------------------------------------


def backoff(failures: int, rng: random.Random) -> datetime.timedelta:
    """The wait after the `failures`-th failure, jittered by up to a tenth either way."""
    base = BACKOFF_SECONDS[min(failures, len(BACKOFF_SECONDS)) - 1]
    return datetime.timedelta(seconds=base * rng.uniform(0.9, 1.1))


@dataclass(slots=True)
class Held:
    """A claimed delivery until what came of it is written: its queue's lease, and its request's
    place in a Flight (None: not sent, for `unsent`)."""

    item: Claimed
    lease: datetime.datetime
    flight: Flight | None = None
    index: int = 0
    # Why it is not sent, for one with no flight.
    unsent: str = ""

    @property
    def outcome(self) -> Outcome | None:
        return self.flight.outcomes[self.index] if self.flight is not None else None


def prepare(batch: Batch) -> list[Held]:
    """Removes the queues the claim found empty, signs the claimed deliveries' requests and hands
    them to this process's sender (workers/webhook_send.py); those of a disabled endpoint are not
    sent."""
    if batch.empty_queues:
        with transaction.atomic(), connection.cursor() as cursor:
            lock_queue(cursor, exclusive=False)
            cursor.execute(sql.DROP_EMPTY, {"ids": batch.empty_queues, "lease": batch.lease})
    claimed = batch.deliveries
    if not claimed:
        return []
    now = timezone.now()
    endpoints = WebhookEndpoint.objects.in_bulk({c.endpoint_id for c in claimed})
    signers: dict[int, list[Webhook]] = {}
    timestamp = str(int(now.timestamp()))
    requests, held, sent = [], [], []
    for item in claimed:
        endpoint = endpoints.get(item.endpoint_id)
        if endpoint is None:
            continue  # deleted meanwhile: the delivery and its queue went with it
        if not endpoint.enabled:
            held.append(Held(item, batch.lease, unsent="the endpoint is disabled"))
            continue
        signer = signers.get(endpoint.pk)
        if signer is None:
            signer = signers[endpoint.pk] = [Webhook(secret) for secret in signing_secrets(endpoint, now)]
        signature = " ".join(one.sign(item.event_id, now, item.body) for one in signer)
        headers = {
            "webhook-id": item.event_id,
            "webhook-timestamp": timestamp,
            "webhook-signature": signature,
        }
        requests.append((endpoint.pk, endpoint.url, item.body.encode(), headers))
        sent.append(item)
    flight = start(requests)
    held.extend(Held(item, batch.lease, flight, index) for index, item in enumerate(sent))
    return held


def write(held: list[Held]) -> Counter:
    """Writes what came of the deliveries of `held` (each answered, failed, withdrawn or not
    sent): one attempt logged per request, each delivery delivered, retried later or failed, and
    its queue let go."""
    counts: Counter = Counter()
    if not held:
        return counts
    attempted_at = timezone.now()
    finished_at = attempted_at.timestamp()
    rng = random.Random()  # noqa: S311 (jitter, not secrecy)
    rows = []
    answered, failing = set(), set()
    leases: dict[datetime.datetime, str] = {}
    for entry in held:
        item, outcome = entry.item, entry.outcome
        row = [item.queue_id, item.id]
        if outcome is None:
            row += ["failed", None, None, 0, "", entry.unsent, False]
        elif outcome is WITHDRAWN:
            # Taken back before it was sent (the run ended, or its endpoint is slow and keeps only
            # SLOW_SHARE requests in flight): due again now, in its queue's order.
            row += ["pending", finished_at, None, 0, "", "", False]
            counts["withdrawn"] += 1
        elif outcome.delivered:
            answered.add(item.endpoint_id)
            row += ["delivered", None, outcome.status_code, outcome.latency_ms]
            row += [_text(outcome.excerpt), _text(outcome.error), True]
            counts["delivered"] += 1
        else:
            failing.add(item.endpoint_id)
            error = _text(outcome.error) or f"the endpoint answered HTTP {outcome.status_code}"
            retry_at = finished_at + backoff(item.attempts + 1, rng).total_seconds()
            if item.give_up_at is not None and retry_at > item.give_up_at:
                state, retry_at = "failed", None
                error = f"{error}; given up after {item.attempts + 1} attempts"
                counts["given_up"] += 1
            else:
                state = "pending"
                counts["retrying"] += 1
            row += [
                state,
                retry_at,
                outcome.status_code,
                outcome.latency_ms,
                _text(outcome.excerpt),
                error,
                True,
            ]
        lease = leases.get(entry.lease)
        if lease is None:
            lease = leases[entry.lease] = entry.lease.isoformat()
        row.append(lease)
        rows.append(row)
    params = {"at": attempted_at, "now": attempted_at, "rows": json.dumps(rows, separators=(",", ":"))}
    with transaction.atomic(), connection.cursor() as cursor:
        lock_queue(cursor, exclusive=False)
        cursor.execute(sql.WRITE, params)
        if answered:
            cursor.execute(sql.ENDPOINTS_ANSWERED, {"now": attempted_at, "ids": sorted(answered)})
        still_failing = sorted(failing - answered)
        if still_failing:
            cursor.execute(sql.ENDPOINTS_FAILING, {"now": attempted_at, "ids": still_failing})
            disabled = _disable(cursor, still_failing, attempted_at)
            counts["endpoints_disabled"] += len(disabled)
    return counts


def deliver_claimed(batch: Batch) -> Counter:
    """Signs and sends the claimed deliveries, then writes what came of them."""
    held = prepare(batch)
    for flight in _flights(held):
        wait(flight)
    return write(held)


def _text(value: str) -> str:
    """`value` as PostgreSQL's text takes it from JSON: no NUL, no lone surrogate."""
    if not value or (value.isascii() and "\x00" not in value):
        return value
    return value.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


def _disable(cursor, endpoint_ids: list[int], now: datetime.datetime) -> list[int]:
    """Disables the endpoints of `endpoint_ids` failing for WEBHOOK_DISABLE_AFTER_SECONDS; their
    owners are told once the transaction commits."""
    after = datetime.timedelta(seconds=settings.WEBHOOK_DISABLE_AFTER_SECONDS)
    reason = (
        f"No delivery was answered with a 2xx status for {_span(after)}; enable the endpoint again "
        "once it answers."
    )
    cursor.execute(sql.DISABLE, {"now": now, "ids": endpoint_ids, "since": now - after, "reason": reason})
    disabled = [row[0] for row in cursor.fetchall()]
    if disabled:
        cursor.execute(sql.FAIL_PENDING, {"ids": disabled, "reason": "the endpoint was disabled"})
        transaction.on_commit(lambda: _tell_owners(disabled))
    return disabled


def _span(delta: datetime.timedelta) -> str:
    days = delta.total_seconds() / 86400
    return f"{days:g} days" if days >= 1 else f"{delta.total_seconds() / 3600:g} hours"


def _tell_owners(endpoint_ids: list[int]) -> None:
    """One mail per disabled endpoint: to the app's owner, or to the operators (ADMINS) for a
    platform-wide one."""
    for endpoint in WebhookEndpoint.objects.filter(pk__in=endpoint_ids).select_related("app__owner"):
        subject = f"Webhook endpoint disabled: {endpoint.url}"
        body = (
            f"The webhook endpoint {endpoint.url}"
            + (f" of the app {endpoint.app.name}" if endpoint.app else " (platform-wide)")
            + f" was disabled.\n\n{endpoint.disabled_reason}\n\n"
            "Its pending deliveries were given up; events from now on are not sent to it until it is "
            "enabled again (API: POST .../webhooks/<id>/enable, CLI: certwright webhooks-enable).\n"
        )
        try:
            if endpoint.app is not None and endpoint.app.owner.email:
                send_mail(subject, body, None, [endpoint.app.owner.email])
            else:
                mail_admins(subject, body)
        except Exception:
            logger.exception("could not mail that webhook endpoint %s was disabled", endpoint.pk)


# --- a run ---------------------------------------------------------------------------------------


def deliver(budget_seconds: float = 50.0, more_hands=None) -> Counter:
    """Fans out and sends until nothing is due or `budget_seconds` have passed (then asks for
    another run, so that a backlog never waits for beat). `more_hands()` is called after each
    full batch: the task starts another run beside this one while there are fewer than
    WEBHOOK_PARALLEL_RUNS (a backlog is worked by several processes, each with its own
    WEBHOOK_CONCURRENCY requests in flight).

    A batch is written once its requests are answered, or once none was answered for
    STALL_SECONDS: those still in flight (an endpoint that is slow to answer) stay held, their
    queues leased, and are written by a later round when they end, while the run claims and sends
    the others'. An endpoint the sender finds slow (workers/webhook_send.py) keeps SLOW_SHARE
    requests in flight; the rest of its claimed ones are withdrawn (no attempt counted, due again
    at once), and it is claimed a few at a time, up to SLOW_SHARE held (any other endpoint up to
    WEBHOOK_CONCURRENCY held). At the run's end, requests not started are withdrawn (due again at
    once) and those in flight waited for."""
    started = time.monotonic()
    counts: Counter = Counter()
    held: list[Held] = []
    try:
        while True:
            events, deliveries, mails = dispatch()
            counts["events"] += events
            counts["fanned_out"] += deliveries
            counts["mails_queued"] += mails
            # (A claim beside requests held misses their queues, due again once they are written.)
            held_before = bool(held)
            batch = _claim_round(held)
            claimed = len(batch.deliveries) + len(batch.empty_queues)
            counts["claimed"] += len(batch.deliveries)
            if more_hands is not None and claimed >= settings.WEBHOOK_BATCH:
                more_hands()
            fresh = prepare(batch)
            held.extend(fresh)
            flight = next((entry.flight for entry in fresh if entry.flight is not None), None)
            if flight is not None:
                wait(flight, stall=STALL_SECONDS)
            elif held and not any(_ended(entry) for entry in held):
                # Only requests of earlier rounds in flight: a moment for one of them to end.
                event = progress()
                event.clear()
                if not any(_ended(entry) for entry in held):
                    event.wait(STALL_SECONDS)
            _withdraw_slow(held)
            ended, still = [], []
            for entry in held:
                (ended if _ended(entry) else still).append(entry)
            held = still
            if ended:
                counts.update(write(ended))
            if not claimed and not held_before and not held and events < DISPATCH_BATCH:
                return counts
            if time.monotonic() - started > budget_seconds:
                break
    except BaseException:
        # Not written: their leases run out and they are claimed again (at least once). Those not
        # started are taken back, so that no request goes out after the run gave up on it.
        with contextlib.suppress(Exception):
            for flight in _flights(held):
                withdraw(flight)
        raise
    # Out of time with requests still held: those not started are withdrawn (due again at once),
    # those in flight end within WEBHOOK_TIMEOUT_SECONDS; all are written.
    for flight in _flights(held):
        withdraw(flight)
        wait(flight)
    counts.update(write(held))
    deliver_webhooks_soon()  # outside a transaction: asked for at once
    return counts


def _ended(entry: Held) -> bool:
    return entry.flight is None or entry.outcome is not None


def _flights(held: list[Held]) -> list[Flight]:
    return list({id(entry.flight): entry.flight for entry in held if entry.flight is not None}.values())


def _claim_round(held: list[Held]) -> Batch:
    """A round's claim, filling the run up to WEBHOOK_BATCH held deliveries: of the endpoints the
    sender finds slow, as many as they may keep in flight (SLOW_SHARE) beside those held; of the
    others, any but an endpoint this run holds WEBHOOK_CONCURRENCY of already."""
    room = settings.WEBHOOK_BATCH - len(held)
    now = timezone.now()
    if room <= 0:
        return Batch([], now + LEASE, [])
    per_endpoint = Counter(entry.item.endpoint_id for entry in held)
    slow = slow_keys()
    full = {pk for pk, n in per_endpoint.items() if n >= settings.WEBHOOK_CONCURRENCY}
    batch = claim(now, room, skip=slow | full)
    for pk in sorted(slow - full):
        share = min(SLOW_SHARE - per_endpoint[pk], room - len(batch.deliveries) - len(batch.empty_queues))
        if share > 0:
            more = claim(now, share, endpoint=pk)
            batch.deliveries.extend(more.deliveries)
            batch.empty_queues.extend(more.empty_queues)
    return batch


def _withdraw_slow(held: list[Held]) -> None:
    """Takes back the requests of slow endpoints not started yet (the sender keeps SLOW_SHARE of
    theirs in flight): they are written as withdrawn, due again, and claimed a few at a time."""
    waiting = [entry for entry in held if entry.flight is not None and entry.outcome is None]
    if not waiting:
        return
    slow = slow_keys()
    if not slow:
        return
    for flight in _flights([entry for entry in waiting if entry.item.endpoint_id in slow]):
        withdraw(flight, slow)
