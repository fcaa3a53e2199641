"""The ARI sweep (workers/ari_checks.py) with the real database: its claim, its batching, its skip
rules and what it writes for each kind of answer. The CA here is a small local HTTP server that
answers a directory and renewalInfo as the test says; the sweep against the test ACME proxy in front
of Pebble is tests/integration/test_ari.py."""

from __future__ import annotations

import datetime
import io
import threading
import time

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.utils import timezone

from certificates.directory import forget_directories
from certificates.models import Certificate, CertificateSource, Order, OrderState
from tests.ari_stub_ca import StubCA
from tests.factories import AcmeAccountFactory, CertificateFactory, DomainFactory
from workers import ari_checks

HOUR = datetime.timedelta(hours=1)
SECOND = datetime.timedelta(seconds=1)
DAY = datetime.timedelta(days=1)


@pytest.fixture
def ca():
    forget_directories()
    stub = StubCA()
    yield stub
    stub.stop()
    forget_directories()


@pytest.fixture
def account(ca):
    return AcmeAccountFactory(directory_url=ca.directory_url)


_ids = iter(range(1, 1_000_000))


def _cert(account, now, **kwargs) -> Certificate:
    n = next(_ids)
    defaults = {
        "account": account,
        "ari_cert_id": f"aki{n}.serial{n}",
        "ari_next_check": now - HOUR,
        "not_before": now - 10 * DAY,
        "not_after": now + 80 * DAY,
        "renew_at": now + 50 * DAY,
    }
    return CertificateFactory(**{**defaults, **kwargs})


def _now() -> datetime.datetime:
    # Whole seconds, as renewal times are: a window's bounds then compare exactly with them.
    return timezone.now().replace(microsecond=0)


def _check(now):
    ids, lease = ari_checks.claim_due_checks(now)
    return ari_checks.check_claimed(ids, lease, now)


@pytest.mark.django_db
def test_the_claim_takes_due_certificates_oldest_first_and_leases_them(account):
    now = _now()
    oldest, older, old = (_cert(account, now, ari_next_check=now - days * HOUR) for days in (3, 2, 1))
    _cert(account, now, ari_next_check=now + HOUR)
    _cert(account, now, ari_next_check=None)

    first, lease = ari_checks.claim_due_checks(now, limit=2)
    assert set(first) == {oldest.pk, older.pk}
    oldest.refresh_from_db()
    assert oldest.ari_next_check == lease > now
    assert ari_checks.claim_due_checks(now, limit=2)[0] == [old.pk]
    assert ari_checks.claim_due_checks(now, limit=2)[0] == []


@pytest.mark.django_db(transaction=True)
def test_two_claims_never_take_the_same_certificate(account):
    now = _now()
    held, free = _cert(account, now, ari_next_check=now - 2 * HOUR), _cert(account, now)
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        # Another sweep's claim, still in its transaction.
        with transaction.atomic():
            ids, _ = ari_checks.claim_due_checks(now, limit=1)
            assert ids == [held.pk]
            locked.set()
            release.wait(10)
        connection.close()

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert locked.wait(10)
        assert ari_checks.claim_due_checks(now)[0] == [free.pk]
    finally:
        release.set()
        thread.join()
    # The first claim committed its lease: nothing is due any more.
    assert ari_checks.claim_due_checks(now)[0] == []


@pytest.mark.django_db
def test_the_sweep_claims_in_batches_up_to_its_maximum_and_sends_chunks(
    account, settings, monkeypatch, django_capture_on_commit_callbacks
):
    now = _now()
    certs = [_cert(account, now, ari_next_check=now - i * HOUR) for i in range(7)]
    settings.ARI_SWEEP_BATCH = 3
    settings.ARI_SWEEP_MAX = 5
    monkeypatch.setattr(ari_checks, "CHUNK", 2)
    sent = []
    monkeypatch.setattr(ari_checks, "check_renewal_info_later", lambda ids, lease: sent.append((ids, lease)))
    assert ari_checks.sweep_ari(now) == 5
    assert [len(ids) for ids, _ in sent] == [2, 1, 2]
    assert len({pk for ids, _ in sent for pk in ids}) == 5
    # The five most overdue; two are left for the next tick.
    assert {pk for ids, _ in sent for pk in ids} == {c.pk for c in certs[2:]}
    assert Certificate.objects.filter(ari_next_check__lte=now).count() == 2


