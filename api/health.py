"""The checks behind /healthz: each dependency answers on its own, within a timeout."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import redis
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from certificates.issuer_models import Issuer
from certificates.issuers import sync_issuers
from domains.profiles import ProfileUnchecked, platform_profile_problem
from workers.models import BeatLease, Heartbeat


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    # Informational checks are reported but do not make the whole answer unhealthy.
    critical: bool = True

    def as_dict(self) -> dict:
        return {"ok": self.ok, "detail": self.detail, "critical": self.critical}


def _timed(name: str, probe: Callable[[], str]) -> Check:
    started = time.monotonic()
    try:
        detail = probe()
    except Exception as exc:  # each dependency fails in its own way; report it, never raise
        return Check(name, False, f"{type(exc).__name__}: {exc}")
    return Check(name, True, f"{detail} in {(time.monotonic() - started) * 1000:.0f} ms")


def _ping_redis(url: str) -> str:
    timeout = settings.HEALTH_CHECK_TIMEOUT_SECONDS
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        client.ping()
    finally:
        client.close()
    return "PONG"


def check_postgresql() -> Check:
    def probe() -> str:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL statement_timeout = %s", [settings.HEALTH_CHECK_TIMEOUT_SECONDS * 1000])
            cursor.execute("SELECT 1")
            cursor.fetchone()
        return "SELECT 1"

    return _timed("postgresql", probe)


def check_broker() -> Check:
    return _timed("broker", lambda: _ping_redis(settings.CELERY_BROKER_URL))


def check_quota_redis() -> Check:
    return _timed("quota_redis", lambda: _ping_redis(settings.QUOTA_REDIS_URL))


def check_heartbeats(now: datetime | None = None) -> list[Check]:
    """Beat is critical (a dead beat lets certificates lapse silently); a standby beat and the worker
    are informational."""
    now = now or timezone.now()
    max_age = settings.HEALTH_BEAT_MAX_AGE_SECONDS
    try:
        seen = dict(Heartbeat.objects.values_list("source", "at"))
    except Exception as exc:
        return [Check("beat", False, f"cannot read heartbeats: {type(exc).__name__}")]
    checks = []
    sources = (
        (Heartbeat.Source.BEAT, True),
        # With no standby a dying leader stops the periodic tasks until beat is restarted.
        (Heartbeat.Source.BEAT_STANDBY, False),
        (Heartbeat.Source.WORKER, False),
    )
    for source, critical in sources:
        at = seen.get(source)
        if at is None:
            checks.append(Check(source.value, False, "never seen", critical))
            continue
        age = (now - at).total_seconds()
        ok = age <= max_age
        detail = f"last seen {age:.0f} s ago" + ("" if ok else f" (more than {max_age} s)")
        checks.append(Check(source.value, ok, detail, critical))
    return checks


def check_beat_leader(now: datetime | None = None) -> Check:
    """Informational: which beat leads, or that none does. A takeover leaves no leader for up to
    1.25 leases, which must not take web out of rotation; the critical `beat` check fails if it lasts."""
    now = now or timezone.now()
    try:
        lease = BeatLease.objects.first()
    except Exception as exc:
        return Check("beat_leader", False, f"cannot read the leader lease: {type(exc).__name__}", False)
    if lease is None:
        return Check("beat_leader", False, "no beat leads: none has ever run", critical=False)
    who = f"{lease.host} pid {lease.pid} (term {lease.term})"
    if lease.expires_at <= now:
        ended = (now - lease.expires_at).total_seconds()
        return Check("beat_leader", False, f"no beat leads: {who}'s lease ended {ended:.0f} s ago", False)
    renewed = (now - lease.renewed_at).total_seconds()
    detail = f"{who} leads since {lease.acquired_at:%Y-%m-%d %H:%M:%S} UTC, renewed {renewed:.0f} s ago"
    return Check("beat_leader", True, detail, critical=False)


def check_acme_profile() -> Check:
    """Informational: whether the CA offers ACME_PROFILE (read from its directory, cached for
    minutes, so this costs the CA a request now and then)."""
    try:
        problem = platform_profile_problem(timeout=settings.HEALTH_CHECK_TIMEOUT_SECONDS)
    except ProfileUnchecked as exc:
        return Check("acme_profile", False, str(exc), critical=False)
    if problem:
        return Check("acme_profile", False, problem, critical=False)
    return Check("acme_profile", True, f"the CA offers {settings.ACME_PROFILE}", critical=False)


def check_issuers(now: datetime | None = None) -> list[Check]:
    """Informational, one per issuer: its circuit breaker (a CA failing on its side sends new
    orders to the next issuer; it must not take web out of rotation), and a problem an operator
    must fix (a refused account binding)."""
    now = now or timezone.now()
    try:
        sync_issuers()
        rows = list(Issuer.objects.filter(configured=True).order_by("position"))
    except Exception as exc:
        return [Check("issuers", False, f"cannot read the issuers: {type(exc).__name__}", False)]
    checks = []
    for row in rows:
        name = f"issuer_{row.name}"
        if row.last_error:
            checks.append(Check(name, False, row.last_error, critical=False))
        elif row.breaker_open_until is not None and row.breaker_open_until > now:
            detail = (
                f"failing on its side ({row.breaker_failures} failures in a row, last: "
                f"{row.breaker_reason}); new orders go to the next issuer until "
                f"{row.breaker_open_until:%Y-%m-%d %H:%M:%S} UTC"
            )
            checks.append(Check(name, False, detail, critical=False))
        elif row.breaker_open_until is not None:
            checks.append(Check(name, False, "being tried again (one order at a time)", critical=False))
        else:
            checks.append(Check(name, True, f"in use ({row.directory_url})", critical=False))
    return checks


def run_checks(now: datetime | None = None) -> tuple[bool, list[Check]]:
    """All checks, and whether every critical one passed."""
    checks = [check_postgresql(), check_broker(), check_quota_redis()]
    if settings.ACME_PROFILE:
        checks.append(check_acme_profile())
    if checks[0].ok:
        checks += [*check_heartbeats(now), check_beat_leader(now), *check_issuers(now)]
    else:
        checks.append(Check("beat", False, "PostgreSQL is down"))
    healthy = all(check.ok for check in checks if check.critical)
    return healthy, checks
