"""Webhook delivery (issue 16): the outbox's events to the endpoints that want them, signed as
Standard Webhooks says, at least once, in order per domain, never to an address that is not public.

A run (workers/tasks/webhooks.py: asked for when a transaction writes events, and by beat as a
backstop) loops until nothing is due:

- fan-out: the events not yet dispatched become one delivery per endpoint that wants them (its app's
  and the platform's, enabled, of the types it names) and one waiting mail line per user mailed of
  them (workers/notification_mail.py sends those), and are marked dispatched, in one statement,
  by one run at a time (an advisory lock): two runs fanning out at once could commit a domain's
  later event before its earlier one;
- claim: pending deliveries that are due and first of their endpoint and domain (no pending one
  with a lower seq), with one UPDATE ... SKIP LOCKED that sets `lease_until` (the claim's token:
  only rows still carrying it are written; a column in no index, so the UPDATE writes no index);
- send: every claimed delivery POSTed concurrently (WEBHOOK_CONCURRENCY in flight) over one
  aiohttp session per worker process, whose resolver asks DNS_RESOLVERS and hands the connector
  only addresses that pass domains/webhook_targets.py (all of a name's addresses must), so the
  connection goes to the checked address with no second lookup; no redirect is followed; each
  request has WEBHOOK_TIMEOUT_SECONDS in all; at most EXCERPT_BYTES of the answer are read;
- write: one attempt row per POST, and per delivery: a 2xx delivers it, anything else schedules the
  next try with backoff (5 s, 30 s, 2 min, 5 min ... up to 8 h, jittered) until `give_up_at`
  (WEBHOOK_RETRY_SECONDS), then it is failed. An endpoint without a 2xx for
  WEBHOOK_DISABLE_AFTER_SECONDS is disabled, its pending deliveries failed, its owner told by mail.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import random
import socket
import time
from collections import Counter
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from django.conf import settings
from django.core.mail import mail_admins, send_mail
from django.db import connection, transaction
from django.utils import timezone
from standardwebhooks import Webhook

from certificates.acme_client import USER_AGENT
from domains.enqueue import deliver_webhooks_soon
from domains.notification_models import DEFAULT_EMAIL_EVENTS
from domains.webhook_models import EXCERPT_BYTES, WebhookEndpoint
from domains.webhook_targets import address_problem, host_problem, literal_address
from domains.webhooks import payload_of, signing_secrets
from workers.process_loop import ProcessLoop
from workers.resolver import Resolvers, lookup

logger = logging.getLogger(__name__)

# While a run holds a claimed delivery (longer than a batch can take: WEBHOOK_BATCH requests,
# WEBHOOK_CONCURRENCY at a time, each WEBHOOK_TIMEOUT_SECONDS at most, at the defaults 160 s).
LEASE = datetime.timedelta(minutes=5)
# The waits after the 1st, 2nd ... failure; the last repeats until the delivery is given up.
BACKOFF_SECONDS = (5, 30, 120, 300, 900, 1800, 3600, 7200, 14400, 28800)
# Events fanned out per statement.
DISPATCH_BATCH = 2000
# pg_try_advisory_xact_lock's key for the fan-out (any constant the product uses nowhere else).
DISPATCH_LOCK = 0x6365727477656268

_DISPATCH = """
WITH ev AS (
    SELECT id, seq, app_id, domain_id, type FROM domains_event
    WHERE NOT dispatched
    ORDER BY seq
    LIMIT %(limit)s
), fan AS (
    INSERT INTO domains_webhookdelivery (
        endpoint_id, event_id, seq, domain_id, state, attempts, next_attempt_at, give_up_at, created,
        last_error
    )
    SELECT e.id, ev.id, ev.seq, ev.domain_id, 'pending', 0, %(now)s, %(give_up_at)s, %(now)s, ''
    FROM ev JOIN domains_webhookendpoint e
        ON e.enabled AND (e.app_id = ev.app_id OR e.app_id IS NULL)
        AND (cardinality(e.event_types) = 0 OR ev.type = ANY(e.event_types))
    ON CONFLICT (endpoint_id, event_id) DO NOTHING
    RETURNING 1
), told AS (
    -- Who hears of an event by mail: the app's owner, and staff users who asked for every app's.
    SELECT ev.id AS event_id, ev.seq, ev.type, a.owner_id AS user_id
    FROM ev JOIN domains_app a ON a.id = ev.app_id
    UNION
    SELECT ev.id, ev.seq, ev.type, s.user_id
    FROM ev CROSS JOIN domains_notificationsettings s JOIN auth_user staff ON staff.id = s.user_id
    WHERE s.all_apps AND staff.is_staff
), mails AS (
    INSERT INTO domains_emailnotification (user_id, event_id, seq, created)
    SELECT t.user_id, t.event_id, t.seq, %(now)s
    FROM told t JOIN auth_user u ON u.id = t.user_id AND u.is_active AND u.email <> ''
    LEFT JOIN domains_notificationsettings s ON s.user_id = t.user_id
    WHERE CASE WHEN s.user_id IS NULL THEN t.type = ANY(%(default_mail_types)s)
          ELSE s.email_enabled AND t.type = ANY(s.event_types) END
    ON CONFLICT (user_id, event_id) DO NOTHING
    RETURNING 1
), marked AS (
    UPDATE domains_event SET dispatched = true FROM ev WHERE domains_event.id = ev.id RETURNING 1
)
SELECT (SELECT count(*) FROM marked), (SELECT count(*) FROM fan), (SELECT count(*) FROM mails)
"""

_CLAIM = """
WITH claimed AS (
    UPDATE domains_webhookdelivery AS w SET lease_until = %(lease)s
    FROM (
        SELECT d.id FROM domains_webhookdelivery d
        WHERE d.state = 'pending' AND d.next_attempt_at <= %(now)s
          AND (d.lease_until IS NULL OR d.lease_until <= %(now)s)
          AND NOT EXISTS (
              SELECT 1 FROM domains_webhookdelivery first
              WHERE first.state = 'pending' AND first.endpoint_id = d.endpoint_id
                AND first.domain_id = d.domain_id AND first.seq < d.seq
          )
        ORDER BY d.next_attempt_at
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ) AS due
    WHERE w.id = due.id
    RETURNING w.id, w.endpoint_id, w.event_id, w.attempts, w.give_up_at
)
SELECT c.id, c.endpoint_id, c.event_id, c.attempts, c.give_up_at,
    e.id, e.type, e.created, e.seq, e.app_name, e.domain_name, e.from_status, e.to_status, e.reason,
    e.records, e.data
