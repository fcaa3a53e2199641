"""An endpoint that is slow to answer, or never answers within WEBHOOK_TIMEOUT_SECONDS, does not
hold back the other endpoints' deliveries (workers/webhook_delivery.py, workers/webhook_send.py):
a batch is written once its other requests are answered, the slow endpoint keeps only a few
requests in flight, and its other claimed deliveries are withdrawn without an attempt, in order.
Real receivers on 127.0.0.3."""

from __future__ import annotations

import pytest

from domains.models import DomainStatus
from domains.status import change_status
from domains.webhook_models import DeliveryState, WebhookAttempt, WebhookDelivery
from domains.webhooks import create_endpoint
from tests.factories import AppFactory, DomainFactory
from tests.webhook_receiver import Answer, start_receiver
from workers import webhook_delivery
from workers.webhook_send import SLOW_SECONDS, SLOW_SHARE

pytestmark = pytest.mark.django_db


def _fail(domain, why: str) -> None:
    assert change_status(domain.pk, DomainStatus.FAILING, why, last_error=f"Failed: {why}")
    assert change_status(domain.pk, DomainStatus.CREATING, "retrying")


@pytest.fixture
def silent():
    """A receiver that takes every request and never answers while the test runs."""
    started = start_receiver("127.0.0.3")
    started.answer = Answer(delay=600)
    yield started
    started.stop()


def test_an_endpoint_that_never_answers_does_not_hold_back_another_endpoints_deliveries(
    receiver, silent, settings
):
    settings.WEBHOOK_TIMEOUT_SECONDS = 4
    fast_app, slow_app = AppFactory(), AppFactory()
    fast_endpoint, _ = create_endpoint(fast_app, receiver.url)
    slow_endpoint, _ = create_endpoint(slow_app, silent.url)
    fast_domains = [DomainFactory(app=fast_app, status=DomainStatus.CREATING) for _ in range(10)]
    slow_domains = [DomainFactory(app=slow_app, status=DomainStatus.CREATING) for _ in range(60)]
    for domain in slow_domains + fast_domains:
        _fail(domain, "first")
    for domain in fast_domains:
        _fail(domain, "second")

    # A run of 3 s: it ends with the silent endpoint's requests in flight, and waits for their
    # timeout (4 s) before it writes them.
    counts = webhook_delivery.deliver(budget_seconds=3)

    # Every event of the fast endpoint arrived, each domain's in order ...
    fast = WebhookDelivery.objects.filter(endpoint=fast_endpoint)
    assert fast.count() == 20 and {d.state for d in fast} == {DeliveryState.DELIVERED}
    reasons = {}
    for request in receiver.requests:
        data = request.json()["data"]
        reasons.setdefault(data["domain"], []).append(data["reason"])
    assert set(map(tuple, reasons.values())) == {("Failed: first", "Failed: second")}
    # ... written before any request to the silent endpoint ended (its first ones at its timeout).
    slow_attempts = WebhookAttempt.objects.filter(delivery__endpoint=slow_endpoint)
    first_slow_end = min(attempt.at for attempt in slow_attempts)
    assert max(d.delivered_at for d in fast) < first_slow_end
    # The silent endpoint got a few of the run's places, not all of them; every request it got is
    # an attempt logged (timed out), and its deliveries taken back were not counted as attempts.
    assert 0 < len(silent.requests) < settings.WEBHOOK_CONCURRENCY
    assert slow_attempts.count() == len(silent.requests)
    assert {a.error for a in slow_attempts} == {"no answer within 4 s"}
    slow = WebhookDelivery.objects.filter(endpoint=slow_endpoint)
    assert counts["withdrawn"] == slow.filter(attempts=0).count() == 60 - len(silent.requests)
    assert {d.state for d in slow} == {DeliveryState.PENDING}


def test_a_slow_endpoint_keeps_a_few_requests_in_flight_and_still_gets_every_event(receiver, settings):
    settings.WEBHOOK_TIMEOUT_SECONDS = 10
    receiver.answer = Answer(delay=SLOW_SECONDS + 0.3)  # slow, and well within the timeout
    app = AppFactory()
    endpoint, _ = create_endpoint(app, receiver.url)
    domains = [DomainFactory(app=app, status=DomainStatus.CREATING) for _ in range(2 * SLOW_SHARE)]
    for domain in domains:
        _fail(domain, "first")
        _fail(domain, "second")

    counts = webhook_delivery.deliver(budget_seconds=60)

    deliveries = WebhookDelivery.objects.filter(endpoint=endpoint)
    assert {d.state for d in deliveries} == {DeliveryState.DELIVERED}
    assert counts["delivered"] == deliveries.count() == 2 * len(domains)
    # Each domain's events in order, every delivery sent once and logged once.
    reasons = {}
    for request in receiver.requests:
        data = request.json()["data"]
        reasons.setdefault(data["domain"], []).append(data["reason"])
    assert set(map(tuple, reasons.values())) == {("Failed: first", "Failed: second")}
    assert WebhookAttempt.objects.filter(delivery__endpoint=endpoint).count() == 2 * len(domains)
