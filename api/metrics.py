"""`GET /metrics`: what an operator alerts on, through prometheus-client (a custom collector), in
Prometheus' text format or OpenMetrics, as the scraper's Accept header asks.

Every figure is read at scrape time from PostgreSQL and the broker's Redis, so any web process
answers the same. A scrape costs a constant number of statements, each through an index or over
a table once: 0.4 to 0.5 s at a million domains and certificates, up to 0.9 s at two million
(bench/renewal_sweep.py), so scrape every 30 to 60 s. No domain name or other customer data
appears: counts and ages only.
"""

from __future__ import annotations

import datetime
import time

import redis
from django.conf import settings
from django.db import connection
from django.utils import timezone
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import choose_encoder

from certificates.histograms import HISTOGRAMS, Series, read_all
from certificates.issuers import configured as configured_issuers
from certificates.issuers import sync_issuers
from certificates.models import ACTIVE_ORDER_STATES, CertificateSource, expiring_window
from domains.models import SWEPT_STATUSES, DomainStatus, WaitingOn
from workers.models import Heartbeat

QUEUES = ("dns", "acme", "default")
# The statuses whose domains wait on something (certwright_domains_waiting).
WAITING_STATUSES = (
    DomainStatus.PENDING_DNS,
    DomainStatus.CREATING,
    DomainStatus.ACTION_REQUIRED,
    DomainStatus.FAILING,
)
EXPIRY_WINDOWS = {"1d": 1, "7d": 7, "30d": 30}

# Domains whose last servable certificate ends within the window (nothing valid after it): the
# certificates ending within the longest window, through certificate_expiry_idx, each kept only if
# no servable certificate of its domain outlives it.
_EXPIRING_SQL = """
SELECT c.not_before, c.not_after
FROM certificates_certificate c JOIN domains_domain d ON d.id = c.domain_id
WHERE c.source IN (%(custom)s, %(letsencrypt)s) AND c.not_after > %(now)s AND c.not_after <= %(until)s
  AND c.not_before <= %(now)s AND (c.source = %(custom)s OR d.letsencrypt_enabled)
  AND NOT EXISTS (
    SELECT 1 FROM certificates_certificate n
    WHERE n.domain_id = c.domain_id AND n.not_after > c.not_after AND n.not_before <= %(now)s
      AND (n.source = %(custom)s OR d.letsencrypt_enabled)
  )
"""


class Families:
    """The scrape's gauges, in the order they are added (prometheus-client writes them)."""

    def __init__(self) -> None:
        self.families: list = []

    def metric(self, name: str, help_text: str, samples: list[tuple[dict[str, str], float]]) -> None:
        names = list(samples[0][0]) if samples else []
        family = GaugeMetricFamily(name, help_text, labels=names)
        for labels, value in samples:
            family.add_metric([labels[key] for key in names], value)
        self.families.append(family)


def queue_lengths(client: redis.Redis | None = None) -> dict[str, int | None]:
    """Each Celery queue's length (None: the broker did not answer)."""
    own = client is None
    if own:
        timeout = settings.HEALTH_CHECK_TIMEOUT_SECONDS
        client = redis.Redis.from_url(
            settings.CELERY_BROKER_URL, socket_connect_timeout=timeout, socket_timeout=timeout
        )
    try:
        with client.pipeline(transaction=False) as pipe:
            for queue in QUEUES:
                pipe.llen(queue)
            return dict(zip(QUEUES, pipe.execute(), strict=True))
    except redis.RedisError:
        return dict.fromkeys(QUEUES)
    finally:
        if own:
            client.close()


def _from_broker() -> tuple[dict[str, int | None], dict[str, list[Series]] | None]:
    """Each queue's length and the histograms summed in the broker (None: it did not answer)."""
    timeout = settings.HEALTH_CHECK_TIMEOUT_SECONDS
    client = redis.Redis.from_url(
        settings.CELERY_BROKER_URL, socket_connect_timeout=timeout, socket_timeout=timeout
    )
    try:
        lengths = queue_lengths(client)
        return lengths, (read_all(client) if any(v is not None for v in lengths.values()) else None)
    finally:
        client.close()


