"""The ARI sweep: ask the CA when it wants each served Let's Encrypt certificate renewed (RFC 9773)
and schedule the renewal inside its window.

Beat's tick claims the certificates whose `ari_next_check` is due through the partial index
`certificate_ari_due_idx` with one UPDATE (SKIP LOCKED, so two sweeps never take the same row),
pushing `ari_next_check` forward as a lease, commits, and fans out chunks to the `dns` queue. The
lease's timestamp is the claim's token: a chunk writes only rows still carrying it. A chunk fetches
all its renewalInfo resources concurrently on one HTTP/1.1 keep-alive client, then writes every
answer with a constant number of statements:

- a window: stored with its explanation; `renew_at` becomes a uniformly random moment inside it (or
  now, if that has passed) when the window is new or moved, or when the renewal was scheduled after
  the window's end; a renewal already claimed, in flight, backing off after a failure or waiting for
  a quota token is left alone (RFC 9773 section 4.2: the client's error backoff still applies);
  when a window has already begun, the check task runs the renewal sweep at once, not at its tick;
- a failure (network, an HTTP error, a malformed answer) or a CA without ARI: `renew_at` is left
  as it is (the lifetime rule), `ari_error` says what happened;
- the next check: after the CA's Retry-After, clamped to between a minute and a day (RFC 9773
  section 4.3) and to at most ARI_CHECK_INTERVAL_SECONDS; after a temporary failure (network,
  5xx, 429), after the CA's Retry-After or ERROR_RETRY; after a lasting one (404, a malformed
  answer), after ARI_CHECK_INTERVAL_SECONDS;
- a certificate no longer worth asking about (custom, replaced, expired, revoked): no next check.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import random
import time
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from certificates.acme_client import USER_AGENT
from certificates.ari import (
    MAX_ANSWER_BYTES,
    MalformedRenewalInfo,
    parse_renewal_info,
    renewal_info_url,
    renewal_moment,
    retry_after,
)
from certificates.ari_schedule import checkable
from certificates.directory import DirectoryUnavailable, ca_tls_context, renewal_info_base
from certificates.histograms import ACME_REQUEST, observe_many
from certificates.issuers import issuer_of_url, tls_bundles
from certificates.models import ACTIVE_ORDER_STATES, Certificate
from domains.enqueue import check_renewal_info_later
from domains.quota_policy import when
from workers.poison import isolate_poison
from workers.process_loop import ProcessLoop
from workers.renewals import sweep_renewals

logger = logging.getLogger(__name__)

# Certificates per chunk task: a chunk's client opens ARI_CONCURRENCY TLS connections, which cost
# about as much as a hundred requests, so a chunk is large; yet it ends within its task's time
# limit (600 s) even if every request waits out its deadline (2000 / 64 x 15 s).
CHUNK = 2000
# How long a claimed certificate is left to its chunk task (longer than the task's time limit);
# past it, the sweep takes it again.
LEASE = datetime.timedelta(minutes=15)
# A request's timeout (connect, read, write, pool wait each), and its whole time at most: a server
# trickling its answer byte by byte gets no more.
TIMEOUT_SECONDS = 10.0
DEADLINE_SECONDS = 15.0
# After a temporary failure (network, a 5xx, a 429) for which the CA named no Retry-After.
ERROR_RETRY = datetime.timedelta(minutes=10)

_CLAIM = """
UPDATE certificates_certificate SET ari_next_check = %s
WHERE id IN (
    SELECT id FROM certificates_certificate
    WHERE ari_next_check IS NOT NULL AND ari_next_check <= %s
    ORDER BY ari_next_check
    LIMIT %s
    FOR UPDATE SKIP LOCKED
)
RETURNING id
"""

# The states spelled out, as in the partial unique index order_one_in_flight_per_domain, which
# then serves the NOT EXISTS.
_IN_FLIGHT = ", ".join(f"'{state.value}'" for state in ACTIVE_ORDER_STATES)

_WRITE_WINDOWS = f"""
UPDATE certificates_certificate AS c SET
    ari_window_start = v.window_start,
    ari_window_end = v.window_end,
    ari_explanation_url = v.explanation_url,
    ari_checked_at = %(now)s,
    ari_error = '',
    ari_next_check = v.next_check,
    renew_at = CASE
        WHEN c.renew_at IS NOT NULL AND c.renewal_claim IS NULL AND c.renewal_failures = 0
            AND c.renewal_reservation IS NULL
            AND (c.ari_window_start IS DISTINCT FROM v.window_start
                 OR c.ari_window_end IS DISTINCT FROM v.window_end
                 OR c.renew_at > v.window_end)
            AND NOT EXISTS (
                SELECT 1 FROM certificates_order o
                WHERE o.domain_id = c.domain_id AND o.state IN ({_IN_FLIGHT})
            )
        THEN v.moment ELSE c.renew_at END
