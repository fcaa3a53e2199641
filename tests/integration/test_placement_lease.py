"""The placement step records the CA's order only under its own lease: a step whose lease expired
and was taken over while it waited on the CA (a slow newOrder, a paused worker) writes neither the
order's URL nor its challenges, so the task that holds the order now is the only one whose record
stands, and no order is left with two sets of challenges."""

from __future__ import annotations

import datetime
import uuid

import pytest
from django.utils import timezone

from certificates.acme_client import get_account
from certificates.keys import generate_private_key_pem
from certificates.models import Challenge, Order, OrderState
from certificates.sealing import seal
from domains.models import DomainStatus
from tests.factories import DomainFactory, OrderFactory
from workers import acme_steps, order_run

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


def _pending_order() -> Order:
    return OrderFactory(
        domain=DomainFactory(status=DomainStatus.CREATING, name=f"www.lease-{uuid.uuid4().hex[:10]}.com"),
        account=get_account(),
        private_key=seal(generate_private_key_pem("ec256")),
        state=OrderState.PENDING,
        lease_token=uuid.uuid4(),
        lease_until=timezone.now() + datetime.timedelta(seconds=60),
    )


def _taken_over_at(point: str, order: Order, taken_by: uuid.UUID):
    real = acme_steps.failpoint

    def failpoint(name: str) -> None:
        if name == point:
            Order.objects.filter(pk=order.pk).update(lease_token=taken_by)
        real(name)

    return failpoint


def test_a_placement_whose_lease_was_taken_over_records_nothing_and_leaves_the_order_to_its_holder(
    pebble_stack, monkeypatch
):
    order = _pending_order()
    holder = uuid.uuid4()
    monkeypatch.setattr(acme_steps, "failpoint", _taken_over_at("before_order_committed", order, holder))

    outcome = order_run.run_step(order.pk, str(order.lease_token))

    assert outcome.startswith(f"skipped: order {order.pk} lost its lease before recording ")
    order.refresh_from_db()
    assert order.order_url == ""
    assert order.state == OrderState.PENDING
    assert order.lease_token == holder
    assert not Challenge.objects.filter(order=order).exists()


def test_a_placement_under_its_own_lease_records_the_order_and_its_challenge(pebble_stack, monkeypatch):
    order = _pending_order()
    monkeypatch.setattr(acme_steps, "failpoint", _taken_over_at("never", order, uuid.uuid4()))

    outcome = order_run.run_step(order.pk, str(order.lease_token))

    order.refresh_from_db()
    assert order.order_url, outcome
    # Answered or waiting for its self check (nothing serves the challenge here): placed either way.
    assert order.state in (OrderState.AUTHORIZING, OrderState.VALIDATING), outcome
    assert Challenge.objects.filter(order=order).count() == 1
