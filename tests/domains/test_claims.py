"""Sweeps and steps claim their work, so nothing is processed twice."""

from __future__ import annotations

import datetime
import threading
import uuid

import pytest
from django.db import connection
from django.utils import timezone

from certificates.models import Order, OrderState
from domains.models import Domain, DomainStatus
from tests.factories import DomainFactory, OrderFactory
from workers import domain_checks, order_run


def _due_domains(count: int) -> list[int]:
    past = timezone.now() - datetime.timedelta(minutes=1)
    return [DomainFactory(status=DomainStatus.PENDING_DNS, next_attempt_at=past).pk for _ in range(count)]


@pytest.mark.django_db
def test_a_claimed_domain_is_not_claimed_again_until_its_lease_expires(settings):
    ids = _due_domains(3)
    DomainFactory(status=DomainStatus.IN_USE, next_attempt_at=timezone.now() - datetime.timedelta(days=1))
    claimed, token = domain_checks.claim_due()
    assert sorted(claimed) == sorted(ids)
    assert set(Domain.objects.filter(pk__in=ids).values_list("claim_token", flat=True)) == {token}
    assert domain_checks.claim_due()[0] == []
    later = timezone.now() + datetime.timedelta(seconds=settings.DOMAIN_CHECK_LEASE_SECONDS + 1)
    assert sorted(domain_checks.claim_due(now=later)[0]) == sorted(ids)


@pytest.mark.django_db
def test_a_check_with_a_stale_token_touches_nothing():
    ids = _due_domains(2)
    domain_checks.claim_due()
    counts = domain_checks.check_claimed(ids, str(uuid.uuid4()))
    assert counts == {"checked": 0, "ordered": 0, "failed": 0, "parked": 0, "waiting": 0}
    assert not Domain.objects.filter(pk__in=ids, last_checked_at__isnull=False).exists()


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_sweeps_claim_disjoint_domains():
    ids = _due_domains(400)
    results: list[list[int]] = []
    barrier = threading.Barrier(2)

    def sweep_in_thread():
        barrier.wait()
        try:
            results.append(domain_checks.claim_due(limit=400)[0])
        finally:
            connection.close()

    threads = [threading.Thread(target=sweep_in_thread) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    first, second = results
    assert set(first).isdisjoint(second)
    assert sorted(first + second) == sorted(ids)


def _order(**fields) -> Order:
    defaults = dict(
        domain=DomainFactory(status=DomainStatus.CREATING),
        names=["www.example.com"],
        state=OrderState.VALIDATING,
    )
    return OrderFactory(**{**defaults, **fields})


@pytest.mark.django_db
def test_a_step_delivered_twice_runs_once():
    now = timezone.now()
    token = uuid.uuid4()
    order = _order(lease_token=token, lease_until=now + datetime.timedelta(seconds=30))
    assert order_run.claim(order.pk, str(token), now) is not None
    assert order_run.claim(order.pk, str(token), now) is None


@pytest.mark.django_db
def test_an_expired_lease_can_be_taken_over_but_a_live_one_cannot(settings):
    now = timezone.now()
    order = _order(lease_token=uuid.uuid4(), lease_until=now + datetime.timedelta(seconds=5))
    assert order_run.claim(order.pk, None, now) is None
    assert order_run.claim(order.pk, None, now + datetime.timedelta(seconds=6)) is not None


@pytest.mark.django_db
def test_a_finished_order_is_never_claimed():
    order = _order(state=OrderState.VALID, lease_until=None)
    assert order_run.claim(order.pk, None, timezone.now()) is None


@pytest.mark.django_db
def test_redrive_takes_only_orders_whose_lease_expired(django_capture_on_commit_callbacks):
    now = timezone.now()
    expired = _order(lease_token=uuid.uuid4(), lease_until=now - datetime.timedelta(seconds=1))
    _order(lease_token=uuid.uuid4(), lease_until=now + datetime.timedelta(seconds=60))
    _order(state=OrderState.INVALID, lease_until=now - datetime.timedelta(days=1))
    with django_capture_on_commit_callbacks() as sent:
        assert order_run.redrive_expired(now=now) == 1
    assert len(sent) == 1
    expired.refresh_from_db()
    assert expired.lease_until > now
    assert order_run.redrive_expired(now=now) == 0


@pytest.mark.django_db
def test_one_order_in_flight_per_domain_is_a_database_rule():
    from django.db import IntegrityError, transaction

    order = _order()
    with pytest.raises(IntegrityError, match="order_one_in_flight_per_domain"), transaction.atomic():
        _order(domain=order.domain, state=OrderState.PENDING)
    _order(domain=order.domain, state=OrderState.INVALID)
