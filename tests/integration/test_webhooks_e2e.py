"""Webhooks end to end, through the real workers: a domain issued by Pebble tells its app's endpoint
(domain.in_use and certificate.issued, signed, verified with the standardwebhooks package) without
beat, because the commit that wrote the events asked for a delivery run; and a receiver that was
down gets every event, in order, once it is back."""

from __future__ import annotations

import time

import pytest
from standardwebhooks import Webhook

from domains.models import DomainStatus
from domains.services import create_domain
from domains.status import change_status
from domains.webhook_models import DeliveryState, WebhookDelivery
from domains.webhooks import create_endpoint, retry_now
from tests.factories import DomainFactory
from tests.integration.pointing import point_at_platform
from tests.integration.polling import status_of, unique_name, wait_for, wait_for_recorded_attempts
from tests.webhook_receiver import Answer
from workers.tasks.webhooks import deliver_webhooks

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_an_issued_domain_tells_its_endpoint_signed_and_in_order(issuance_stack, challtestsrv, app, receiver):
    _, secret = create_endpoint(app, receiver.url)
    name = unique_name()
    point_at_platform(challtestsrv, app, name)

    domain = create_domain(app, name)
    wait_for(lambda: status_of(domain) == DomainStatus.IN_USE, what="in_use")
    wait_for(lambda: len(receiver.requests) >= 2, timeout=20, what="two webhook deliveries")

    payloads = [Webhook(secret).verify(request.body, request.headers) for request in receiver.requests]
    assert sorted(payload["type"] for payload in payloads) == ["certificate.issued", "domain.in_use"]
    # Arrived in the order they were committed.
    seqs = [payload["data"]["seq"] for payload in payloads]
    assert seqs == sorted(seqs)
    issued = next(payload for payload in payloads if payload["type"] == "certificate.issued")
    assert issued["data"]["domain"] == name and issued["data"]["not_after"].endswith("Z")


def test_a_change_committed_reaches_the_receiver_within_seconds_without_beat(celery_worker, app, receiver):
    create_endpoint(app, receiver.url)
    domain = DomainFactory(app=app, status=DomainStatus.CREATING)

    committed = time.monotonic()
    assert change_status(domain.pk, DomainStatus.FAILING, "x", last_error="Failed: x")
    wait_for(lambda: receiver.requests, timeout=10, interval=0.02, what="the delivery")

    assert time.monotonic() - committed < 5
    assert receiver.events()[0]["data"]["reason"] == "Failed: x"


def test_a_receiver_that_was_down_gets_every_event_in_order_when_it_is_back(celery_worker, app, receiver):
    endpoint, secret = create_endpoint(app, receiver.url)
    domain = DomainFactory(app=app, status=DomainStatus.CREATING)
    receiver.answer = Answer(status=503)
    for n in range(3):
        assert change_status(domain.pk, DomainStatus.FAILING, "x", last_error=f"Failed: {n}")
        assert change_status(domain.pk, DomainStatus.CREATING, "again")
    wait_for(lambda: receiver.requests, timeout=10, what="the first attempt")
    # retry_now leaves a queue being sent alone: wait until the worker has recorded the answer.
    wait_for_recorded_attempts(endpoint)
    # The first delivery failed; the others wait behind it.
    assert {r.json()["data"]["reason"] for r in receiver.requests} == {"Failed: 0"}

    receiver.answer = Answer(status=204)
    assert retry_now(endpoint) == 1
    deliver_webhooks.delay()  # as beat's backstop does every 15 s
    wait_for(
        lambda: WebhookDelivery.objects.filter(endpoint=endpoint, state=DeliveryState.DELIVERED).count() == 3,
        timeout=30,
        what="three deliveries",
    )
    first_arrivals = []
    for request in receiver.requests:
        Webhook(secret).verify(request.body, request.headers)
        reason = request.json()["data"]["reason"]
        if reason not in first_arrivals:
            first_arrivals.append(reason)
    assert first_arrivals == ["Failed: 0", "Failed: 1", "Failed: 2"]
