"""The renewal sweep's claim and the cases it settles without DNS or the CA."""

from __future__ import annotations

import datetime
import threading

import pytest
from django.db import connection, transaction
from django.utils import timezone

from certificates.models import Order, OrderState, renewal_due
from domains.models import DomainStatus
from tests.callbacks import task_sends
from tests.factories import AcmeAccountFactory, CertificateFactory, DomainFactory
from workers import renewals

DAY = datetime.timedelta(days=1)


@pytest.mark.parametrize(
    ("lifetime_days", "due_day"), [(90, 60), (64, 64 * 2 / 3), (45, 30), (10, 10 * 2 / 3)]
)
def test_a_certificate_of_ten_days_or_more_is_due_two_thirds_into_its_own_lifetime(lifetime_days, due_day):
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    assert renewal_due(start, start + lifetime_days * DAY) == start + due_day * DAY


@pytest.mark.parametrize(
    ("lifetime", "due"),
    [
        (datetime.timedelta(hours=160), datetime.timedelta(hours=80)),
        (6 * DAY, 3 * DAY),
        (9.9 * DAY, 4.95 * DAY),
    ],
)
def test_a_certificate_of_under_ten_days_is_due_half_way_through_its_lifetime(lifetime, due):
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    assert renewal_due(start, start + lifetime) == start + due


def _cert(renew_at, **kwargs):
    return CertificateFactory(renew_at=renew_at, **kwargs)


@pytest.mark.django_db
def test_the_claim_takes_due_certificates_oldest_first_and_leases_them():
    now = timezone.now()
    oldest, older, old = (_cert(now - days * DAY) for days in (3, 2, 1))
    _cert(now + DAY)
    _cert(None)

    first, token = renewals.claim_due_renewals(now, limit=2)
    assert set(first) == {oldest.pk, older.pk}
    oldest.refresh_from_db()
    assert oldest.renewal_claim == token
    assert oldest.renew_at > now
    assert renewals.claim_due_renewals(now, limit=2)[0] == [old.pk]
    # Leased: nothing is due again until the lease ends.
    assert renewals.claim_due_renewals(now, limit=2)[0] == []


@pytest.mark.django_db(transaction=True)
def test_the_claim_skips_a_certificate_another_transaction_holds():
    now = timezone.now()
    held, free = _cert(now - 2 * DAY), _cert(now - DAY)
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        with transaction.atomic():
            list(type(held).objects.select_for_update().filter(pk=held.pk))
            locked.set()
            release.wait(10)
        connection.close()

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert locked.wait(10)
        assert renewals.claim_due_renewals(now)[0] == [free.pk]
    finally:
        release.set()
        thread.join()
    assert renewals.claim_due_renewals(now)[0] == [held.pk]


@pytest.mark.django_db
def test_a_domain_with_lets_encrypt_disabled_is_no_longer_renewed():
    now = timezone.now()
    domain = DomainFactory(letsencrypt_enabled=False, status=DomainStatus.DISABLED)
    cert = _cert(now - DAY, domain=domain)
    ids, token = renewals.claim_due_renewals(now)
    counts = renewals.renew_claimed(ids, str(token), now)
    cert.refresh_from_db()
    assert counts["skipped"] == 1 and counts["ordered"] == 0
    assert (cert.renew_at, cert.renewal_claim) == (None, None)
    assert not Order.objects.exists()


@pytest.mark.django_db
def test_a_domain_with_an_order_in_flight_is_looked_at_again_after_the_orders_time():
    now = timezone.now()
    cert = _cert(now - DAY)
    Order.objects.create(
        domain=cert.domain,
        account=AcmeAccountFactory(),
        names=[cert.domain.name],
        state=OrderState.VALIDATING,
    )
    ids, token = renewals.claim_due_renewals(now)
    counts = renewals.renew_claimed(ids, str(token), now)
    cert.refresh_from_db()
    assert counts["skipped"] == 1
    assert cert.renew_at == renewals._order_lease(now)
    assert Order.objects.count() == 1


@pytest.mark.django_db
def test_a_claim_no_longer_held_renews_nothing():
    now = timezone.now()
    cert = _cert(now - DAY)
    ids, _ = renewals.claim_due_renewals(now)
    counts = renewals.renew_claimed(ids, "00000000-0000-0000-0000-000000000000", now)
    assert counts == {"claimed": 0, "ordered": 0, "failed": 0, "waiting": 0, "skipped": 0}
    cert.refresh_from_db()
    assert cert.renewal_claim is not None


@pytest.mark.django_db
def test_retry_now_on_a_served_domain_renews_its_certificate_at_once_with_the_backoff_reset(
    django_capture_on_commit_callbacks,
):
    from domains.services import retry_now

    now = timezone.now()
    domain = DomainFactory(status=DomainStatus.IN_USE)
    cert = _cert(now + 5 * DAY, domain=domain, renewal_failures=4, renewal_error="Renewal failed: x")
    with django_capture_on_commit_callbacks() as callbacks:
        assert retry_now(domain, now) == f"{domain.name}: renewing its certificate now"
    cert.refresh_from_db()
    assert cert.renewal_claim is not None and cert.renewal_failures == 0
    assert len(task_sends(callbacks)) == 1
    # The claim is the renewal task's: a second retry while it runs finds nothing to claim again.
    Order.objects.create(
        domain=domain, account=AcmeAccountFactory(), names=[domain.name], is_renewal=True, renews=cert
    )
    assert retry_now(domain, now) == f"{domain.name}: continuing its order now"
