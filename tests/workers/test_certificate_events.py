"""Certificate events (issue 16): `certificate.issued` and `certificate.renewed` in the transaction that
stores the certificate, `certificate.renewal_failed` with the failure it records, and the hourly
expiry events (`certificate.expiring`, `certificate.expired`, `custom_certificate.expiring`), each
once per threshold however many runs, concurrent ones included, find it."""

from __future__ import annotations

import datetime
import threading
import time
import uuid
from types import SimpleNamespace

import pytest
from django.db import connection, transaction
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from certificates.models import Certificate, CertificateSource, OrderState
from certificates.sealing import seal
from domains.models import Domain, DomainStatus, Event, EventType
from domains.status import change_status
from tests.factories import CertificateFactory, DomainFactory, OrderFactory
from tests.pki import key_pem
from workers import acme_steps
from workers.acme_steps import Carried, step_download
from workers.expiry_events import record_expiry_events
from workers.renewals import record_renewal_failure
from workers.retention import prune_history

DAY = datetime.timedelta(days=1)
HOUR = datetime.timedelta(hours=1)


def _events(**filters) -> list[Event]:
    return list(Event.objects.filter(**filters).order_by("seq"))


class _CA:
    """What step_download asks of the CA: the certificate at the order's URL."""

    def __init__(self, fullchain: str) -> None:
        self.fullchain = fullchain

    def _post_as_get(self, url: str) -> SimpleNamespace:
        return SimpleNamespace(text=self.fullchain)


def _download(trusted, monkeypatch, domain: Domain, renews: Certificate | None = None):
    """Runs the download step of an order for `domain` whose CA hands out a certificate of the test
    PKI; returns the leaf."""
    leaf, key = trusted.leaf([domain.name])
    monkeypatch.setattr(acme_steps, "client_for", lambda account: _CA(trusted.chain_pem(leaf).decode()))
    order = OrderFactory(
        domain=domain,
        state=OrderState.DOWNLOADING,
        lease_token=uuid.uuid4(),
        certificate_url="https://ca.test/cert/1",
        private_key=seal(key_pem(key)),
        renews=renews,
        is_renewal=renews is not None,
    )
    assert step_download(order, Carried()).state == OrderState.VALID
    return leaf


@pytest.mark.django_db
def test_the_first_certificate_is_issued_then_the_domain_in_use(trusted, monkeypatch):
    domain = DomainFactory(status=DomainStatus.CREATING)

    _download(trusted, monkeypatch, domain)

    stored = Certificate.objects.get(domain=domain)
    issued, in_use = _events()
    assert (issued.type, issued.from_status, issued.to_status) == (
        EventType.CERTIFICATE_ISSUED,
        "creating",
        "in_use",
    )
    assert issued.reason.startswith("certificate issued by ")
    assert issued.data["fingerprint_sha256"] == stored.fingerprint_sha256
    assert issued.data["serial"] == stored.serial
    assert issued.data["not_after"] == stored.not_after.isoformat().replace("+00:00", "Z")
    assert issued.data["served"] is True
    assert (in_use.type, in_use.domain_name, in_use.app_name) == (
        EventType.DOMAIN_IN_USE,
        domain.name,
        domain.app.name,
    )


@pytest.mark.django_db
def test_a_later_certificate_is_renewed_and_the_status_writes_no_second_event(trusted, monkeypatch):
    domain = DomainFactory(status=DomainStatus.IN_USE)
    old = CertificateFactory(domain=domain, not_before=timezone.now() - 60 * DAY)

    _download(trusted, monkeypatch, domain, renews=old)

    (renewed,) = _events()
    assert (renewed.type, renewed.from_status, renewed.to_status) == (
        EventType.CERTIFICATE_RENEWED,
        "in_use",
        "in_use",
    )
    assert renewed.reason.startswith("certificate renewed by ")
    assert renewed.data["fingerprint_sha256"] != old.fingerprint_sha256


@pytest.mark.django_db
def test_an_order_after_an_earlier_lets_encrypt_certificate_is_a_renewal_too(trusted, monkeypatch):
    # Let's Encrypt turned off and on again: the check orders anew, for a domain that had one.
    domain = DomainFactory(status=DomainStatus.CREATING)
    CertificateFactory(domain=domain, not_before=timezone.now() - 100 * DAY)

    _download(trusted, monkeypatch, domain)

    assert [event.type for event in _events()] == [EventType.CERTIFICATE_RENEWED, EventType.DOMAIN_IN_USE]