FROM unnest(
    %(ids)s::bigint[], %(starts)s::timestamptz[], %(ends)s::timestamptz[], %(urls)s::text[],
    %(moments)s::timestamptz[], %(next_checks)s::timestamptz[]
) AS v(id, window_start, window_end, explanation_url, moment, next_check)
WHERE c.id = v.id AND c.ari_next_check = %(lease)s
RETURNING c.id, c.renew_at = v.moment
"""  # noqa: S608 (the states are this module's constants)

_WRITE_FAILURES = """
UPDATE certificates_certificate AS c SET ari_error = v.error, ari_next_check = v.next_check
FROM unnest(%(ids)s::bigint[], %(errors)s::text[], %(next_checks)s::timestamptz[])
    AS v(id, error, next_check)
WHERE c.id = v.id AND c.ari_next_check = %(lease)s
"""


def claim_due_checks(
    now: datetime.datetime | None = None, limit: int | None = None
) -> tuple[list[int], datetime.datetime]:
    """Claims up to `limit` certificates due for an ARI check, in one statement; returns their ids
    and the lease they now carry (the claim's token)."""
    now = now or timezone.now()
    limit = limit or settings.ARI_SWEEP_BATCH
    lease = now + LEASE
    with connection.cursor() as cursor:
        cursor.execute(_CLAIM, [lease, now, limit])
        ids = [row[0] for row in cursor.fetchall()]
    return ids, lease


def sweep_ari(now: datetime.datetime | None = None) -> int:
    """Claims every certificate due for an ARI check (in batches, up to ARI_SWEEP_MAX a tick) and
    sends their checks in chunks; returns how many were claimed."""
    now = now or timezone.now()
    claimed = 0
    while claimed < settings.ARI_SWEEP_MAX:
        batch = min(settings.ARI_SWEEP_BATCH, settings.ARI_SWEEP_MAX - claimed)
        with transaction.atomic():
            ids, lease = claim_due_checks(now, batch)
            for start in range(0, len(ids), CHUNK):
                check_renewal_info_later(ids[start : start + CHUNK], lease.isoformat())
        claimed += len(ids)
        if len(ids) < batch:
            break
    return claimed


def claim_now(ids: list[int], now: datetime.datetime) -> tuple[list[int], datetime.datetime]:
    """Claims these certificates for a check run inline (the operators' `ari_check --now`), whether
    due or not, taking them from any chunk that holds them (its late write is then dropped);
    returns those that exist, and the lease."""
    lease = now + LEASE
    claimed = list(Certificate.objects.filter(pk__in=ids).order_by("pk").values_list("pk", flat=True))
    Certificate.objects.filter(pk__in=claimed).update(ari_next_check=lease)
    return claimed, lease


@dataclass(frozen=True, slots=True)
class _Fetched:
    status: int  # 0: no HTTP answer (network); -1: nothing sent (an unusable URL)
    body: bytes
    retry_after: str | None
    problem: str = ""  # why there is no usable answer, when the transport says so


@dataclass(frozen=True, slots=True)
class _Window:
    start: datetime.datetime
    end: datetime.datetime
    explanation_url: str
    moment: datetime.datetime
    next_check: datetime.datetime


@dataclass(frozen=True, slots=True)
class _Failure:
    error: str
    next_check: datetime.datetime


def check_claimed(
    cert_ids: list[int], lease: datetime.datetime, now: datetime.datetime | None = None
) -> dict[str, int]:
    """Checks the renewal information of the certificates of `cert_ids` still claimed under `lease`:
    fetches every answer concurrently, then writes them all (a certificate whose write raises is
    set aside alone, isolate_poison). Returns counts: claimed, windows, rescheduled, failed,
    skipped."""
    fixed_now = now
    now = now or timezone.now()
    mine = Certificate.objects.filter(pk__in=cert_ids, ari_next_check=lease)
    # Nothing to ask about any more (custom, replaced, expired, revoked, no identifier): no next check.
    skipped = mine.exclude(checkable(now)).update(ari_next_check=None)
    rows = list(
        mine.filter(checkable(now)).order_by("pk").values_list("pk", "ari_cert_id", "account__directory_url")
    )
    counts = {"claimed": len(rows) + skipped, "windows": 0, "rescheduled": 0, "failed": 0, "skipped": skipped}
    if not rows:
        return counts
    interval = datetime.timedelta(seconds=settings.ARI_CHECK_INTERVAL_SECONDS)
    results: dict[int, _Window | _Failure] = {}
    to_fetch: list[tuple[int, str]] = []
    bases: dict[str, str | DirectoryUnavailable | None] = {}
    for pk, cert_id, directory_url in rows:
        directory_url = directory_url or settings.ACME_DIRECTORY_URL
        if directory_url not in bases:
            try:
                bases[directory_url] = renewal_info_base(directory_url)
            except DirectoryUnavailable as exc:
                bases[directory_url] = exc
        base = bases[directory_url]
        if isinstance(base, DirectoryUnavailable):
            results[pk] = _Failure(str(base), now + min(ERROR_RETRY, interval))
        elif base is None:
            # A CA without ARI: the lifetime rule stays, and the CA is asked again later.
            results[pk] = _Failure(
                "the CA offers no renewal information (no renewalInfo in its directory): "
                "renewal stays at its scheduled time",
                now + interval,
            )
        else:
            to_fetch.append((pk, renewal_info_url(base, cert_id)))
    if to_fetch:
        answers = _run_fetches([url for _, url in to_fetch])
        now = fixed_now or timezone.now()
        # Spreading renewals over a window needs uniformity, not secrecy.
        rng = random.Random()  # noqa: S311
        # The next check counts from the claim, not from the answer: at a cadence of one tick,
        # counting from the answer would land each check just after the tick that could take it,
        # and a 60 s interval would be asked every 120 s.
        claimed_at = min(now, lease - LEASE)
        for (pk, _), fetched in zip(to_fetch, answers, strict=True):
            results[pk] = _outcome(fetched, now, interval, rng, claimed_at)
    written = isolate_poison(
        [pk for pk, _, _ in rows],
        lambda ids: _write({pk: results[pk] for pk in ids}, lease, now),
        lambda pk, problem: _set_aside(pk, lease, problem, now + interval),
    )
    for key, value in written.items():
        counts[key] = counts.get(key, 0) + value
    return counts


def check_claimed_and_renew(cert_ids: list[int], lease: datetime.datetime) -> dict[str, int]:
    """check_claimed, then, when the CA wants some of them replaced now (a window already begun:
    a mass revocation ahead), the renewal sweep at once rather than at its next tick, up to a
    minute later."""
    counts = check_claimed(cert_ids, lease)
    if counts.get("due_now"):
        counts["renewals_claimed"] = sweep_renewals(timezone.now())
    return counts


def _outcome(
    fetched: _Fetched,
    now: datetime.datetime,
    interval: datetime.timedelta,
    rng: random.Random,
    claimed_at: datetime.datetime | None = None,
) -> _Window | _Failure:
    """What one answer means: a window and when to ask next, or a failure and when to try again."""
    status = fetched.status
    if status == 200 and not fetched.problem:
        try:
            info = parse_renewal_info(fetched.body)
        except MalformedRenewalInfo as exc:
            return _Failure(f"the CA's renewal information is malformed: {exc}", now + interval)
        wait = min(retry_after(fetched.retry_after, now, interval), interval)
        next_check = (claimed_at or now) + wait
        return _Window(info.start, info.end, info.explanation_url, renewal_moment(info, now, rng), next_check)
    if status == 0 or status == 429 or status >= 500:
        # Temporary (RFC 9773 section 4.3): soon again, but never hammering.
        wait = min(retry_after(fetched.retry_after, now, ERROR_RETRY), interval)
        what = fetched.problem or f"the CA answered HTTP {status}{_detail(fetched.body)}"
        return _Failure(f"the renewal information could not be fetched: {what}", now + wait)
    if status == 404:
        what = "the CA has no renewal information for this certificate (HTTP 404)"
    else:
        what = fetched.problem or f"the CA refused the request: HTTP {status}{_detail(fetched.body)}"
    return _Failure(what, now + interval)


def _detail(body: bytes) -> str:
    """The problem document's detail (RFC 7807), shortened, if the body is one."""
    try:
        detail = json.loads(body).get("detail")
    except (ValueError, AttributeError, RecursionError):
        return ""
    if not isinstance(detail, str) or not detail.strip():
        return ""
    detail = " ".join(detail.split())
    return f" ({detail[:200]}{'...' if len(detail) > 200 else ''})"


# The loop and session of this process (workers/process_loop.py): a sweep of many chunks opens
# ARI_CONCURRENCY connections per process, not per chunk.
_client = ProcessLoop("ARI")


def _run_fetches(urls: list[str]) -> list[_Fetched]:
    """_fetch_all on this process's loop and session."""
    return _client.run(lambda: _fetch_all(urls))


async def _session() -> aiohttp.ClientSession:
    """This process's session for the current settings (a change of the CA bundle or of the
    concurrency makes a new one)."""

    def make() -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            ssl=ca_tls_context(), limit=settings.ARI_CONCURRENCY, keepalive_timeout=60
        )
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=TIMEOUT_SECONDS, sock_read=TIMEOUT_SECONDS)
        return aiohttp.ClientSession(connector=connector, timeout=timeout, headers={"User-Agent": USER_AGENT})

    return await _client.session((tuple(tls_bundles()), settings.ARI_CONCURRENCY), make)


