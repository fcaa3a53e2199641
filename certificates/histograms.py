"""Histograms any process observes (a worker's ACME requests, the step that serves a domain's first
certificate) and any web process's `/metrics` exposes. Their counts are summed in the broker's
Redis, one hash per histogram, so a scrape sees every process's observations on every machine (as
prometheus-client's multiprocess mode would on one machine only).

A field is `<label values>|<bucket index>` (the count of observations in that bucket, not
cumulative; the index after the last bound is +Inf) or `<label values>|sum`. Label values come
from fixed sets (issuer names, the ACME endpoints below, HTTP statuses), so the hashes stay small.
Counters restart at zero if the broker's Redis loses its data; Prometheus' rate() allows for that.

Observing never slows or fails the work it measures: with Redis unreachable, this process stops
observing for PAUSE_SECONDS and says so once in its log.
"""

from __future__ import annotations

import bisect
import logging
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import redis
from django.conf import settings

logger = logging.getLogger(__name__)

KEY_PREFIX = "certwright:histogram:"
PAUSE_SECONDS = 30
# How long an observation may wait on Redis before it is dropped.
TIMEOUT_SECONDS = 0.25


@dataclass(frozen=True)
class Histogram:
    name: str
    help: str
    labels: tuple[str, ...]
    # Upper bounds, ascending; +Inf follows the last.
    buckets: tuple[float, ...]

    @property
    def key(self) -> str:
        return KEY_PREFIX + self.name


ACME_REQUEST = Histogram(
    "certwright_acme_request_duration_seconds",
    "Duration of the HTTP requests the workers sent to each issuer's ACME API, by endpoint and "
    "HTTP status (error: no answer, such as a timeout or a refused connection).",
    ("issuer", "endpoint", "status"),
    (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
TIME_TO_IN_USE = Histogram(
    "certwright_time_to_in_use_seconds",
    "Seconds from a domain being added to its first certificate from a CA being served (In use): "
    "the DNS wait included.",
    (),
    (30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 12 * 3600, 86400, 7 * 86400),
)
HISTOGRAMS = (ACME_REQUEST, TIME_TO_IN_USE)

# RFC 8555's resources, as the CAs' paths name them (Let's Encrypt's /acme/new-order, Pebble's
# /order-plz, ...): the first whose fragment the lowercased path holds. Anything else is "other".
ENDPOINTS = (
    ("newNonce", ("new-nonce", "nonce-plz")),
    ("newAccount", ("new-acct", "new-account", "sign-me-up")),
    ("newOrder", ("new-order", "order-plz")),
    ("renewalInfo", ("renewal-info", "renewalinfo")),
    ("revokeCert", ("revoke-cert",)),
    ("keyChange", ("key-change", "rollover")),
    ("finalize", ("finalize",)),
    ("challenge", ("chal",)),
    ("authorization", ("authz",)),
    ("certificate", ("cert",)),
    ("order", ("order",)),
    ("account", ("acct", "account")),
    ("directory", ("dir",)),
)


def endpoint_of(url: str) -> str:
    path = urlsplit(url).path.lower()
    for endpoint, fragments in ENDPOINTS:
        if any(fragment in path for fragment in fragments):
            return endpoint
    return "other"


_client: redis.Redis | None = None
_paused_until = 0.0


def _redis() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(
            settings.CELERY_BROKER_URL, socket_connect_timeout=TIMEOUT_SECONDS, socket_timeout=TIMEOUT_SECONDS
        )
    return _client


def forget_client() -> None:
    """Tests: the next observation connects to the broker the settings name then."""
    global _client, _paused_until
    _client = None
    _paused_until = 0.0


def observe(histogram: Histogram, value: float, labels: tuple[str, ...] = ()) -> None:
    observe_many(histogram, [(value, labels)])


def observe_many(histogram: Histogram, observations: list[tuple[float, tuple[str, ...]]]) -> None:
    """Adds each (value, label values) to `histogram`, in one round trip."""
    global _paused_until
    if not observations or time.monotonic() < _paused_until:
        return
    counts: dict[str, int] = {}
    sums: dict[str, float] = {}
    for value, labels in observations:
        if len(labels) != len(histogram.labels):
            raise ValueError(f"{histogram.name} takes the labels {histogram.labels}, not {labels}")
        prefix = "|".join(labels)
        field = f"{prefix}|{bisect.bisect_left(histogram.buckets, value)}"
        counts[field] = counts.get(field, 0) + 1
        sums[prefix] = sums.get(prefix, 0.0) + value
    try:
        with _redis().pipeline(transaction=False) as pipe:
            for field, count in counts.items():
                pipe.hincrby(histogram.key, field, count)
            for prefix, total in sums.items():
                pipe.hincrbyfloat(histogram.key, f"{prefix}|sum", total)
            pipe.execute()
    except redis.RedisError as exc:
        _paused_until = time.monotonic() + PAUSE_SECONDS
        logger.warning(
            "%s: the broker's Redis did not take an observation (%s); none for %d s",
            histogram.name,
            type(exc).__name__,
            PAUSE_SECONDS,
        )


@dataclass
class Series:
    """One label set's cumulative buckets ((bound, count) up to +Inf) and sum."""

    labels: tuple[str, ...]
    buckets: list[tuple[str, float]]
    total: float


def read_all(client: redis.Redis) -> dict[str, list[Series]] | None:
    """Every histogram's series, by name (None: the broker did not answer)."""
    try:
        with client.pipeline(transaction=False) as pipe:
            for histogram in HISTOGRAMS:
                pipe.hgetall(histogram.key)
            hashes = pipe.execute()
    except redis.RedisError:
        return None
    return {
        histogram.name: _series(histogram, fields)
        for histogram, fields in zip(HISTOGRAMS, hashes, strict=True)
    }


def _series(histogram: Histogram, fields: dict[bytes, bytes]) -> list[Series]:
    counts: dict[tuple[str, ...], list[int]] = {}
    sums: dict[tuple[str, ...], float] = {}
    size = len(histogram.buckets) + 1
    for field, value in fields.items():
        prefix, _, slot = field.decode().rpartition("|")
        labels = tuple(prefix.split("|")) if histogram.labels else ()
        if len(labels) != len(histogram.labels):
            continue
        if slot == "sum":
            sums[labels] = float(value)
        elif slot.isdigit() and int(slot) < size:
            counts.setdefault(labels, [0] * size)[int(slot)] += int(value)
    bounds = [_bound(b) for b in histogram.buckets] + ["+Inf"]
    out = []
    for labels in sorted(counts):
        running = 0
        cumulative = []
        for bound, count in zip(bounds, counts[labels], strict=True):
            running += count
            cumulative.append((bound, running))
        out.append(Series(labels, cumulative, sums.get(labels, 0.0)))
    return out


def _bound(value: float) -> str:
    return repr(float(value))
