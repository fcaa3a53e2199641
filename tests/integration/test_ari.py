"""ACME Renewal Information end to end: certificates issued by Pebble through the test ACME proxy
(which adds RFC 9773's renewalInfo), the ARI sweep run by a real Celery worker against it, and the
renewal sweep acting on what it scheduled. The proxy's windows are set by each test."""

from __future__ import annotations

import datetime
import io
import time
import uuid

import pytest
from django.core.management import call_command
from django.utils import timezone

from certificates.models import Certificate, CertificateSource, Order, renewal_due
from certificates.serving import served_certificate
from domains.models import Domain
from tests.integration.polling import issued, wait_for
from workers import ari_checks, renewals

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

HOUR = datetime.timedelta(hours=1)
DAY = datetime.timedelta(days=1)
SECOND = datetime.timedelta(seconds=1)


def _name() -> str:
    return f"www.ari-{uuid.uuid4().hex[:10]}.com"


def _checked(cert: Certificate) -> Certificate:
    """Runs the ARI sweep (its chunk goes to the worker) and waits for the certificate's answer."""
    asked_before = Certificate.objects.get(pk=cert.pk).ari_next_check
    assert asked_before is not None and asked_before <= timezone.now()
    assert ari_checks.sweep_ari() >= 1
    lease = Certificate.objects.get(pk=cert.pk).ari_next_check
    assert lease > timezone.now()

    def answered():
        # The chunk's write replaces the claim's lease with the real next check (or none).
        row = Certificate.objects.get(pk=cert.pk)
        return row if row.ari_next_check != lease else None

    return wait_for(answered, timeout=30, what="the ARI check's answer")


def _issued(proxied_issuance, app) -> tuple[Domain, Certificate]:
    domain, cert = issued(proxied_issuance.pebble.challtestsrv, app, _name())
    assert cert.ari_cert_id and proxied_issuance.proxy.certificate(cert.ari_cert_id) is not None
    return domain, cert


def test_a_window_in_the_future_schedules_the_renewal_inside_it(proxied_issuance, app):
    proxy = proxied_issuance.proxy
    _, cert = _issued(proxied_issuance, app)
    start = timezone.now().replace(microsecond=0) + 3 * DAY
    proxy.set_window(cert.ari_cert_id, start, start + DAY, explanation_url="https://ca.example/why")

    checked = _checked(cert)

    assert start <= checked.renew_at <= start + DAY
    assert (checked.ari_window_start, checked.ari_window_end) == (start, start + DAY)
    assert checked.ari_explanation_url == "https://ca.example/why"
    assert checked.ari_error == ""
    assert proxy.renewal_info_served_for(cert.ari_cert_id) == 1
    # Not due: the renewal sweep leaves it be.
    assert cert.pk not in renewals.claim_due_renewals()[0]


def test_a_window_moved_into_the_past_renews_now_with_replaces_and_serves_the_new_certificate(
    proxied_issuance, app
):
    proxy = proxied_issuance.proxy
    domain, old = _issued(proxied_issuance, app)
    past = timezone.now() - 2 * DAY
    # The mass-revocation drill: every certificate's window is in the past.
    proxy.move_all_windows(past, past + HOUR, explanation_url="https://ca.example/incident")

    # No renewal sweep is run here: the ARI check task itself claims the renewal it made due.
    checked = _checked(old)
    assert checked.ari_explanation_url == "https://ca.example/incident"
    new = wait_for(
        lambda: (
            Certificate.objects.filter(domain=domain, source=CertificateSource.LETSENCRYPT)
            .exclude(pk=old.pk)
            .first()
        ),
        timeout=60,
        what="the renewed certificate",
    )
    assert served_certificate(domain.name).fingerprint_sha256 == new.fingerprint_sha256
    # The renewal named the certificate it replaces, at the CA and in our order.
    renewal = Order.objects.get(renews=old)
    assert renewal.replaces == old.ari_cert_id
    assert [o["replaces"] for o in proxy.orders if o["replaces"]] == [old.ari_cert_id]
    old.refresh_from_db()
    # Replaced: neither renewed nor asked about any more.
    assert (old.renew_at, old.ari_next_check) == (None, None)
    # The new certificate is asked about at once.
    assert new.ari_next_check is not None and new.ari_next_check <= timezone.now()


def test_a_ca_without_renewal_information_leaves_the_lifetime_rule(proxied_issuance, app, settings):
    proxy = proxied_issuance.proxy
    proxy.ari_enabled = False
    _, cert = _issued(proxied_issuance, app)

    started = timezone.now()
    checked = _checked(cert)

    assert checked.renew_at == renewal_due(cert.not_before, cert.not_after) == cert.renew_at
    assert "offers no renewal information" in checked.ari_error
    interval = datetime.timedelta(seconds=settings.ARI_CHECK_INTERVAL_SECONDS)
    assert started + interval <= checked.ari_next_check <= timezone.now() + interval
    assert proxy.renewal_info_served_for(cert.ari_cert_id) == 0


def test_the_cas_retry_after_sets_the_next_check(proxied_issuance, app):
    proxy = proxied_issuance.proxy
    proxy.retry_after = 120
    _, cert = _issued(proxied_issuance, app)

    started = timezone.now()
    checked = _checked(cert)

    assert started + 120 * SECOND <= checked.ari_next_check <= timezone.now() + 120 * SECOND
    assert checked.ari_checked_at is not None and checked.ari_error == ""


def test_a_server_error_from_renewal_info_leaves_the_renewal_time_and_records_the_error(
    proxied_issuance, app
):
    proxy = proxied_issuance.proxy
    _, cert = _issued(proxied_issuance, app)
    proxy.fail_renewal_info(status=500, times=1)

    started = timezone.now()
    checked = _checked(cert)

    assert checked.renew_at == cert.renew_at
    assert checked.ari_error.startswith(
        "The renewal information could not be fetched: the CA answered HTTP 500"
    )
    assert checked.ari_window_start is None and checked.ari_checked_at is None
    assert (
        started + ari_checks.ERROR_RETRY <= checked.ari_next_check <= timezone.now() + ari_checks.ERROR_RETRY
    )
    # The next check gets the window.
    Certificate.objects.filter(pk=cert.pk).update(ari_next_check=timezone.now())
    again = _checked(cert)
    assert again.ari_error == "" and again.ari_window_start is not None


def test_ari_check_now_asks_the_ca_at_once_and_prints_the_window_and_renewal_time(proxied_issuance, app):
    proxy = proxied_issuance.proxy
    domain, cert = _issued(proxied_issuance, app)
    Certificate.objects.filter(pk=cert.pk).update(ari_next_check=timezone.now() + 5 * HOUR)
    start = timezone.now().replace(microsecond=0) + 10 * DAY
    proxy.set_window(cert.ari_cert_id, start, start + DAY)

    out = io.StringIO()
    started = time.monotonic()
    call_command("ari_check", domain.name, "--now", stdout=out)

    assert time.monotonic() - started < 10
    cert.refresh_from_db()
    assert start <= cert.renew_at <= start + DAY
    text = out.getvalue()
    assert f"window       {start:%Y-%m-%d %H:%M:%S} UTC to {start + DAY:%Y-%m-%d %H:%M:%S} UTC" in text
    assert f"renewal at   {cert.renew_at:%Y-%m-%d %H:%M:%S} UTC" in text
