"""Pruning: Let's Encrypt certificates nothing will renew go, keys included, a retention period
after they end; the rest stay."""

from __future__ import annotations

import datetime

import pytest
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from certificates.models import Certificate, CertificateSource, Order
from tests.factories import AcmeAccountFactory, CertificateFactory, DomainFactory
from workers.expiry import prune_expired_certificates

pytestmark = pytest.mark.django_db

DAY = datetime.timedelta(days=1)


def _ended(days_ago: float, **kwargs) -> Certificate:
    """A 90-day certificate that ended `days_ago` days ago."""
    not_after = timezone.now() - days_ago * DAY
    return CertificateFactory(not_before=not_after - 90 * DAY, not_after=not_after, **kwargs)


def test_a_replaced_letsencrypt_certificate_goes_after_the_retention_period_not_before():
    domain = DomainFactory()
    gone = _ended(31, domain=domain, renew_at=None)
    kept = _ended(29, domain=domain, renew_at=None)
    current = CertificateFactory(domain=domain, renew_at=timezone.now() + 60 * DAY)
    assert prune_expired_certificates() == 1
    assert set(Certificate.objects.filter(domain=domain)) == {kept, current}
    assert not Certificate.objects.filter(pk=gone.pk).exists()


def test_a_certificate_whose_renewal_keeps_failing_stays_since_the_sweep_works_from_it():
    failing = _ended(200, renew_at=timezone.now() + DAY, renewal_failures=12)
    assert prune_expired_certificates() == 0
    assert Certificate.objects.filter(pk=failing.pk).exists()


def test_an_expired_custom_certificate_stays_until_its_owner_removes_it():
    custom = _ended(400, source=CertificateSource.CUSTOM, renew_at=None)
    assert prune_expired_certificates() == 0
    assert Certificate.objects.filter(pk=custom.pk).exists()


def test_the_retention_setting_is_honoured_and_zero_prunes_at_once(settings):
    settings.CERTIFICATE_RETENTION_DAYS = 0
    ended = _ended(0.01, renew_at=None)
    valid = CertificateFactory(renew_at=None)
    assert prune_expired_certificates() == 1
    assert list(Certificate.objects.all()) == [valid]
    assert not Certificate.objects.filter(pk=ended.pk).exists()


def test_an_order_that_renewed_a_pruned_certificate_keeps_its_row_without_the_link():
    old = _ended(45, renew_at=None)
    order = Order.objects.create(
        domain=old.domain, account=AcmeAccountFactory(), names=[old.domain.name], is_renewal=True, renews=old
    )
    assert prune_expired_certificates() == 1
    order.refresh_from_db()
    assert order.renews is None and order.is_renewal


def test_pruning_goes_in_batches_until_nothing_is_left():
    for _ in range(7):
        _ended(40, renew_at=None)
    assert prune_expired_certificates(batch=3) == 7
    assert not Certificate.objects.exists()
    assert prune_expired_certificates() == 0


def test_beat_prunes_hourly_on_the_default_queue():
    task = PeriodicTask.objects.get(name="Prune expired certificates")
    assert task.task == "workers.tasks.housekeeping.prune_certificates"
    assert (task.interval.every, task.interval.period, task.queue) == (3600, "seconds", "default")