@pytest.mark.django_db
def test_a_window_in_the_future_schedules_the_renewal_inside_it_and_is_stored(ca, account, settings):
    now = _now()
    cert = _cert(account, now)
    start, end = now + 3 * DAY, now + 4 * DAY
    ca.window(cert.ari_cert_id, start, end, retry_after="3600", explanation="https://ca.example/why")

    counts = _check(now)

    cert.refresh_from_db()
    assert counts == {"claimed": 1, "windows": 1, "rescheduled": 1, "due_now": 0, "failed": 0, "skipped": 0}
    assert start <= cert.renew_at <= end
    assert (cert.ari_window_start, cert.ari_window_end) == (start, end)
    assert cert.ari_explanation_url == "https://ca.example/why"
    assert cert.ari_checked_at == now
    assert cert.ari_error == ""
    assert cert.ari_next_check == now + HOUR
    assert ca.requests[-1] == f"/renewal-info/{cert.ari_cert_id}"


@pytest.mark.django_db
def test_the_next_check_counts_from_the_claim_not_from_the_answer_so_a_tick_is_not_lost(ca, account):
    claimed = _now()
    cert = _cert(account, claimed)
    ca.window(cert.ari_cert_id, claimed + 3 * DAY, claimed + 4 * DAY, retry_after="3600")
    ids, lease = ari_checks.claim_due_checks(claimed)
    # The chunk runs 30 s after the claim (a busy queue): the next check is still an hour after
    # the claim, so the tick an hour later takes it.
    ari_checks.check_claimed(ids, lease, claimed + 30 * SECOND)
    cert.refresh_from_db()
    assert cert.ari_next_check == claimed + HOUR


@pytest.mark.django_db
def test_the_check_interval_caps_a_longer_retry_after(ca, account, settings):
    # An incident drill: checks every minute whatever the CA's six hours.
    settings.ARI_CHECK_INTERVAL_SECONDS = 60
    now = _now()
    cert = _cert(account, now)
    ca.window(cert.ari_cert_id, now + DAY, now + 2 * DAY, retry_after="21600")
    _check(now)
    cert.refresh_from_db()
    assert cert.ari_next_check == now + datetime.timedelta(seconds=60)


@pytest.mark.django_db
def test_a_window_in_the_past_makes_the_renewal_due_now(ca, account):
    now = _now()
    cert = _cert(account, now)
    ca.window(cert.ari_cert_id, now - 2 * DAY, now - DAY)
    assert _check(now)["due_now"] == 1
    cert.refresh_from_db()
    assert cert.renew_at == now


@pytest.mark.django_db
def test_the_check_task_claims_a_renewal_due_now_without_waiting_for_the_renewal_tick(ca, account):
    now = _now()
    cert = _cert(account, now)
    ca.window(cert.ari_cert_id, now - 2 * DAY, now - DAY)
    claimed, lease = ari_checks.claim_due_checks(now)
    counts = ari_checks.check_claimed_and_renew(claimed, lease)
    assert (counts["due_now"], counts["renewals_claimed"]) == (1, 1)
    cert.refresh_from_db()
    assert cert.renewal_claim is not None


@pytest.mark.django_db
def test_the_same_window_again_keeps_the_renewal_time_it_drew(ca, account):
    now = _now()
    cert = _cert(account, now)
    ca.window(cert.ari_cert_id, now + 3 * DAY, now + 4 * DAY, retry_after="60")
    _check(now)
    cert.refresh_from_db()
    drawn = cert.renew_at
    later = now + 2 * HOUR
    # Re-drawing on every answer would drift the time towards the window's start: 20 draws would
    # almost surely find an earlier moment.
    for _ in range(20):
        Certificate.objects.filter(pk=cert.pk).update(ari_next_check=later)
        assert _check(later)["rescheduled"] == 0
    cert.refresh_from_db()
    assert cert.renew_at == drawn


@pytest.mark.django_db
def test_a_moved_window_reschedules_the_renewal_into_the_new_window(ca, account):
    now = _now()
    cert = _cert(account, now)
    ca.window(cert.ari_cert_id, now + 3 * DAY, now + 4 * DAY)
    _check(now)
    ca.window(cert.ari_cert_id, now + HOUR, now + 2 * HOUR, explanation="https://ca.example/incident")
    Certificate.objects.filter(pk=cert.pk).update(ari_next_check=now)
    assert _check(now)["rescheduled"] == 1
    cert.refresh_from_db()
    assert now + HOUR <= cert.renew_at <= now + 2 * HOUR
    assert cert.ari_explanation_url == "https://ca.example/incident"