@pytest.mark.django_db
def test_a_counted_renewal_failure_writes_an_event_in_the_words_of_last_error():
    domain = DomainFactory(status=DomainStatus.IN_USE)
    cert = CertificateFactory(domain=domain)
    now = timezone.now()

    assert record_renewal_failure(cert.pk, domain.pk, "the CA refused: no", now)

    (event,) = _events()
    domain.refresh_from_db()
    assert (event.type, event.from_status, event.to_status) == (
        EventType.CERTIFICATE_RENEWAL_FAILED,
        "in_use",
        "in_use",
    )
    assert event.reason == domain.last_error
    assert event.reason.startswith("Renewal failed: the CA refused: no. Next renewal attempt at ")
    assert (event.data["fingerprint_sha256"], event.data["failures"]) == (cert.fingerprint_sha256, 1)


@pytest.mark.django_db
def test_a_renewal_failure_not_counted_writes_no_event():
    domain = DomainFactory(status=DomainStatus.IN_USE)
    cert = CertificateFactory(domain=domain)
    now = timezone.now()

    assert record_renewal_failure(cert.pk, domain.pk, "resolvers timed out", now, retry_at=now, counted=False)

    assert _events() == []


def _served(
    left: datetime.timedelta,
    lifetime: datetime.timedelta = 90 * DAY,
    renewal_error: str = "",
    **domain_fields,
) -> Certificate:
    """A domain in use whose Let's Encrypt certificate of `lifetime` ends `left` from now."""
    now = timezone.now()
    domain = DomainFactory(status=DomainStatus.IN_USE, **domain_fields)
    return CertificateFactory(
        domain=domain, not_before=now + left - lifetime, not_after=now + left, renewal_error=renewal_error
    )


@pytest.mark.django_db
def test_only_the_lowest_threshold_crossed_is_written_and_each_once():
    cert = _served(2 * DAY, renewal_error="Renewal failed: the CA refused. Next renewal attempt at ...")
    now = timezone.now()

    assert record_expiry_events(now) == 1
    assert record_expiry_events(now + HOUR) == 0

    (event,) = _events()
    assert (event.type, event.data["threshold_days"], event.domain_id) == (
        EventType.CERTIFICATE_EXPIRING,
        3,
        cert.domain_id,
    )
    assert (event.from_status, event.to_status) == ("in_use", "in_use")
    assert event.reason.endswith("Renewal failed: the CA refused. Next renewal attempt at ...")
    assert event.dedupe_key == f"certificate.expiring:{cert.pk}:3"
    # A day later it crosses the next one.
    assert record_expiry_events(now + 1.5 * DAY) == 1
    assert [e.data["threshold_days"] for e in _events()] == [3, 1]


@pytest.mark.django_db
def test_each_threshold_is_written_as_it_is_crossed():
    cert = _served(15 * DAY)
    now = timezone.now()

    written = [record_expiry_events(now + days * DAY) for days in (0, 1.5, 8.5, 12.5, 14.5, 15.5)]

    assert written == [0, 1, 1, 1, 1, 1]
    events = _events(domain_id=cert.domain_id)
    assert [(e.type, e.data.get("threshold_days")) for e in events] == [
        (EventType.CERTIFICATE_EXPIRING, 14),
        (EventType.CERTIFICATE_EXPIRING, 7),
        (EventType.CERTIFICATE_EXPIRING, 3),
        (EventType.CERTIFICATE_EXPIRING, 1),
        (EventType.CERTIFICATE_EXPIRED, None),
    ]
    assert events[-1].reason.startswith(f"The certificate of {events[-1].domain_name} expired at ")


@pytest.mark.django_db
def test_a_certificate_followed_by_a_valid_one_is_not_expiring_nor_expired():
    cert = _served(2 * DAY)
    CertificateFactory(
        domain=cert.domain, not_before=timezone.now() - DAY, not_after=timezone.now() + 89 * DAY
    )

    assert record_expiry_events(timezone.now()) == 0
    assert record_expiry_events(timezone.now() + 3 * DAY) == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("lifetime", "left", "threshold"),
    [
        (160 * HOUR, 60 * HOUR, None),  # a short-lived certificate on time
        (160 * HOUR, 20 * HOUR, 1),  # ... and one whose renewal is late
        (45 * DAY, 10 * DAY, None),  # 14 days is not in the last quarter of 45
        (45 * DAY, 5 * DAY, 7),
    ],
)
def test_thresholds_count_only_in_the_last_quarter_of_a_lets_encrypt_lifetime(lifetime, left, threshold):
    _served(left, lifetime)

    record_expiry_events(timezone.now())

    assert [e.data["threshold_days"] for e in _events()] == ([] if threshold is None else [threshold])


@pytest.mark.django_db
def test_a_lets_encrypt_certificate_of_a_domain_with_lets_encrypt_off_is_not_expiring():
    _served(2 * DAY, letsencrypt_enabled=False)

    assert record_expiry_events(timezone.now()) == 0