FROM claimed c CROSS JOIN LATERAL (
    SELECT * FROM domains_event WHERE domains_event.id = c.event_id
) AS e
"""

_WRITE = """
UPDATE domains_webhookdelivery AS d SET
    state = v.state,
    attempts = d.attempts + 1,
    next_attempt_at = v.next_attempt_at,
    lease_until = NULL,
    delivered_at = CASE WHEN v.state = 'delivered' THEN %(now)s ELSE d.delivered_at END,
    last_status_code = v.status_code,
    last_error = v.error
FROM unnest(
    %(ids)s::bigint[], %(states)s::text[], %(next)s::timestamptz[], %(codes)s::int[], %(errors)s::text[]
) AS v(id, state, next_attempt_at, status_code, error)
WHERE d.id = v.id AND d.lease_until = %(lease)s
"""

_LOG_ATTEMPTS = """
INSERT INTO domains_webhookattempt (delivery_id, at, status_code, latency_ms, response_excerpt, error)
SELECT v.id, %(at)s, v.code, v.latency, v.excerpt, v.error
FROM unnest(
    %(ids)s::bigint[], %(codes)s::int[], %(latencies)s::int[], %(excerpts)s::text[], %(errors)s::text[]
) AS v(id, code, latency, excerpt, error)
-- A delivery deleted meanwhile (its endpoint removed during the send) has no log to add to.
JOIN domains_webhookdelivery d ON d.id = v.id
"""

_ENDPOINTS_ANSWERED = """
UPDATE domains_webhookendpoint SET last_success_at = %(now)s, failing_since = NULL
WHERE id = ANY(%(ids)s)
"""

_ENDPOINTS_FAILING = """
UPDATE domains_webhookendpoint SET failing_since = %(now)s
WHERE id = ANY(%(ids)s) AND failing_since IS NULL
"""

_DISABLE = """
UPDATE domains_webhookendpoint SET enabled = false, disabled_at = %(now)s, disabled_reason = %(reason)s
WHERE id = ANY(%(ids)s) AND enabled AND failing_since <= %(since)s
RETURNING id
"""

_FAIL_PENDING = """
UPDATE domains_webhookdelivery SET state = 'failed', next_attempt_at = NULL, lease_until = NULL,
    last_error = %(reason)s