@pytest.mark.django_db
def test_a_renewal_scheduled_after_an_unchanged_window_is_pulled_into_it(ca, account):
    now = _now()
    start, end = now + 3 * DAY, now + 4 * DAY
    cert = _cert(account, now, ari_window_start=start, ari_window_end=end, renew_at=now + 50 * DAY)
    ca.window(cert.ari_cert_id, start, end)
    _check(now)
    cert.refresh_from_db()
    assert start <= cert.renew_at <= end


@pytest.mark.django_db
@pytest.mark.parametrize("state", ["claimed", "failing", "waiting for quota", "order in flight"])
def test_a_renewal_claimed_failing_waiting_or_in_flight_keeps_its_time_but_the_window_is_stored(
    ca, account, state
):
    now = _now()
    renew_at = now + 20 * HOUR
    extra = {
        "claimed": {"renewal_claim": "6f1c1a2e-0000-4000-8000-000000000001"},
        "failing": {"renewal_failures": 2},
        "waiting for quota": {"renewal_reservation": "6f1c1a2e-0000-4000-8000-000000000002"},
        "order in flight": {},
    }[state]
    cert = _cert(account, now, renew_at=renew_at, **extra)
    if state == "order in flight":
        Order.objects.create(
            domain=cert.domain, account=account, names=[cert.domain.name], state=OrderState.FINALIZING
        )
    ca.window(cert.ari_cert_id, now - 2 * DAY, now - DAY)
    _check(now)
    cert.refresh_from_db()
    assert cert.renew_at == renew_at
    assert cert.ari_window_end == now - DAY


@pytest.mark.django_db
def test_a_server_error_leaves_the_renewal_time_and_retries_later_saying_why(ca, account):
    now = _now()
    cert = _cert(account, now)
    ca.answers[cert.ari_cert_id] = (
        500,
        b'{"type": "urn:ietf:params:acme:error:serverInternal", "detail": "db down"}',
        {},
    )
    counts = _check(now)
    cert.refresh_from_db()
    assert counts["failed"] == 1
    assert cert.renew_at == now + 50 * DAY
    assert cert.ari_error.startswith(
        "The renewal information could not be fetched: the CA answered HTTP 500 (db down)"
    )
    assert "Next check at" in cert.ari_error
    assert cert.ari_next_check == now + ari_checks.ERROR_RETRY
    assert cert.ari_checked_at is None


@pytest.mark.django_db
def test_a_rate_limited_check_waits_for_the_cas_retry_after(ca, account):
    now = _now()
    cert = _cert(account, now)
    ca.answers[cert.ari_cert_id] = (429, b"{}", {"Retry-After": "1800"})
    _check(now)
    cert.refresh_from_db()
    assert cert.ari_next_check == now + 30 * datetime.timedelta(minutes=1)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("answer", "says"),
    [
        ((404, b"", {}), "The CA has no renewal information for this certificate (HTTP 404)"),
        (
            (200, b'{"suggestedWindow": {}}', {}),
            "The CA's renewal information is malformed: suggestedWindow.start",
        ),
        ((403, b'{"detail": "forbidden"}', {}), "The CA refused the request: HTTP 403 (forbidden)"),
        ((200, b"x" * 20000, {}), "larger than 16 KiB"),
    ],
)
def test_a_lasting_failure_leaves_the_renewal_time_and_asks_again_after_the_interval(
    ca, account, settings, answer, says
):
    now = _now()
    cert = _cert(account, now)
    ca.answers[cert.ari_cert_id] = answer
    _check(now)
    cert.refresh_from_db()
    assert says in cert.ari_error
    assert cert.renew_at == now + 50 * DAY
    assert cert.ari_next_check == now + datetime.timedelta(seconds=settings.ARI_CHECK_INTERVAL_SECONDS)