async def _fetch_all(urls: list[str]) -> list[_Fetched]:
    """GETs every URL over this process's pool of keep-alive HTTP/1.1 connections,
    ARI_CONCURRENCY at a time; the answers in the URLs' order.

    aiohttp rather than httpx: measured against the test ACME proxy on this project's 2-core
    machines, one httpx.AsyncClient holding 64 connections answered about 210 renewalInfo GETs a
    second (its pool costs milliseconds of CPU per request), 64 single-connection httpx clients
    about 750, and one aiohttp session about 2,700."""
    concurrency = settings.ARI_CONCURRENCY
    results: list[_Fetched | None] = [None] * len(urls)
    pending = iter(range(len(urls)))
    # HTTPS_PROXY and NO_PROXY apply as they do to the ACME client's requests, read once per host
    # here: aiohttp's trust_env reads them (and ~/.netrc) in a thread for every request, two
    # thread hand-offs a request that cost the chunk more than the requests themselves.
    proxies = urllib.request.getproxies()
    proxy_of: dict[str, str | None] = {}

    def proxy_for(url: str) -> str | None:
        try:
            parts = urlsplit(url)
            host = parts.hostname or ""
        except ValueError:
            return None  # no URL: _fetch says so for this certificate
        if host not in proxy_of:
            bypass = "no" in proxies and urllib.request.proxy_bypass_environment(host, proxies)
            proxy_of[host] = None if bypass else proxies.get(parts.scheme)
        return proxy_of[host]

    session = await _session()

    durations: list[float] = [0.0] * len(urls)

    async def fetcher() -> None:
        # Each takes the next URL when it is free: the shared iterator is the queue.
        for index in pending:
            started = time.monotonic()
            results[index] = await _fetch(session, urls[index], proxy_for(urls[index]))
            durations[index] = time.monotonic() - started

    await asyncio.gather(*(fetcher() for _ in range(min(concurrency, len(urls)))))
    # The request histogram, in one round trip to the broker for the whole chunk.
    observe_many(
        ACME_REQUEST,
        [
            (duration, (issuer_of_url(url), "renewalInfo", _status_label(fetched.status)))
            for url, fetched, duration in zip(urls, results, durations, strict=True)
            if fetched is not None and fetched.status != -1
        ],
    )
    return results  # type: ignore[return-value]


