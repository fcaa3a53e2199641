"""The ACME issuers the product uses, in order (settings.ACME_ISSUERS, parsed by config/issuers.py):
which one a directory URL belongs to, how its API's TLS and its chains are verified, and its row
(certificates.issuer_models.Issuer: the admin's view, the sealed EAB key, the last problem an
operator must fix)."""

from __future__ import annotations

import datetime
import threading
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone

from certificates.issuer_models import Issuer
from certificates.sealing import seal
from config.issuers import IssuerSetting


class IssuerMisconfigured(Exception):
    """An issuer cannot be used until an operator changes its settings; the message names the
    issuer and the setting, in plain words."""


def configured() -> list[IssuerSetting]:
    """Every configured issuer, first (the primary) first."""
    return list(settings.ACME_ISSUERS)


def by_name(name: str) -> IssuerSetting | None:
    return next((issuer for issuer in settings.ACME_ISSUERS if issuer.name == name), None)


def by_directory(directory_url: str) -> IssuerSetting | None:
    return next((issuer for issuer in settings.ACME_ISSUERS if issuer.directory_url == directory_url), None)


def label(directory_url: str) -> str:
    """What a certificate's issuer is called where it is shown: the issuer's name, or the
    directory's host for one no longer configured."""
    found = by_directory(directory_url)
    return found.name if found is not None else (urlsplit(directory_url).hostname or directory_url)


def issuer_of_url(url: str) -> str:
    """The name of the issuer whose API `url` is on (scheme, host and port of its directory), as
    `label` names it; a URL on no configured issuer's host: that host."""
    try:
        origin = urlsplit(url)[:2]
    except ValueError:
        return "unknown"
    for issuer in settings.ACME_ISSUERS:
        if urlsplit(issuer.directory_url)[:2] == origin:
            return issuer.name
    return urlsplit(url).hostname or "unknown"


def tls_verify(directory_url: str) -> str | bool:
    """How the TLS certificate of the CA at `directory_url` is verified (requests' `verify`): the
    issuer's ca_bundle, else ACME_CA_BUNDLE, else the public roots."""
    found = by_directory(directory_url)
    return (found.ca_bundle if found is not None else "") or settings.ACME_CA_BUNDLE or True


def tls_bundles() -> list[str]:
    """Every CA bundle file some issuer's TLS is verified with (the others use the public roots)."""
    return sorted({v for i in settings.ACME_ISSUERS if isinstance(v := tls_verify(i.directory_url), str)})


_synced: tuple | None = None
_sync_lock = threading.Lock()


def sync_issuers() -> None:
    """Writes the configured issuers into their rows (once per process and settings): new ones
    added, changed ones updated, ones no longer configured marked so."""
    global _synced
    fingerprint = tuple(
        (i.name, i.directory_url, i.caa_identities, i.ca_bundle, i.roots, i.eab_kid, i.eab_hmac_key)
        for i in settings.ACME_ISSUERS
    )
    with _sync_lock:
        if _synced == fingerprint:
            return
        with transaction.atomic():
            # Every process syncs at its first use: rows are created racing-safe, then locked.
            Issuer.objects.bulk_create(
                [
                    Issuer(name=issuer.name, position=position, directory_url=issuer.directory_url)
                    for position, issuer in enumerate(settings.ACME_ISSUERS)
                ],
                ignore_conflicts=True,
            )
            rows = {row.name: row for row in Issuer.objects.select_for_update().order_by("pk")}
            for position, issuer in enumerate(settings.ACME_ISSUERS):
                row = rows[issuer.name]
                known_key = row.eab_hmac_key.reveal().decode() if row.eab_hmac_key is not None else ""
                wanted = {
                    "position": position,
                    "directory_url": issuer.directory_url,
                    "caa_identities": list(issuer.caa_identities),
                    "ca_bundle": issuer.ca_bundle,
                    "roots": issuer.roots,
                    "eab_key_id": issuer.eab_kid,
                    "configured": True,
                }
                changed = any(getattr(row, key) != value for key, value in wanted.items())
                if known_key != issuer.eab_hmac_key:
                    row.eab_hmac_key = seal(issuer.eab_hmac_key.encode()) if issuer.eab_hmac_key else None
                    # A new key may mend what the old one broke.
                    row.last_error, row.last_error_at = "", None
                    changed = True
                if changed:
                    for key, value in wanted.items():
                        setattr(row, key, value)
                    row.save()
            names = [issuer.name for issuer in settings.ACME_ISSUERS]
            Issuer.objects.exclude(name__in=names).filter(configured=True).update(configured=False)
        _synced = fingerprint


