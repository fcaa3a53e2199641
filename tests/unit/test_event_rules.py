"""The rules of the events outbox that need no database: which threshold an expiring certificate has
crossed (the lowest; Let's Encrypt ones only within the last quarter of their lifetime), each event's
dedupe key, and in whose words a status event says why."""

from __future__ import annotations

import datetime

import pytest

from domains.events import event_reason, status_event
from domains.models import DomainStatus, EventType
from workers.expiry_events import Found, dedupe_key, describe, threshold

NOW = datetime.datetime(2026, 11, 30, 12, 0, tzinfo=datetime.UTC)
DAY = datetime.timedelta(days=1)
HOUR = datetime.timedelta(hours=1)


def _found(kind: str, left: datetime.timedelta, lifetime: datetime.timedelta = 90 * DAY, **fields) -> Found:
    values = {
        "kind": kind,
        "cert_id": 42,
        "domain_id": 7,
        "source": "custom" if kind == EventType.CUSTOM_CERTIFICATE_EXPIRING else "letsencrypt",
        "fingerprint_sha256": "ab" * 32,
        "serial": "01",
        "issuer": "CN=Test CA",
        "not_before": NOW + left - lifetime,
        "not_after": NOW + left,
        "renewal_error": "",
        "letsencrypt_enabled": True,
        "takeover": False,
    }
    return Found(**{**values, **fields})


@pytest.mark.parametrize(
    ("left", "expected"),
    [(15 * DAY, None), (14 * DAY, 14), (10 * DAY, 14), (7 * DAY, 7), (2 * DAY, 3), (20 * HOUR, 1)],
)
def test_the_lowest_threshold_crossed_counts(left, expected):
    assert threshold(_found(EventType.CERTIFICATE_EXPIRING, left), NOW) == expected


@pytest.mark.parametrize(
    ("lifetime", "left", "expected"),
    [
        (160 * HOUR, 70 * HOUR, None),
        (160 * HOUR, 30 * HOUR, None),
        (160 * HOUR, 23 * HOUR, 1),
        (45 * DAY, 11 * DAY, None),
        (45 * DAY, 6 * DAY, 7),
        (64 * DAY, 13 * DAY, 14),
    ],
)
def test_lets_encrypt_thresholds_count_only_in_the_last_quarter_of_the_lifetime(lifetime, left, expected):
    assert threshold(_found(EventType.CERTIFICATE_EXPIRING, left, lifetime), NOW) == expected


@pytest.mark.parametrize(("left", "expected"), [(31 * DAY, None), (29 * DAY, 30), (10 * DAY, 14), (HOUR, 1)])
def test_a_custom_certificate_counts_from_thirty_days_whatever_its_lifetime(left, expected):
    found = _found(EventType.CUSTOM_CERTIFICATE_EXPIRING, left, lifetime=40 * DAY)
    assert threshold(found, NOW) == expected


def test_dedupe_keys_name_the_certificate_and_the_threshold_and_expiry_once():
    expiring = _found(EventType.CERTIFICATE_EXPIRING, 2 * DAY)
    expired = _found(EventType.CERTIFICATE_EXPIRED, -HOUR)
    assert dedupe_key(expiring, 3) == "certificate.expiring:42:3"
    assert dedupe_key(expired, threshold(expired, NOW)) == "certificate.expired:42"


def test_an_expiring_reason_ends_with_the_renewal_error_in_its_own_words():
    error = "Renewal failed: the CA refused [unauthorized]. Next renewal attempt at 2026-12-01 00:00:00 UTC."
    found = _found(EventType.CERTIFICATE_EXPIRING, 2 * DAY, renewal_error=error)
    text = describe(found, "www.example.com", 3)
    assert text.startswith(
        "The certificate of www.example.com ends at 2026-12-02 12:00:00 UTC (within 3 days)"
    )
    assert text.endswith(error)


@pytest.mark.parametrize(
    ("to", "expected"),
    [
        (DomainStatus.FAILING, "the words of last_error"),
        (DomainStatus.ACTION_REQUIRED, "the words of last_error"),
        (DomainStatus.IN_USE, "the history's reason"),
    ],
)
def test_a_problem_is_told_in_the_words_of_last_error_and_in_use_in_the_historys(to, expected):
    assert event_reason(to, "the history's reason", "the words of last_error") == expected


def test_a_problem_without_last_error_falls_back_to_the_historys_reason():
    assert event_reason(DomainStatus.FAILING, "the history's reason", "") == "the history's reason"


def test_only_three_statuses_write_an_event():
    writing = {status for status in DomainStatus.values if status_event(status) is not None}
    assert writing == {DomainStatus.ACTION_REQUIRED, DomainStatus.FAILING, DomainStatus.IN_USE}