def _status_label(status: int) -> str:
    """The histogram's status: the HTTP status, or error when none came (a timeout, a refusal)."""
    return str(status) if status >= 100 else "error"


async def _fetch(
    session: aiohttp.ClientSession, url: str, proxy: str | None = None, again: bool = True
) -> _Fetched:
    try:
        async with (
            asyncio.timeout(DEADLINE_SECONDS),
            session.get(url, allow_redirects=False, proxy=proxy) as response,
        ):
            retry = response.headers.get("Retry-After")
            body = b""
            async for chunk in response.content.iter_chunked(16384):
                body += chunk
                if len(body) > MAX_ANSWER_BYTES:
                    return _Fetched(
                        response.status,
                        b"",
                        retry,
                        f"the CA's answer is larger than {MAX_ANSWER_BYTES // 1024} KiB",
                    )
            return _Fetched(response.status, body, retry)
    except aiohttp.InvalidURL as exc:
        # A CA's renewalInfo URL that is no URL: this certificate's failure, not the chunk's.
        return _Fetched(-1, b"", None, f"the renewal information URL {url!r} is not usable ({exc})")
    except aiohttp.ServerDisconnectedError as exc:
        if again:
            # A kept connection the CA closed meanwhile (connections outlive a chunk): once more.
            return await _fetch(session, url, proxy, again=False)
        return _Fetched(0, b"", None, _network_problem(exc))
    except aiohttp.ClientError as exc:
        return _Fetched(0, b"", None, _network_problem(exc))
    except TimeoutError:
        return _Fetched(0, b"", None, f"no whole answer within {DEADLINE_SECONDS:g} s")
    except ValueError as exc:
        return _Fetched(-1, b"", None, f"the renewal information URL {url!r} is not usable ({exc})")