def _histograms(series: dict[str, list[Series]] | None) -> list[HistogramMetricFamily]:
    """Each histogram, with its series (none yet, or the broker did not answer: no samples)."""
    families = []
    for histogram in HISTOGRAMS:
        family = HistogramMetricFamily(histogram.name, histogram.help, labels=list(histogram.labels))
        for one in (series or {}).get(histogram.name, []):
            family.add_metric(list(one.labels), one.buckets, one.total)
        families.append(family)
    return families


def _breaker_value(open_until: datetime.datetime | None, now: datetime.datetime) -> float:
    if open_until is None:
        return 0
    return 1 if open_until > now else 0.5


class Collector:
    """prometheus-client's custom collector: every figure read afresh at each scrape."""

    def __init__(self, now: datetime.datetime | None = None) -> None:
        self.now = now

    def collect(self):
        started = time.monotonic()
        families = _gauges(self.now or timezone.now())
        lengths, series = _from_broker()
        families.metric(
            "certwright_queue_length",
            "Tasks waiting in each Celery queue (-1: the broker did not answer).",
            [({"queue": queue}, -1 if length is None else length) for queue, length in lengths.items()],
        )
        yield from families.families
        yield from _histograms(series)
        scrape = GaugeMetricFamily(
            "certwright_metrics_scrape_seconds", "How long this answer took to compute."
        )
        scrape.add_metric([], round(time.monotonic() - started, 6))
        yield scrape


def exposition(accept: str = "", now: datetime.datetime | None = None) -> tuple[bytes, str]:
    """The answer in the format `accept` asks for (OpenMetrics or Prometheus' text), and its type."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector(now))
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type


def render(now: datetime.datetime | None = None) -> str:
    """Prometheus' text format (version 0.0.4)."""
    return exposition("", now)[0].decode()