@pytest.mark.django_db
def test_an_answer_slower_than_the_deadline_is_a_temporary_failure_and_does_not_hold_the_others(
    ca, account, monkeypatch
):
    monkeypatch.setattr(ari_checks, "DEADLINE_SECONDS", 0.5)
    now = _now()
    slow, quick = _cert(account, now), _cert(account, now)
    for cert in (slow, quick):
        ca.window(cert.ari_cert_id, now + DAY, now + 2 * DAY)
    ca.slow[slow.ari_cert_id] = 3
    started = time.monotonic()
    counts = _check(now)
    assert time.monotonic() - started < 2.5
    assert (counts["windows"], counts["failed"]) == (1, 1)
    slow.refresh_from_db()
    assert "no whole answer within 0.5 s" in slow.ari_error
    assert slow.ari_next_check == now + ari_checks.ERROR_RETRY


@pytest.mark.django_db
def test_without_renewal_info_in_the_directory_the_lifetime_rule_stays(ca, account, settings):
    now = _now()
    ca.ari = False
    cert = _cert(account, now)
    _check(now)
    cert.refresh_from_db()
    assert cert.renew_at == now + 50 * DAY
    assert cert.ari_next_check == now + datetime.timedelta(seconds=settings.ARI_CHECK_INTERVAL_SECONDS)
    assert "offers no renewal information" in cert.ari_error
    assert ca.requests == ["/dir"]


@pytest.mark.django_db
def test_a_renewal_info_url_that_is_no_url_fails_each_certificate_not_the_chunk(ca, account, settings):
    now = _now()
    cert = _cert(account, now)
    ca.directory_answer = (
        200,
        b'{"newOrder": "http://ca.example/o", "renewalInfo": "http://[::1/renewal-info"}',
    )
    counts = _check(now)
    cert.refresh_from_db()
    assert counts["failed"] == 1
    assert "is not usable" in cert.ari_error
    assert cert.ari_next_check == now + datetime.timedelta(seconds=settings.ARI_CHECK_INTERVAL_SECONDS)


@pytest.mark.django_db
def test_an_unreachable_ca_is_recorded_and_retried(account, settings):
    now = _now()
    dead = AcmeAccountFactory(directory_url="http://127.0.0.1:9/dir")
    cert = _cert(dead, now)
    _check(now)
    cert.refresh_from_db()
    assert "could not be read: cannot connect" in cert.ari_error
    assert cert.ari_next_check == now + ari_checks.ERROR_RETRY
    assert cert.renew_at == now + 50 * DAY


@pytest.mark.django_db
def test_certificates_not_worth_asking_about_get_no_next_check_and_no_request(ca, account):
    now = _now()
    custom = _cert(account, now, source=CertificateSource.CUSTOM, renew_at=None)
    replaced = _cert(account, now, renew_at=None)
    expired = _cert(account, now, not_before=now - 90 * DAY, not_after=now - HOUR)
    revoked = _cert(account, now, revoked_at=now - HOUR, revocation_reason="keyCompromise")
    anonymous = _cert(account, now, ari_cert_id="")
    kept = _cert(account, now, renew_at=None, renewal_claim="6f1c1a2e-0000-4000-8000-000000000003")
    ca.window(kept.ari_cert_id, now + DAY, now + 2 * DAY)

    counts = _check(now)

    assert counts["skipped"] == 5 and counts["windows"] == 1
    for cert in (custom, replaced, expired, revoked, anonymous):
        cert.refresh_from_db()
        assert cert.ari_next_check is None
    assert [path for path in ca.requests if "renewal-info" in path] == [f"/renewal-info/{kept.ari_cert_id}"]


@pytest.mark.django_db
def test_a_chunk_whose_lease_was_taken_over_writes_nothing(ca, account):
    now = _now()
    cert = _cert(account, now)
    ca.window(cert.ari_cert_id, now - 2 * DAY, now - DAY)
    ids, stale = ari_checks.claim_due_checks(now)
    # The lease ran out and another sweep claimed the certificate again.
    later = now + ari_checks.LEASE + HOUR
    ids_again, lease = ari_checks.claim_due_checks(later)
    assert ids_again == ids
    assert ari_checks.check_claimed(ids, stale, now)["windows"] == 0
    cert.refresh_from_db()
    assert (cert.renew_at, cert.ari_next_check) == (now + 50 * DAY, lease)


@pytest.mark.django_db
def test_a_chunk_checks_many_certificates_with_a_constant_number_of_queries(
    ca, account, django_assert_max_num_queries
):
    now = _now()
    certs = [_cert(account, now) for _ in range(40)]
    for cert in certs:
        ca.window(cert.ari_cert_id, now + DAY, now + 2 * DAY)
    ids, lease = ari_checks.claim_due_checks(now)
    with django_assert_max_num_queries(8):
        counts = ari_checks.check_claimed(ids, lease, now)
    assert counts["windows"] == 40


