"""Expiry events (issue 16), found by beat's hourly *Record expiry events*: time passing changes no row,
so a periodic task writes them, and each is written once whatever runs it.

- `certificate.expiring`: a Let's Encrypt certificate that nothing valid follows (its renewal is
  late) ends within 14, 7, 3 or 1 days. Only thresholds inside the last quarter of its lifetime
  count (certificates.models.expiring_window's rule): a 45-day certificate starts at 7 days, a
  160-hour one at 1 day, so a short lifetime alone never warns while its renewal is on time.
- `custom_certificate.expiring`: an uploaded certificate ends within 30, 14, 7 or 1 days, saying
  whether a Let's Encrypt certificate will be served after it.
- `certificate.expired`: a served certificate ended with nothing valid after it (within the last
  EXPIRY_WINDOW, so a beat that was down catches up).

Once per threshold: each event has a dedupe key (the certificate and the threshold) under a unique
index, and the insert skips keys already there (ON CONFLICT DO NOTHING), so two runs, or two beats
at once, write it once. When a run finds several thresholds crossed, only the lowest is written (a
certificate found with 2 days left gets the 3-day event, never the 14- and 7-day ones after it).
The domains are locked (FOR NO KEY UPDATE, in id order) and the certificates read again under the
locks before the insert, so a renewal committing meanwhile either comes after the event in the
domain's order or leaves nothing to tell.
"""

from __future__ import annotations

import datetime
import json
import logging
import uuid
from dataclasses import dataclass

from django.db import connection, transaction
from django.utils import timezone

from certificates.models import CertificateSource
from domains.enqueue import deliver_webhooks_soon
from domains.events import certificate_data
from domains.models import Domain, Event, EventType
from domains.quota_policy import when
from workers.expiry import EXPIRY_WINDOW

logger = logging.getLogger(__name__)

DAY = datetime.timedelta(days=1)
LETSENCRYPT_THRESHOLDS = (1, 3, 7, 14)
CUSTOM_THRESHOLDS = (1, 7, 14, 30)

# A certificate that may be served: a custom one, or a Let's Encrypt one while Let's Encrypt is on
# for its domain (d); never a revoked one (certificates/serving.py's rule).
_SERVABLE = "{c}.revoked_at IS NULL AND ({c}.source = %(custom)s OR d.letsencrypt_enabled)"
# No servable certificate of the domain is valid when `c` ends and ends after it (ties by id).
_NOTHING_AFTER = f"""NOT EXISTS (
    SELECT 1 FROM certificates_certificate o
    WHERE o.domain_id = c.domain_id AND o.id <> c.id AND {_SERVABLE.format(c="o")}
      AND o.not_before <= c.not_after AND (o.not_after, o.id) > (c.not_after, c.id)
)"""  # noqa: S608 (this module's constants, values as parameters)

# Every query reads through certificate_expiry_idx (source, not_after).
_FOUND = f"""
SELECT %(expiring)s AS kind, c.id, c.domain_id, c.source, c.fingerprint_sha256, c.serial, c.issuer,
    c.not_before, c.not_after, c.renewal_error, d.letsencrypt_enabled, false AS takeover
FROM certificates_certificate c JOIN domains_domain d ON d.id = c.domain_id
WHERE c.source = %(letsencrypt)s AND c.not_after > %(now)s AND c.not_after <= %(letsencrypt_until)s
  AND c.not_before <= %(now)s AND {_SERVABLE.format(c="c")} AND {_NOTHING_AFTER}
  AND (%(domains)s::bigint[] IS NULL OR c.domain_id = ANY(%(domains)s))
UNION ALL
SELECT %(custom_expiring)s, c.id, c.domain_id, c.source, c.fingerprint_sha256, c.serial, c.issuer,
    c.not_before, c.not_after, c.renewal_error, d.letsencrypt_enabled,
    EXISTS (
        SELECT 1 FROM certificates_certificate o
        WHERE o.domain_id = c.domain_id AND o.source = %(letsencrypt)s AND o.revoked_at IS NULL
          AND d.letsencrypt_enabled AND o.not_before <= c.not_after AND o.not_after > c.not_after
    )
FROM certificates_certificate c JOIN domains_domain d ON d.id = c.domain_id
WHERE c.source = %(custom)s AND c.not_after > %(now)s AND c.not_after <= %(custom_until)s
  AND c.not_before <= %(now)s AND c.revoked_at IS NULL
  AND (%(domains)s::bigint[] IS NULL OR c.domain_id = ANY(%(domains)s))
UNION ALL
SELECT %(expired)s, c.id, c.domain_id, c.source, c.fingerprint_sha256, c.serial, c.issuer,
    c.not_before, c.not_after, c.renewal_error, d.letsencrypt_enabled, false
FROM certificates_certificate c JOIN domains_domain d ON d.id = c.domain_id
WHERE c.source IN (%(custom)s, %(letsencrypt)s) AND c.not_after > %(expired_since)s
  AND c.not_after <= %(now)s AND {_SERVABLE.format(c="c")} AND {_NOTHING_AFTER}
  AND (%(domains)s::bigint[] IS NULL OR c.domain_id = ANY(%(domains)s))
"""  # noqa: S608 (this module's constants, values as parameters)