def _gauges(now: datetime.datetime) -> Families:
    out = Families()
    sync_issuers()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT status, waiting_on, count(*),"
            " count(*) FILTER (WHERE status = ANY(%s) AND next_attempt_at <= %s)"
            " FROM domains_domain GROUP BY status, waiting_on",
            [list(SWEPT_STATUSES), now],
        )
        by_status: dict[str, tuple[int, int]] = {}
        waiting: dict[tuple[str, str], int] = {}
        for status, waiting_on, count, due in cursor.fetchall():
            total, total_due = by_status.get(status, (0, 0))
            by_status[status] = (total + count, total_due + due)
            if waiting_on:
                waiting[(status, waiting_on)] = waiting.get((status, waiting_on), 0) + count
        cursor.execute(
            "SELECT state, count(*) FROM certificates_order WHERE state = ANY(%s) GROUP BY state",
            [list(ACTIVE_ORDER_STATES)],
        )
        orders = dict(cursor.fetchall())
        # expiring_window is never longer than CERTIFICATE_EXPIRING_DAYS.
        longest = max(*EXPIRY_WINDOWS.values(), settings.CERTIFICATE_EXPIRING_DAYS)
        cursor.execute(
            _EXPIRING_SQL,
            {
                "now": now,
                "until": now + datetime.timedelta(days=longest),
                "custom": CertificateSource.CUSTOM.value,
                "letsencrypt": CertificateSource.LETSENCRYPT.value,
            },
        )
        lasts = cursor.fetchall()
        ends = [not_after for _, not_after in lasts]
        cursor.execute(
            "SELECT count(*) FILTER (WHERE renew_at <= %s), count(*) FILTER (WHERE renewal_failures > 0)"
            " FROM certificates_certificate WHERE renew_at IS NOT NULL",
            [now],
        )
        renewals_due, renewals_failing = cursor.fetchone()
        cursor.execute(
            "SELECT count(*) FILTER (WHERE ari_next_check <= %s), count(*) FILTER (WHERE ari_error <> '')"
            " FROM certificates_certificate WHERE ari_next_check IS NOT NULL",
            [now],
        )
        ari_due, ari_failing = cursor.fetchone()
        cursor.execute(
            "SELECT issuer, count(DISTINCT fingerprint_sha256) FILTER (WHERE NOT renewal),"
            " count(DISTINCT fingerprint_sha256) FILTER (WHERE renewal)"
            " FROM certificates_issuance WHERE issued_at > %s GROUP BY issuer",
            [now - datetime.timedelta(days=1)],
        )
        issued = {issuer: (new, renewal) for issuer, new, renewal in cursor.fetchall()}
        cursor.execute(
            "SELECT name, breaker_failures, breaker_open_until FROM certificates_issuer WHERE configured"
        )
        breakers = {name: (failures, open_until) for name, failures, open_until in cursor.fetchall()}
    beats = dict(Heartbeat.objects.values_list("source", "at"))

    out.metric(
        "certwright_domains",
        "Custom domains by status.",
        [({"status": status}, by_status.get(status, (0, 0))[0]) for status in DomainStatus.values],
    )
    out.metric(
        "certwright_domains_waiting",
        "Domains not served (or failing) by what they wait on: the DNS record, ownership, CAA, a "
        "wildcard's DNS-01 delegation, a quota token, a certificate authority, the resolvers, a CA's "
        "pause.",
        [
            ({"status": status, "reason": reason}, waiting.get((status, reason), 0))
            for status in WAITING_STATUSES
            for reason in WaitingOn.values
        ],
    )
    out.metric(
        "certwright_domains_due",
        "Domains whose next check, retry or quota wait has come (the sweep's backlog).",
        [({}, sum(due for _, due in by_status.values()))],
    )
    out.metric(
        "certwright_domains_certificate_ending",
        "Domains whose last valid certificate ends within the window, with nothing valid after it.",
        [
            ({"within": label}, sum(1 for end in ends if end <= now + datetime.timedelta(days=days)))
            for label, days in EXPIRY_WINDOWS.items()
        ],
    )
    out.metric(
        "certwright_domains_certificate_expiring",
        "Domains whose last valid certificate is expiring: less than CERTIFICATE_EXPIRING_DAYS or a "
        "quarter of its lifetime left, whichever is shorter (its renewal is late, whatever its lifetime).",
        [
            (
                {},
                sum(
                    1
                    for not_before, not_after in lasts
                    if not_after - now
                    < expiring_window(not_after - not_before, settings.CERTIFICATE_EXPIRING_DAYS)
                ),
            )
        ],
    )
    out.metric(
        "certwright_orders_in_flight",
        "ACME orders in flight, by state.",
        [({"state": state}, orders.get(state, 0)) for state in ACTIVE_ORDER_STATES],
    )
    out.metric("certwright_renewals_due", "Certificates due for renewal now.", [({}, renewals_due)])
    out.metric(
        "certwright_renewals_failing",
        "Certificates whose last renewal attempt failed (still served while valid).",
        [({}, renewals_failing)],
    )
    out.metric(
        "certwright_ari_checks_due",
        "Certificates whose ACME Renewal Information check has come (the ARI sweep's backlog).",
        [({}, ari_due)],
    )
    out.metric(
        "certwright_ari_checks_failing",
        "Certificates whose last ARI check gave no window (an error, or a CA without ARI).",
        [({}, ari_failing)],
    )
    # Every configured issuer has its series (0 when it issued nothing), and any other issuer that did.
    issuers = [issuer.name for issuer in configured_issuers()]
    shown = issuers + sorted(set(issued) - set(issuers))
    out.metric(
        "certwright_certificates_issued_24h",
        "Certificates issued in the last 24 hours, by kind and issuer (its name in ACME_ISSUERS).",
        [
            ({"kind": kind, "issuer": issuer or "unknown"}, issued.get(issuer, (0, 0))[index])
            for issuer in shown
            for index, kind in enumerate(("new", "renewal"))
        ],
    )
    out.metric(
        "certwright_issuer_breaker_open",
        "1 while an issuer's circuit breaker is open (failing on its side: new orders go to the next "
        "issuer), 0.5 while half-open (one order tries it again), 0 when closed.",
        [({"issuer": name}, _breaker_value(breakers.get(name, (0, None))[1], now)) for name in issuers],
    )
    out.metric(
        "certwright_issuer_ca_failures",
        "CA-side failures in a row at each issuer (down, erroring, unreachable).",
        [({"issuer": name}, breakers.get(name, (0, None))[0]) for name in issuers],
    )
    out.metric(
        "certwright_heartbeat_age_seconds",
        "Seconds since beat last sent a task, since a standby beat last ticked, and since a worker last"
        " ran its heartbeat (-1: never).",
        [
            ({"source": source}, round((now - beats[source]).total_seconds(), 3) if source in beats else -1)
            for source in Heartbeat.Source
        ],
    )
    return out
