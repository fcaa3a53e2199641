"""`GET /metrics`: what an operator alerts on, in Prometheus' text format (version 0.0.4).

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

from certificates.models import ACTIVE_ORDER_STATES, CertificateSource, expiring_window
from domains.models import SWEPT_STATUSES, DomainStatus
from workers.models import Heartbeat

QUEUES = ("dns", "acme", "default")
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


class Exposition:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def metric(self, name: str, help_text: str, samples: list[tuple[dict[str, str], float]]) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} gauge")
        for labels, value in samples:
            label_text = ",".join(f'{key}="{value}"' for key, value in labels.items())
            number = repr(float(value)) if isinstance(value, float) else str(value)
            self.lines.append(f"{name}{{{label_text}}} {number}" if labels else f"{name} {number}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _queue_lengths() -> dict[str, int | None]:
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
        client.close()


def render(now: datetime.datetime | None = None) -> str:
    started = time.monotonic()
    now = now or timezone.now()
    out = Exposition()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT status, count(*), count(*) FILTER (WHERE status = ANY(%s) AND next_attempt_at <= %s)"
            " FROM domains_domain GROUP BY status",
            [list(SWEPT_STATUSES), now],
        )
        by_status = {status: (count, due) for status, count, due in cursor.fetchall()}
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
            "SELECT count(DISTINCT fingerprint_sha256) FILTER (WHERE NOT renewal),"
            " count(DISTINCT fingerprint_sha256) FILTER (WHERE renewal)"
            " FROM certificates_issuance WHERE issued_at > %s",
            [now - datetime.timedelta(days=1)],
        )
        issued_new, issued_renewal = cursor.fetchone()
    beats = dict(Heartbeat.objects.values_list("source", "at"))

    out.metric(
        "certwright_domains",
        "Custom domains by status.",
        [({"status": status}, by_status.get(status, (0, 0))[0]) for status in DomainStatus.values],
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
    out.metric(
        "certwright_certificates_issued_24h",
        "Certificates issued in the last 24 hours.",
        [({"kind": "new"}, issued_new), ({"kind": "renewal"}, issued_renewal)],
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
    lengths = _queue_lengths()
    out.metric(
        "certwright_queue_length",
        "Tasks waiting in each Celery queue (-1: the broker did not answer).",
        [({"queue": queue}, -1 if length is None else length) for queue, length in lengths.items()],
    )
    out.metric(
        "certwright_metrics_scrape_seconds",
        "How long this answer took to compute.",
        [({}, round(time.monotonic() - started, 6))],
    )
    return out.text()