def _network_problem(exc: aiohttp.ClientError) -> str:
    """What went wrong on the way to the CA, in plain words."""
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return "no answer in time"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"the CA's certificate is not trusted ({exc.certificate_error})"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect ({exc.os_error})" if exc.os_error else "cannot connect"
    return str(exc) or type(exc).__name__


def _write(results: dict[int, _Window | _Failure], lease: datetime.datetime, now: datetime.datetime) -> dict:
    windows = {pk: r for pk, r in results.items() if isinstance(r, _Window)}
    failures = {pk: r for pk, r in results.items() if isinstance(r, _Failure)}
    counts = {"windows": 0, "rescheduled": 0, "due_now": 0, "failed": 0}
    with transaction.atomic(), connection.cursor() as cursor:
        if windows:
            cursor.execute(
                _WRITE_WINDOWS,
                {
                    "now": now,
                    "lease": lease,
                    "ids": list(windows),
                    "starts": [w.start for w in windows.values()],
                    "ends": [w.end for w in windows.values()],
                    "urls": [w.explanation_url for w in windows.values()],
                    "moments": [w.moment for w in windows.values()],
                    "next_checks": [w.next_check for w in windows.values()],
                },
            )
            written = cursor.fetchall()
            counts["windows"] = len(written)
            counts["rescheduled"] = sum(1 for _, moved in written if moved)
            counts["due_now"] = sum(1 for pk, moved in written if moved and windows[pk].moment <= now)
        if failures:
            cursor.execute(
                _WRITE_FAILURES,
                {
                    "lease": lease,
                    "ids": list(failures),
                    "errors": [_message(f) for f in failures.values()],
                    "next_checks": [f.next_check for f in failures.values()],
                },
            )
            counts["failed"] = cursor.rowcount
    return counts


def _message(failure: _Failure) -> str:
    text = failure.error[0].upper() + failure.error[1:]
    return f"{text.rstrip('.')}. Next check at {when(failure.next_check)}."


def _set_aside(pk: int, lease: datetime.datetime, problem: str, next_check: datetime.datetime) -> None:
    Certificate.objects.filter(pk=pk, ari_next_check=lease).update(
        ari_error=f"Renewal information check failed: {problem}.", ari_next_check=next_check
    )