def eab_hmac_key(issuer: IssuerSetting) -> str:
    """The issuer's EAB HMAC key, read from its sealed row."""
    sync_issuers()
    row = Issuer.objects.get(name=issuer.name)
    return row.eab_hmac_key.reveal().decode() if row.eab_hmac_key is not None else ""


def record_problem(issuer: IssuerSetting, message: str) -> None:
    """Keeps the problem an operator must fix on the issuer's row (the admin shows it)."""
    sync_issuers()
    Issuer.objects.filter(name=issuer.name).update(last_error=message, last_error_at=timezone.now())


def clear_problem(issuer: IssuerSetting) -> None:
    sync_issuers()
    Issuer.objects.filter(name=issuer.name).exclude(last_error="").update(last_error="", last_error_at=None)


def forget_sync() -> None:
    """Makes the next sync_issuers write again (tests that change the settings)."""
    global _synced
    with _sync_lock:
        _synced = None


# --- the circuit breaker ------------------------------------------------------------------------
# Per issuer, in its row: CA-side failures in a row (the CA down, erroring, unreachable); at
# ISSUER_BREAKER_FAILURES the breaker opens for ISSUER_BREAKER_COOLDOWN_SECONDS, during which new
# orders go to the next issuer; then one order at a time probes it (half-open) until one succeeds
# (closed) or fails (open again). A success writes only when there is something to reset, so the
# healthy path never writes the row.

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


def record_ca_failure(directory_url: str, reason: str, now: datetime.datetime | None = None) -> None:
    """One CA-side failure at the issuer of `directory_url` (none: an unconfigured directory)."""
    issuer = by_directory(directory_url)
    if issuer is None:
        return
    now = now or timezone.now()
    sync_issuers()
    cooldown = datetime.timedelta(seconds=settings.ISSUER_BREAKER_COOLDOWN_SECONDS)
    Issuer.objects.filter(name=issuer.name).update(
        breaker_failures=F("breaker_failures") + 1,
        breaker_open_until=Case(
            When(breaker_failures__gte=settings.ISSUER_BREAKER_FAILURES - 1, then=Value(now + cooldown)),
            default=F("breaker_open_until"),
        ),
        breaker_probe_until=None,
        breaker_reason=reason[:500],
    )


def record_ca_success(directory_url: str) -> None:
    """A certificate came from the issuer of `directory_url`: its breaker closes."""
    issuer = by_directory(directory_url)
    if issuer is None:
        return
    sync_issuers()
    Issuer.objects.filter(name=issuer.name).filter(
        Q(breaker_failures__gt=0) | Q(breaker_open_until__isnull=False) | Q(breaker_probe_until__isnull=False)
    ).update(breaker_failures=0, breaker_open_until=None, breaker_probe_until=None)


def breaker_states(now: datetime.datetime | None = None) -> dict[str, str]:
    """Each configured issuer's breaker: closed, open (cooling down) or half-open (may be probed)."""
    now = now or timezone.now()
    sync_issuers()
    states = {}
    for name, open_until in Issuer.objects.filter(configured=True).values_list("name", "breaker_open_until"):
        if open_until is None:
            states[name] = CLOSED
        else:
            states[name] = OPEN if open_until > now else HALF_OPEN
    return states


def take_probe(name: str, now: datetime.datetime | None = None) -> bool:
    """Whether this caller may send the one probe order to a half-open issuer (then no other may
    until the probe ends or its lease, ACME_ORDER_TIMEOUT_SECONDS, passes)."""
    now = now or timezone.now()
    lease = datetime.timedelta(seconds=settings.ACME_ORDER_TIMEOUT_SECONDS)
    return (
        Issuer.objects.filter(name=name, breaker_open_until__lte=now)
        .filter(Q(breaker_probe_until__isnull=True) | Q(breaker_probe_until__lte=now))
        .update(breaker_probe_until=now + lease)
        == 1
    )