@pytest.mark.django_db
def test_a_custom_certificate_says_whether_lets_encrypt_takes_over():
    now = timezone.now()
    covered = DomainFactory(status=DomainStatus.NOT_USED)
    custom = CertificateFactory(
        domain=covered, source=CertificateSource.CUSTOM, not_before=now - 300 * DAY, not_after=now + 20 * DAY
    )
    CertificateFactory(domain=covered, not_before=now - 10 * DAY, not_after=now + 80 * DAY)
    alone = DomainFactory(status=DomainStatus.DISABLED, letsencrypt_enabled=False)
    CertificateFactory(
        domain=alone, source=CertificateSource.CUSTOM, not_before=now - 300 * DAY, not_after=now + 5 * DAY
    )

    assert record_expiry_events(now) == 2

    first, second = sorted(_events(), key=lambda e: e.domain_id != covered.pk)
    assert (first.type, first.data["threshold_days"], first.data["letsencrypt_takes_over"]) == (
        EventType.CUSTOM_CERTIFICATE_EXPIRING,
        30,
        True,
    )
    assert first.dedupe_key == f"custom_certificate.expiring:{custom.pk}:30"
    assert "its Let's Encrypt certificate is served after it" in first.reason
    assert (second.type, second.data["threshold_days"], second.data["letsencrypt_takes_over"]) == (
        EventType.CUSTOM_CERTIFICATE_EXPIRING,
        7,
        False,
    )
    assert second.data["letsencrypt_enabled"] is False
    assert "Let's Encrypt is disabled for this domain" in second.reason


@pytest.mark.django_db
def test_an_expired_custom_certificate_with_nothing_after_it_is_expired_once():
    now = timezone.now()
    domain = DomainFactory(status=DomainStatus.DISABLED, letsencrypt_enabled=False)
    CertificateFactory(
        domain=domain, source=CertificateSource.CUSTOM, not_before=now - 300 * DAY, not_after=now - HOUR
    )

    assert record_expiry_events(now) == 1
    assert record_expiry_events(now) == 0

    (event,) = _events()
    assert (event.type, event.data["source"]) == (EventType.CERTIFICATE_EXPIRED, "custom")


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_runs_write_each_event_once():
    certs = [_served(2 * DAY) for _ in range(3)] + [_served(-HOUR)]
    now = timezone.now()
    results: list[int] = []

    def run() -> None:
        try:
            results.append(record_expiry_events(now))
        finally:
            connection.close()

    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        # Both runs find the events due before either writes, and meet at the domains' locks,
        # held here until both wait: the second one's insert meets the first one's rows.
        try:
            with transaction.atomic():
                list(Domain.objects.select_for_update().filter(pk__in=[c.domain_id for c in certs]))
                locked.set()
                release.wait(30)
        finally:
            connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    assert locked.wait(10)
    runs = [threading.Thread(target=run) for _ in range(2)]
    for thread in runs:
        thread.start()
    deadline = time.monotonic() + 20
    while _waiting_on_locks() < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    waited = _waiting_on_locks()
    release.set()
    for thread in [holder, *runs]:
        thread.join(timeout=30)

    assert waited == 2, "both runs should have waited at the domains' locks"
    assert sorted(results) == [0, 4]
    assert (
        sorted(e.type for e in _events())
        == [EventType.CERTIFICATE_EXPIRED] + [EventType.CERTIFICATE_EXPIRING] * 3
    )


def _waiting_on_locks() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0]


@pytest.mark.django_db
def test_old_events_are_pruned_with_the_history():
    domain = DomainFactory(status=DomainStatus.CREATING)

    change_status(
        domain.pk, DomainStatus.FAILING, "failed", now=timezone.now() - 100 * DAY, last_error="failed"
    )
    change_status(domain.pk, DomainStatus.IN_USE, "issued", now=timezone.now() - DAY)

    assert prune_history()["outbox events"] == 1

    assert [e.type for e in _events()] == [EventType.DOMAIN_IN_USE]


@pytest.mark.django_db
def test_beat_records_expiry_events_hourly_on_the_default_queue():
    task = PeriodicTask.objects.get(name="Record expiry events")
    assert task.task == "workers.tasks.housekeeping.record_expiry_events"
    assert (task.interval.every, task.interval.period, task.queue) == (3600, "seconds", "default")


@pytest.mark.django_db
def test_operators_see_the_outbox_read_only(admin_client):
    domain = DomainFactory(status=DomainStatus.CREATING)
    change_status(domain.pk, DomainStatus.FAILING, "failed", last_error="the CA said no")
    event = Event.objects.get()

    listing = admin_client.get("/admin/domains/event/")
    page = admin_client.get(f"/admin/domains/event/{event.pk}/change/")

    assert listing.status_code == 200 and domain.name in listing.content.decode()
    assert page.status_code == 200 and "the CA said no" in page.content.decode()
    assert admin_client.post(f"/admin/domains/event/{event.pk}/delete/", {"post": "yes"}).status_code == 403
    assert Event.objects.filter(pk=event.pk).exists()