WHERE endpoint_id = ANY(%(ids)s) AND state = 'pending'
"""


class RefusedAddress(OSError):
    """A destination that resolves to an address webhooks are not sent to."""


@dataclass(frozen=True, slots=True)
class Claimed:
    id: int
    endpoint_id: int
    event_id: str
    attempts: int
    give_up_at: datetime.datetime | None
    # The event's columns, in payload_of's order.
    event: tuple


@dataclass(frozen=True, slots=True)
class Outcome:
    status_code: int | None
    latency_ms: int
    excerpt: str
    error: str

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


# --- the fan-out and the claim -------------------------------------------------------------------


def dispatch(now: datetime.datetime | None = None, limit: int = DISPATCH_BATCH) -> tuple[int, int, int]:
    """Fans out up to `limit` undispatched events to the webhook endpoints and the users mailed of
    them (domains/notification_models.py); returns (events, deliveries, mails) written, all 0
    when another run holds the fan-out."""
    now = now or timezone.now()
    give_up_at = now + datetime.timedelta(seconds=settings.WEBHOOK_RETRY_SECONDS)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [DISPATCH_LOCK])
        if not cursor.fetchone()[0]:
            return 0, 0, 0
        cursor.execute(
            _DISPATCH,
            {
                "limit": limit,
                "now": now,
                "give_up_at": give_up_at,
                "default_mail_types": list(DEFAULT_EMAIL_EVENTS),
            },
        )
        events, deliveries, mails = cursor.fetchone()
    return events, deliveries, mails


def claim(
    now: datetime.datetime | None = None, limit: int | None = None
) -> tuple[list[Claimed], datetime.datetime]:
    """Claims up to `limit` due deliveries, each the first pending one of its endpoint and domain."""
    now = now or timezone.now()
    lease = now + LEASE
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_CLAIM, {"now": now, "lease": lease, "limit": limit or settings.WEBHOOK_BATCH})
        # Django reads jsonb as text (its JSONField parses): the last two columns are JSON.
        rows = [
            Claimed(*row[:5], event=(*row[5:-2], _json(row[-2]), _json(row[-1]))) for row in cursor.fetchall()
        ]
    return rows, lease


def _json(value):
    return json.loads(value) if isinstance(value, str | bytes) else value


# --- sending -------------------------------------------------------------------------------------


class CheckedResolver(AbstractResolver):
    """aiohttp's resolver for webhooks: a name's addresses through DNS_RESOLVERS, handed to the
    connector only when every one of them passes the address rule; so the connection goes to a
    checked address, with no other lookup. (aiohttp asks no resolver for an address written in
    the URL: send() checks those itself, with domains.webhook_targets.host_problem.)"""

    def __init__(self) -> None:
        self._resolvers: Resolvers | None = None

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[ResolveResult]:
        if self._resolvers is None:
            self._resolvers = Resolvers()
            await self._resolvers.__aenter__()
        found = await lookup(self._resolvers, host)
        if found.error:
            raise OSError(f"the name {host} could not be resolved ({found.error})")
        if found.nxdomain or not (found.a or found.aaaa):
            raise OSError(f"the name {host} has no address")
        addresses = [literal_address(a) for a in (*found.a, *found.aaaa)]
        for address in addresses:
            problem = address_problem(address, settings.WEBHOOK_ALLOWED_NETWORKS)
            if problem:
                raise RefusedAddress(f"refused: {host} resolves to {problem}")
        return [
            {
                "hostname": host,
                "host": str(address),
                "port": port,
                "family": socket.AF_INET if address.version == 4 else socket.AF_INET6,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for address in addresses
        ]

    async def close(self) -> None:
        if self._resolvers is not None:
            resolvers, self._resolvers = self._resolvers, None
            await resolvers.__aexit__(None, None, None)


def destination_problem(url: str) -> str | None:
    """Why webhooks would be refused at this URL's host now (its name resolved through
    DNS_RESOLVERS), or None: for the API and the admin to refuse an endpoint at creation when they
    can. A name that does not resolve is not refused (its record may come later); every send
    checks again."""
    host = urlsplit(url).hostname or ""
    if literal_address(host) is not None:
        return host_problem(host, settings.WEBHOOK_ALLOWED_NETWORKS)

    async def run() -> str | None:
        resolver = CheckedResolver()
        try:
            await resolver.resolve(host, 0)
        except RefusedAddress as exc:
            return str(exc).removeprefix("refused: ")
        except OSError:
            return None
        finally:
            await resolver.close()
        return None

    return asyncio.run(run())


# The loop and session of this process (workers/process_loop.py): keep-alive connections to the
# receivers outlive a batch.
_client = ProcessLoop("webhook")


async def _session() -> aiohttp.ClientSession:
    def make() -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            resolver=CheckedResolver(),
            limit=settings.WEBHOOK_CONCURRENCY,
            # Names are re-resolved (and re-checked) for every new connection.
            use_dns_cache=False,
            keepalive_timeout=30,
        )
        return aiohttp.ClientSession(
            connector=connector,
            headers={"User-Agent": USER_AGENT, "Content-Type": "application/json"},
            # Never the environment's proxies nor ~/.netrc: the request goes where it was checked.
            trust_env=False,
        )

    return await _client.session(settings.WEBHOOK_CONCURRENCY, make)


def _literal_problem(url: str) -> str | None:
    """Why an address written in the URL is refused: aiohttp connects to an address literal
    without asking any resolver, so CheckedResolver never sees it."""
    try:
        problem = host_problem(urlsplit(url).hostname or "", settings.WEBHOOK_ALLOWED_NETWORKS)
    except ValueError:
        return None
    return f"refused: {problem}" if problem else None


async def _post(session: aiohttp.ClientSession, url: str, body: bytes, headers: dict) -> Outcome:
    started = time.perf_counter()

    def ms() -> int:
        return round((time.perf_counter() - started) * 1000)

    try:
        async with asyncio.timeout(settings.WEBHOOK_TIMEOUT_SECONDS):
            async with session.post(url, data=body, headers=headers, allow_redirects=False) as response:
                excerpt = await response.content.read(EXCERPT_BYTES)
                return Outcome(response.status, ms(), excerpt.decode("utf-8", "replace"), "")
    except TimeoutError:
        return Outcome(None, ms(), "", f"no answer within {settings.WEBHOOK_TIMEOUT_SECONDS:g} s")
    except aiohttp.ClientConnectorError as exc:
        cause = exc.os_error
        if isinstance(cause, RefusedAddress):
            return Outcome(None, ms(), "", str(cause))
        return Outcome(None, ms(), "", f"cannot connect ({cause.strerror or cause})")
    except aiohttp.ClientError as exc:
        return Outcome(None, ms(), "", str(exc) or type(exc).__name__)
    except (OSError, ValueError) as exc:
        return Outcome(None, ms(), "", str(exc) or type(exc).__name__)


def send(requests: list[tuple[str, bytes, dict]]) -> list[Outcome]:
    """POSTs every (url, body, headers), WEBHOOK_CONCURRENCY at a time; outcomes in order."""
    refused = {url: _literal_problem(url) for url in {url for url, _, _ in requests}}

    async def run() -> list[Outcome]:
        session = await _session()
        results: list[Outcome | None] = [None] * len(requests)
        pending = iter(range(len(requests)))

        async def worker() -> None:
            for index in pending:
                url, body, headers = requests[index]
                problem = refused[url]
                results[index] = (
                    Outcome(None, 0, "", problem) if problem else await _post(session, url, body, headers)
                )

        await asyncio.gather(*(worker() for _ in range(min(settings.WEBHOOK_CONCURRENCY, len(requests)))))
        return results  # type: ignore[return-value]

    return _client.run(run)


# --- one batch -----------------------------------------------------------------------------------


def backoff(failures: int, rng: random.Random) -> datetime.timedelta:
    """The wait after the `failures`-th failure, jittered by up to a tenth either way."""
    base = BACKOFF_SECONDS[min(failures, len(BACKOFF_SECONDS)) - 1]
    return datetime.timedelta(seconds=base * rng.uniform(0.9, 1.1))


def deliver_claimed(claimed: list[Claimed], lease: datetime.datetime) -> Counter:
    """Signs and sends the claimed deliveries, then writes what came of them."""
    counts: Counter = Counter()
    if not claimed:
        return counts
    now = timezone.now()
    endpoints = WebhookEndpoint.objects.in_bulk({c.endpoint_id for c in claimed})
    bodies: dict = {}
    signers: dict[int, list[Webhook]] = {}
    timestamp = str(int(now.timestamp()))
    requests, sent = [], []
    skipped: dict[int, str] = {}
    for item in claimed:
        endpoint = endpoints.get(item.endpoint_id)
        if endpoint is None:
            continue  # deleted meanwhile: the delivery went with it
        if not endpoint.enabled:
            skipped[item.id] = "the endpoint is disabled"
            continue
        body = bodies.get(item.event_id)
        if body is None:
            body = bodies[item.event_id] = json.dumps(payload_of(*item.event), separators=(",", ":"))
        if endpoint.pk not in signers:
            signers[endpoint.pk] = [Webhook(secret) for secret in signing_secrets(endpoint, now)]
        msg_id = str(item.event_id)
        signature = " ".join(signer.sign(msg_id, now, body) for signer in signers[endpoint.pk])
        headers = {"webhook-id": msg_id, "webhook-timestamp": timestamp, "webhook-signature": signature}
        requests.append((endpoint.url, body.encode(), headers))
        sent.append(item)
    outcomes = send(requests) if requests else []
    finished = timezone.now()
    rng = random.Random()  # noqa: S311 (jitter, not secrecy)
    ids, states, nexts, codes, errors = [], [], [], [], []
    answered, failing = set(), set()
    for item, outcome in zip(sent, outcomes, strict=True):
        ids.append(item.id)
        codes.append(outcome.status_code)
        if outcome.delivered:
            answered.add(item.endpoint_id)
            states.append("delivered")
            nexts.append(None)
            errors.append("")
            counts["delivered"] += 1
            continue
        failing.add(item.endpoint_id)
        error = outcome.error or f"the endpoint answered HTTP {outcome.status_code}"
        retry_at = finished + backoff(item.attempts + 1, rng)
        if item.give_up_at is not None and retry_at > item.give_up_at:
            states.append("failed")
            nexts.append(None)
            errors.append(f"{error}; given up after {item.attempts + 1} attempts")
            counts["given_up"] += 1
        else:
            states.append("pending")
            nexts.append(retry_at)
            errors.append(error)
            counts["retrying"] += 1
    for delivery_id, why in skipped.items():
        ids.append(delivery_id)
        states.append("failed")
        nexts.append(None)
        codes.append(None)
        errors.append(why)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            _LOG_ATTEMPTS,
            {
                "at": now,
                "ids": [item.id for item in sent],
                "codes": [outcome.status_code for outcome in outcomes],
                "latencies": [outcome.latency_ms for outcome in outcomes],
                "excerpts": [outcome.excerpt.replace("\x00", "") for outcome in outcomes],
                "errors": [outcome.error for outcome in outcomes],
            },
        )
        cursor.execute(
            _WRITE,
            {
                "now": finished,
                "lease": lease,
                "ids": ids,
                "states": states,
                "next": nexts,
                "codes": codes,
                "errors": errors,
            },
        )
        if answered:
            cursor.execute(_ENDPOINTS_ANSWERED, {"now": finished, "ids": sorted(answered)})
        still_failing = sorted(failing - answered)
        if still_failing:
            cursor.execute(_ENDPOINTS_FAILING, {"now": finished, "ids": still_failing})
            disabled = _disable(cursor, still_failing, finished)
            counts["endpoints_disabled"] += len(disabled)
    return counts


def _disable(cursor, endpoint_ids: list[int], now: datetime.datetime) -> list[int]:
    """Disables the endpoints of `endpoint_ids` failing for WEBHOOK_DISABLE_AFTER_SECONDS; their
    owners are told once the transaction commits."""
    after = datetime.timedelta(seconds=settings.WEBHOOK_DISABLE_AFTER_SECONDS)
    reason = (
        f"No delivery was answered with a 2xx status for {_span(after)}; enable the endpoint again "
        "once it answers."
    )
    cursor.execute(_DISABLE, {"now": now, "ids": endpoint_ids, "since": now - after, "reason": reason})
    disabled = [row[0] for row in cursor.fetchall()]
    if disabled:
        cursor.execute(_FAIL_PENDING, {"ids": disabled, "reason": "the endpoint was disabled"})
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
    WEBHOOK_CONCURRENCY requests in flight)."""
    started = time.monotonic()
    counts: Counter = Counter()
    while True:
        events, deliveries, mails = dispatch()
        counts["events"] += events
        counts["fanned_out"] += deliveries
        counts["mails_queued"] += mails
        claimed, lease = claim()
        counts["claimed"] += len(claimed)
        if more_hands is not None and len(claimed) >= settings.WEBHOOK_BATCH:
            more_hands()
        counts.update(deliver_claimed(claimed, lease))
        if not claimed and events < DISPATCH_BATCH:
            return counts
        if time.monotonic() - started > budget_seconds:
            deliver_webhooks_soon()  # outside a transaction: asked for at once
            return counts