@pytest.mark.django_db
def test_ari_check_marks_the_named_domains_certificates_due_and_reports_unknown_names(account):
    now = _now()
    domain = DomainFactory(name="shop.example.com")
    cert = _cert(account, now, domain=domain, ari_next_check=now + 5 * HOUR)
    other = _cert(account, now, ari_next_check=now + 5 * HOUR)
    out = io.StringIO()
    with pytest.raises(CommandError, match=r"not found: nowhere\.example\.org"):
        call_command("ari_check", "SHOP.example.com", "nowhere.example.org", stdout=out)
    assert "1 certificate due for an ARI check now" in out.getvalue()
    cert.refresh_from_db()
    other.refresh_from_db()
    assert cert.ari_next_check <= timezone.now()
    assert other.ari_next_check == now + 5 * HOUR


@pytest.mark.django_db
def test_ari_check_finds_certificates_by_ari_id_or_serial(account):
    now = _now()
    by_id = _cert(account, now, ari_next_check=None)
    by_serial = _cert(account, now, serial="abcdef01", ari_next_check=None)
    out = io.StringIO()
    call_command("ari_check", "--issuer-cert-ids", by_id.ari_cert_id, "AB:CD:EF:01", stdout=out)
    assert "2 certificates due" in out.getvalue()
    assert (
        Certificate.objects.filter(pk__in=[by_id.pk, by_serial.pk], ari_next_check__isnull=False).count() == 2
    )


@pytest.mark.django_db
def test_ari_check_now_checks_inline_and_prints_the_window_and_renewal_time(ca, account):
    now = _now()
    domain = DomainFactory(name="shop.example.com")
    cert = _cert(account, now, domain=domain, ari_next_check=now + 5 * HOUR)
    ca.window(cert.ari_cert_id, now - 2 * DAY, now - DAY, explanation="https://ca.example/incident")
    out = io.StringIO()
    call_command("ari_check", "shop.example.com", "--now", stdout=out)
    text = out.getvalue()
    cert.refresh_from_db()
    assert "shop.example.com" in text
    assert f"window       {(now - 2 * DAY):%Y-%m-%d %H:%M:%S} UTC to" in text
    assert "explanation  https://ca.example/incident" in text
    assert f"renewal at   {cert.renew_at:%Y-%m-%d %H:%M:%S} UTC" in text
    assert cert.renew_at <= timezone.now()
    assert "Checked 1: 1 windows, 1 renewals rescheduled, 0 failed." in text


@pytest.mark.django_db
def test_ari_check_refuses_to_guess_what_to_check():
    with pytest.raises(CommandError, match="say which certificates"):
        call_command("ari_check")
    with pytest.raises(CommandError, match="give it no names"):
        call_command("ari_check", "--all", "shop.example.com")


@pytest.mark.django_db
def test_beat_runs_the_ari_sweep_every_minute_on_the_dns_queue():
    from django_celery_beat.models import PeriodicTask

    task = PeriodicTask.objects.get(name="Check renewal information (ARI)")
    assert task.task == "workers.tasks.dns.sweep_ari_checks"
    assert (task.interval.every, task.interval.period, task.queue, task.enabled) == (
        60,
        "seconds",
        "dns",
        True,
    )


@pytest.mark.django_db
def test_domains_show_prints_the_renewal_time_and_the_cas_window(account):
    now = _now()
    domain = DomainFactory(name="shop.example.com")
    _cert(
        account,
        now,
        domain=domain,
        renew_at=now + 30 * HOUR,
        ari_window_start=now + DAY,
        ari_window_end=now + 2 * DAY,
        ari_explanation_url="https://ca.example/incident",
        ari_error="The CA answered HTTP 500.",
    )
    out = io.StringIO()
    call_command("domains-show", "shop.example.com", stdout=out)
    text = out.getvalue()
    assert f"renewal at    {now + 30 * HOUR:%Y-%m-%d %H:%M:%S} UTC" in text
    assert f"ari window    {now + DAY:%Y-%m-%d %H:%M:%S} to {now + 2 * DAY:%Y-%m-%d %H:%M:%S} UTC" in text
    assert "ari why       https://ca.example/incident" in text
    assert "ari error     The CA answered HTTP 500." in text