_INSERT = """
INSERT INTO domains_event (
    id, created, type, app_id, app_name, domain_id, domain_name, from_status, to_status, reason, records,
    data, dedupe_key
)
VALUES {values}
ON CONFLICT (dedupe_key) WHERE dedupe_key <> '' DO NOTHING
RETURNING id
"""
_ROW = "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, '[]'::jsonb, %s::jsonb, %s)"


@dataclass(frozen=True)
class Found:
    """A certificate one of whose expiry events may be due."""

    kind: str
    cert_id: int
    domain_id: int
    source: str
    fingerprint_sha256: str
    serial: str
    issuer: str
    not_before: datetime.datetime
    not_after: datetime.datetime
    renewal_error: str
    letsencrypt_enabled: bool
    # A Let's Encrypt certificate is valid when this custom one ends, and outlives it.
    takeover: bool


def threshold(found: Found, now: datetime.datetime) -> int | None:
    """The lowest threshold (in days) the certificate has crossed, or None: for an expired one, 0."""
    if found.kind == EventType.CERTIFICATE_EXPIRED:
        return 0
    left = found.not_after - now
    if found.kind == EventType.CUSTOM_CERTIFICATE_EXPIRING:
        allowed = CUSTOM_THRESHOLDS
    else:
        quarter = (found.not_after - found.not_before) / 4
        allowed = tuple(days for days in LETSENCRYPT_THRESHOLDS if days * DAY <= quarter)
    crossed = [days for days in allowed if left <= days * DAY]
    return min(crossed) if crossed else None


def dedupe_key(found: Found, days: int) -> str:
    """Unique per certificate and threshold: the same event found again is not written again."""
    if found.kind == EventType.CERTIFICATE_EXPIRED:
        return f"{found.kind}:{found.cert_id}"
    return f"{found.kind}:{found.cert_id}:{days}"


def _within(days: int) -> str:
    return "within a day" if days == 1 else f"within {days} days"


def describe(found: Found, name: str, days: int) -> str:
    """The event's reason, in plain words; a failing renewal's error in the words of last_error."""
    ends = when(found.not_after)
    renewal = f" {found.renewal_error}" if found.renewal_error else ""
    if found.kind == EventType.CERTIFICATE_EXPIRED:
        what = "The custom certificate" if found.source == CertificateSource.CUSTOM else "The certificate"
        return f"{what} of {name} expired at {ends} and no valid certificate is served.{renewal}"
    if found.kind == EventType.CERTIFICATE_EXPIRING:
        return (
            f"The certificate of {name} ends at {ends} ({_within(days)}) and no valid certificate "
            f"follows it.{renewal}"
        )
    if found.takeover:
        after = "its Let's Encrypt certificate is served after it."
    elif not found.letsencrypt_enabled:
        after = (
            "Let's Encrypt is disabled for this domain, so nothing is served after it: upload a new "
            "certificate."
        )
    else:
        after = (
            "no Let's Encrypt certificate is ready to take over: upload a new certificate, or see the "
            "domain's status for what keeps Let's Encrypt from issuing."
        )
    return f"The custom certificate of {name} ends at {ends} ({_within(days)}): {after}"


