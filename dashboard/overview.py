"""What the operators' overview shows (the admin's home, dashboard/admin_site.py), read with a fixed
number of statements whatever the number of domains and certificates: each one groups, counts
through an index, or takes a handful of rows through one (bench/overview.py measures it at a
million domains and certificates).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from api.metrics import queue_lengths
from certificates.admin_badges import flattened
from certificates.issuer_models import Issuer
from certificates.issuers import sync_issuers
from certificates.models import Certificate, CertificateSource, OrderState
from domains.models import Domain, DomainStatus, WaitingOn
from domains.quota_policy import quota_of
from workers.models import Heartbeat

# What a domain waits on, in a tile's few words.
WAITING_WORDS = {
    WaitingOn.DNS: "DNS record",
    WaitingOn.RESOLVER: "resolvers",
    WaitingOn.OWNERSHIP: "ownership",
    WaitingOn.CAA: "CAA",
    WaitingOn.DNS01: "DNS-01 delegation",
    WaitingOn.QUOTA: "quota token",
    WaitingOn.ISSUER: "an issuer",
    WaitingOn.CA: "the CA",
    WaitingOn.PAUSED: "CA's pause",
}

# Rows shown per kind of attention; the count says how many there are in all.
ATTENTION_ROWS = 10
QUOTA_ROWS = 8
ENDING_DAYS = 90
ACTIVITY_HOURS = 7 * 24
# Heartbeats older than this are shown as late (beat ticks every few seconds, the worker's
# heartbeat task runs every minute).
HEARTBEAT_LATE_SECONDS = 300

# Domains whose last servable certificate ends within the window, with nothing valid after it
# (api/metrics.py's rule, revoked certificates left out), the soonest first: at most COUNT_CAP + 1,
# so that a platform with a hundred thousand of them (after a CA outage) costs no more than one
# with a thousand; the overview then says "more than COUNT_CAP". One branch per source, each an
# ordered scan of certificate_expiry_idx (source, not_after) that stops at the limit (with both
# sources in one IN list, PostgreSQL sorts every candidate first).
_ENDING_SOON_SQL = """
SELECT * FROM (
(SELECT d.id, d.name, d.last_error, c.not_after, c.source
  FROM certificates_certificate c JOIN domains_domain d ON d.id = c.domain_id
  WHERE c.source = %(custom)s AND c.not_after > %(now)s AND c.not_after <= %(until)s
    AND c.not_before <= %(now)s AND c.revoked_at IS NULL AND (c.source = %(custom)s OR d.letsencrypt_enabled)
    AND NOT EXISTS (
      SELECT 1 FROM certificates_certificate n
      WHERE n.domain_id = c.domain_id AND n.not_after > c.not_after AND n.not_before <= %(now)s
        AND n.revoked_at IS NULL AND (n.source = %(custom)s OR d.letsencrypt_enabled)
    )
  ORDER BY c.not_after
  LIMIT %(limit)s)
UNION ALL
(SELECT d.id, d.name, d.last_error, c.not_after, c.source
  FROM certificates_certificate c JOIN domains_domain d ON d.id = c.domain_id
  WHERE c.source = %(letsencrypt)s AND c.not_after > %(now)s AND c.not_after <= %(until)s
    AND c.not_before <= %(now)s AND c.revoked_at IS NULL AND (c.source = %(custom)s OR d.letsencrypt_enabled)
    AND NOT EXISTS (
      SELECT 1 FROM certificates_certificate n
      WHERE n.domain_id = c.domain_id AND n.not_after > c.not_after AND n.not_before <= %(now)s
        AND n.revoked_at IS NULL AND (n.source = %(custom)s OR d.letsencrypt_enabled)
    )
  ORDER BY c.not_after
  LIMIT %(limit)s)
) s
ORDER BY not_after
LIMIT %(limit)s
"""
COUNT_CAP = 1000


@dataclass
class StatusCount:
    status: str
    label: str
    count: int
    url: str
    # What its domains wait on, most first: (reason's words, count, the list filtered on it).
    waiting: list[tuple[str, int, str]] = field(default_factory=list)


@dataclass
class AttentionRow:
    domain_id: int
    name: str
    reason: str
    detail: str  # when, or the certificate's end
    action: str  # "retry" or "renew"


@dataclass
class Attention:
    key: str
    title: str
    count: int
    rows: list[AttentionRow]
    url: str
    # The count stopped at COUNT_CAP: there are more.
    more: bool = False


@dataclass
class Overview:
    now: datetime.datetime
    statuses: list[StatusCount]
    total: int
    attention: list[Attention]
    # {day: {source: count}}, the next ENDING_DAYS days.
    ending: dict[datetime.date, dict[str, int]]
    # {hour: {"issued"|"renewed"|"failed": count}}, the last ACTIVITY_HOURS hours.
    activity: dict[datetime.datetime, dict[str, int]]
    quota: list
    queues: dict[str, int | None]
    heartbeats: list[tuple[str, float | None, bool]]
    issuers: list[tuple[str, str, int, str]] = field(default_factory=list)


def changelist(model: str, **filters) -> str:
    url = reverse(f"admin:{model}_changelist")
    if filters:
        url += "?" + "&".join(f"{key}={value}" for key, value in filters.items())
    return url


def build(now: datetime.datetime | None = None) -> Overview:
    now = now or timezone.now()
    with connection.cursor() as cursor:
        # Index only (domain_status_idx).
        cursor.execute("SELECT status, waiting_on, count(*) FROM domains_domain GROUP BY status, waiting_on")
        by_status: dict[str, int] = {}
        waiting: dict[str, list[tuple[str, int, str]]] = {}
        for status, waiting_on, count in cursor.fetchall():
            by_status[status] = by_status.get(status, 0) + count
            if waiting_on:
                url = changelist("domains_domain", status__exact=status, waiting_on__exact=waiting_on)
                waiting.setdefault(status, []).append((WAITING_WORDS.get(waiting_on, waiting_on), count, url))
        ending_soon = _ending_soon(cursor, now)
        ending = _ending_per_day(cursor, now)
        activity = _activity_per_hour(cursor, now)
        busiest = _busiest_registered_domains(cursor, now)
    statuses = [
        StatusCount(
            value,
            label,
            by_status.get(value, 0),
            changelist("domains_domain", status__exact=value),
            sorted(waiting.get(value, []), key=lambda item: -item[1])[:3],
        )
        for value, label in DomainStatus.choices
    ]
    attention = [
        _domains_in(DomainStatus.FAILING, "Failing", by_status),
        _domains_in(DomainStatus.ACTION_REQUIRED, "Action required", by_status),
        _renewals_failing(),
        ending_soon,
    ]
    return Overview(
        now=now,
        statuses=statuses,
        total=sum(by_status.values()),
        attention=attention,
        ending=ending,
        activity=activity,
        quota=quota_of(busiest) if busiest else [],
        queues=queue_lengths(),
        heartbeats=_heartbeats(now),
        issuers=_issuers(now),
    )


def _domains_in(status: str, title: str, by_status: dict[str, int]) -> Attention:
    rows = [
        AttentionRow(pk, name, flattened(error), f"next attempt {_when(next_at)}", "retry")
        for pk, name, error, next_at in Domain.objects.filter(status=status)
        .order_by("-updated", "-pk")
        .values_list("pk", "name", "last_error", "next_attempt_at")[:ATTENTION_ROWS]
    ]
    return Attention(
        status, title, by_status.get(status, 0), rows, changelist("domains_domain", status__exact=status)
    )


def _renewals_failing() -> Attention:
    failing = Certificate.objects.filter(renewal_failures__gt=0, renew_at__isnull=False)
    rows = [
        AttentionRow(
            domain_id,
            name,
            flattened(error),
            f"{failures} failed, ends {not_after:%Y-%m-%d}",
            "renew",
        )
        for domain_id, name, error, failures, not_after in failing.order_by("not_after", "pk").values_list(
            "domain_id", "domain__name", "renewal_error", "renewal_failures", "not_after"
        )[:ATTENTION_ROWS]
    ]
    return Attention(
        "renewals_failing",
        "Renewals failing",
        failing.count(),
        rows,
        changelist("certificates_certificate", renewal_failing="1"),
    )


def _ending_soon(cursor, now: datetime.datetime) -> Attention:
    cursor.execute(
        _ENDING_SOON_SQL,
        {
            "now": now,
            "until": now + datetime.timedelta(days=7),
            "custom": CertificateSource.CUSTOM.value,
            "letsencrypt": CertificateSource.LETSENCRYPT.value,
            "limit": COUNT_CAP + 1,
        },
    )
    found = cursor.fetchall()
    rows = [
        AttentionRow(
            pk,
            name,
            flattened(error) or "nothing valid after it yet",
            f"{CertificateSource(source).label} certificate ends {not_after:%Y-%m-%d %H:%M} UTC",
            "renew",
        )
        for pk, name, error, not_after, source in found[:ATTENTION_ROWS]
    ]
    return Attention(
        "ending_7d",
        "Ending within 7 days, nothing after",
        min(len(found), COUNT_CAP),
        rows,
        changelist("domains_domain", served="ending_7d"),
        more=len(found) > COUNT_CAP,
    )


def _ending_per_day(cursor, now: datetime.datetime) -> dict[datetime.date, dict[str, int]]:
    """Certificates by the day they end, revoked ones included: an index-only scan of
    certificate_expiry_idx (source, not_after)."""
    cursor.execute(
        "SELECT (not_after AT TIME ZONE 'UTC')::date, source, count(*) FROM certificates_certificate"
        " WHERE source IN (%s, %s) AND not_after > %s AND not_after <= %s GROUP BY 1, 2",
        [
            CertificateSource.LETSENCRYPT.value,
            CertificateSource.CUSTOM.value,
            now,
            now + datetime.timedelta(days=ENDING_DAYS),
        ],
    )
    days = {now.date() + datetime.timedelta(days=offset): {} for offset in range(ENDING_DAYS + 1)}
    for day, source, count in cursor.fetchall():
        if day in days:
            days[day][source] = count
    return days


def _activity_per_hour(cursor, now: datetime.datetime) -> dict[datetime.datetime, dict[str, int]]:
    hour = now.replace(minute=0, second=0, microsecond=0)
    hours = {hour - datetime.timedelta(hours=back): {} for back in range(ACTIVITY_HOURS)}
    # From the start of the oldest hour shown, so that none of its rows is left out.
    since = min(hours)
    cursor.execute(
        "SELECT date_trunc('hour', issued_at), renewal, count(DISTINCT fingerprint_sha256)"
        " FROM certificates_issuance WHERE issued_at >= %s GROUP BY 1, 2",
        [since],
    )
    for at, renewal, count in cursor.fetchall():
        if at in hours:
            hours[at]["renewed" if renewal else "issued"] = count
    cursor.execute(
        "SELECT date_trunc('hour', finished), count(*) FROM certificates_order"
        " WHERE state = %s AND finished >= %s GROUP BY 1",
        [OrderState.INVALID.value, since],
    )
    for at, count in cursor.fetchall():
        if at in hours:
            hours[at]["failed"] = count
    return dict(sorted(hours.items()))


def _busiest_registered_domains(cursor, now: datetime.datetime) -> list[str]:
    """The registered domains that spent most of Let's Encrypt's per-domain limit in its period."""
    since = now - datetime.timedelta(seconds=settings.QUOTA_REGISTERED_DOMAIN_PERIOD_SECONDS)
    cursor.execute(
        "SELECT registered_domain FROM certificates_issuance"
        " WHERE issued_at > %s AND NOT renewal AND spends_letsencrypt_limits"
        " GROUP BY registered_domain ORDER BY count(DISTINCT fingerprint_sha256) DESC, registered_domain"
        " LIMIT %s",
        [since, QUOTA_ROWS],
    )
    return [domain for (domain,) in cursor.fetchall()]


def _heartbeats(now: datetime.datetime) -> list[tuple[str, float | None, bool]]:
    beats = dict(Heartbeat.objects.values_list("source", "at"))
    shown = []
    for source in Heartbeat.Source:
        at = beats.get(source.value)
        age = (now - at).total_seconds() if at else None
        # A standby beat that never ticked is normal (there is none).
        late = (age is None and source != Heartbeat.Source.BEAT_STANDBY) or (
            age is not None and age > HEARTBEAT_LATE_SECONDS
        )
        shown.append((source.label, age, late))
    return shown


def _issuers(now: datetime.datetime) -> list[tuple[str, str, int, str]]:
    sync_issuers()
    shown = []
    for name, failures, open_until, error in (
        Issuer.objects.filter(configured=True)
        .order_by("position")
        .values_list("name", "breaker_failures", "breaker_open_until", "last_error")
    ):
        if open_until is None:
            state = "healthy"
        else:
            state = "failing: orders go to the next issuer" if open_until > now else "being probed"
        shown.append((name, state, failures, flattened(error)))
    return shown


def _when(at: datetime.datetime | None) -> str:
    return f"{at:%Y-%m-%d %H:%M} UTC" if at else "not scheduled"