def _data(found: Found, days: int) -> dict:
    data = certificate_data(
        found.fingerprint_sha256, found.serial, found.issuer, found.not_before, found.not_after
    )
    data["source"] = found.source
    if found.kind != EventType.CERTIFICATE_EXPIRED:
        data["threshold_days"] = days
    if found.kind == EventType.CUSTOM_CERTIFICATE_EXPIRING:
        data["letsencrypt_enabled"] = found.letsencrypt_enabled
        data["letsencrypt_takes_over"] = found.takeover
    return data


def find_expiries(now: datetime.datetime, domain_ids: list[int] | None = None) -> list[Found]:
    """The certificates whose expiry events may be due at `now` (of `domain_ids` only, when given)."""
    params = {
        "now": now,
        "letsencrypt_until": now + max(LETSENCRYPT_THRESHOLDS) * DAY,
        "custom_until": now + max(CUSTOM_THRESHOLDS) * DAY,
        "expired_since": now - EXPIRY_WINDOW,
        "custom": CertificateSource.CUSTOM.value,
        "letsencrypt": CertificateSource.LETSENCRYPT.value,
        "expiring": EventType.CERTIFICATE_EXPIRING.value,
        "custom_expiring": EventType.CUSTOM_CERTIFICATE_EXPIRING.value,
        "expired": EventType.CERTIFICATE_EXPIRED.value,
        "domains": domain_ids,
    }
    with connection.cursor() as cursor:
        cursor.execute(_FOUND, params)
        return [Found(*row) for row in cursor.fetchall()]


def _due(found: list[Found], now: datetime.datetime) -> dict[str, tuple[Found, int]]:
    """The events `found` calls for, by dedupe key."""
    due = {}
    for item in found:
        days = threshold(item, now)
        if days is not None:
            due[dedupe_key(item, days)] = (item, days)
    return due


def record_expiry_events(now: datetime.datetime | None = None) -> int:
    """Writes the expiry events due at `now` that are not written yet; returns how many it wrote."""
    now = now or timezone.now()
    due = _due(find_expiries(now), now)
    # Most of what is found was told already (a late renewal stays late for days): only the
    # domains with something new are locked.
    told = set(
        Event.objects.exclude(dedupe_key="")
        .filter(dedupe_key__in=list(due))
        .values_list("dedupe_key", flat=True)
    )
    domain_ids = sorted({item.domain_id for key, (item, _) in due.items() if key not in told})
    if not domain_ids:
        return 0
    with transaction.atomic():
        # Only the domains' rows: an app's row locked here would invert the order of a request
        # that locks the app, then one of its domains (moving a domain).
        locked = list(
            Domain.objects.select_for_update(no_key=True)
            .filter(pk__in=domain_ids)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        domains = {
            pk: (name, status, app_id, app_name)
            for pk, name, status, app_id, app_name in Domain.objects.filter(pk__in=locked).values_list(
                "pk", "name", "status", "app_id", "app__name"
            )
        }
        # Read again under the locks: a renewal or an upload that committed meanwhile counts.
        due = _due(find_expiries(now, sorted(domains)), now)
        params: list = []
        for key, (item, days) in sorted(due.items(), key=lambda entry: (entry[1][0].domain_id, entry[0])):
            name, status, app_id, app_name = domains[item.domain_id]
            params += [
                uuid.uuid4(),
                now,
                item.kind,
                app_id,
                app_name,
                item.domain_id,
                name,
                status,
                status,
                describe(item, name, days),
                json.dumps(_data(item, days)),
                key,
            ]
        if not params:
            return 0
        with connection.cursor() as cursor:
            cursor.execute(_INSERT.format(values=", ".join([_ROW] * len(due))), params)
            written = len(cursor.fetchall())
        if written:
            deliver_webhooks_soon()
    if written:
        logger.info("expiry events: %d written", written)
    return written
