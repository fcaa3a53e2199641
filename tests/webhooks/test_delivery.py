"""Webhook delivery (workers/webhook_delivery.py) against a real HTTP receiver on 127.0.0.3: signed
as Standard Webhooks says (checked with the standardwebhooks package), only the types asked for,
retried with backoff, in order per domain, given up, endpoints disabled and their owners mailed,
secrets rotated with an overlap, redelivered with the same id."""

from __future__ import annotations

import datetime

import pytest
from django.core import mail
from django.utils import timezone
from standardwebhooks import Webhook, WebhookVerificationError

from domains.models import DomainStatus, EventType
from domains.status import change_status
from domains.webhook_models import DeliveryState, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from domains.webhooks import create_endpoint, redeliver, retry_now, rotate_secret
from tests.factories import AppFactory, DomainFactory, UserFactory
from tests.webhook_receiver import Answer, start_receiver
from workers import webhook_delivery

pytestmark = pytest.mark.django_db


def _fail(domain, why="the CA is unhappy"):
    """A change of status that writes an event (domain.failing), then back to Creating (none)."""
    assert change_status(domain.pk, DomainStatus.FAILING, why, last_error=f"Failed: {why}")
    assert change_status(domain.pk, DomainStatus.CREATING, "retrying")


def _verify(secret: str, request) -> dict:
    return Webhook(secret).verify(request.body, request.headers)


def test_an_event_is_posted_signed_and_the_attempt_logged(receiver):
    domain = DomainFactory(status=DomainStatus.CREATING)
    endpoint, secret = create_endpoint(domain.app, receiver.url)
    _fail(domain)

    counts = webhook_delivery.deliver()

    assert counts["delivered"] == 1
    (request,) = receiver.requests
    payload = _verify(secret, request)
    assert payload["type"] == "domain.failing"
    assert payload["data"]["domain"] == domain.name
    assert payload["data"]["app"] == domain.app.name
    assert payload["data"]["reason"] == "Failed: the CA is unhappy"
    assert (payload["data"]["from_status"], payload["data"]["to_status"]) == ("creating", "failing")
    assert request.headers["webhook-id"] == payload["data"]["id"]
    assert request.headers["Content-Type"] == "application/json"
    delivery = WebhookDelivery.objects.get(endpoint=endpoint)
    assert (delivery.state, delivery.attempts, delivery.last_status_code) == (DeliveryState.DELIVERED, 1, 204)
    (attempt,) = delivery.attempt_log.all()
    assert attempt.status_code == 204 and attempt.error == "" and attempt.latency_ms >= 0


def test_a_wrong_secret_does_not_verify(receiver):
    domain = DomainFactory(status=DomainStatus.CREATING)
    create_endpoint(domain.app, receiver.url)
    _, other_secret = create_endpoint(AppFactory(), "https://example.com/hook")
    _fail(domain)

    webhook_delivery.deliver()

    with pytest.raises(WebhookVerificationError):
        _verify(other_secret, receiver.requests[0])


def test_an_endpoint_gets_only_the_types_it_names_and_a_platform_endpoint_every_app(receiver):
    domain = DomainFactory(status=DomainStatus.CREATING)
    other_app_domain = DomainFactory(status=DomainStatus.CREATING)
    create_endpoint(domain.app, receiver.url, event_types=["domain.in_use"])
    platform = start_receiver("127.0.0.3")
    try:
        create_endpoint(None, platform.url)
        _fail(domain)
        _fail(other_app_domain)
        assert change_status(domain.pk, DomainStatus.IN_USE, "issued")

        webhook_delivery.deliver()

        assert [event["type"] for event in receiver.events()] == ["domain.in_use"]
        assert sorted((e["data"]["domain"], e["type"]) for e in platform.events()) == sorted(
            [
                (domain.name, "domain.failing"),
                (other_app_domain.name, "domain.failing"),
                (domain.name, "domain.in_use"),
            ]
        )
    finally:
        platform.stop()


def test_a_failed_post_is_retried_later_and_the_domains_next_event_waits_behind_it(receiver):
    domain = DomainFactory(status=DomainStatus.CREATING)
    elsewhere = DomainFactory(app=domain.app, status=DomainStatus.CREATING)
    endpoint, _ = create_endpoint(domain.app, receiver.url)
    receiver.answer = Answer(status=500, body=b"x" * 5000)
    _fail(domain, "first")
    _fail(domain, "second")

    before = timezone.now()
    webhook_delivery.deliver()

    assert len(receiver.requests) == 1
    first, second = WebhookDelivery.objects.filter(endpoint=endpoint).order_by("seq")
    assert first.state == DeliveryState.PENDING and first.attempts == 1
    assert first.last_error == "the endpoint answered HTTP 500"
    wait = (first.next_attempt_at - before).total_seconds()
    assert 4 <= wait <= 7
    (attempt,) = first.attempt_log.all()
    assert attempt.status_code == 500 and attempt.response_excerpt == "x" * 1024
    assert second.attempts == 0

    # Another domain of the app is not held up by this one's failure.
    receiver.answer = Answer(status=200)
    _fail(elsewhere, "third")
    webhook_delivery.deliver()
    assert [e["data"]["domain"] for e in receiver.events()[1:]] == [elsewhere.name]

    # Once the first is due again, it and then the second go, in that order.
    assert retry_now(endpoint) == 1
    webhook_delivery.deliver()
    assert [e["data"]["reason"] for e in receiver.events() if e["data"]["domain"] == domain.name] == [
        "Failed: first",
        "Failed: first",
        "Failed: second",
    ]
    assert set(WebhookDelivery.objects.values_list("state", flat=True)) == {DeliveryState.DELIVERED}


def test_twenty_events_of_one_domain_arrive_in_their_order(receiver):
    domain = DomainFactory(status=DomainStatus.CREATING)
    create_endpoint(domain.app, receiver.url)
    for n in range(20):
        _fail(domain, f"attempt {n}")

    webhook_delivery.deliver()

    assert [e["data"]["reason"] for e in receiver.events()] == [f"Failed: attempt {n}" for n in range(20)]


def test_a_failure_past_its_give_up_time_gives_the_delivery_up(receiver):
    domain = DomainFactory(status=DomainStatus.CREATING)
    endpoint, _ = create_endpoint(domain.app, receiver.url)
    receiver.answer = Answer(status=503)
    _fail(domain)
    webhook_delivery.dispatch()
    WebhookDelivery.objects.filter(endpoint=endpoint).update(
        give_up_at=timezone.now() + datetime.timedelta(seconds=1)
    )

    webhook_delivery.deliver()

    delivery = WebhookDelivery.objects.get(endpoint=endpoint)
    assert delivery.state == DeliveryState.FAILED and delivery.next_attempt_at is None
    assert delivery.last_error == "the endpoint answered HTTP 503; given up after 1 attempts"


def test_an_endpoint_failing_for_five_days_is_disabled_and_its_owner_mailed(
    receiver, django_capture_on_commit_callbacks
):
    owner = UserFactory(email="owner@example.com")
    domain = DomainFactory(app=AppFactory(owner=owner), status=DomainStatus.CREATING)
    endpoint, _ = create_endpoint(domain.app, receiver.url)
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
        failing_since=timezone.now() - datetime.timedelta(days=5, minutes=1)
    )
    receiver.answer = Answer(status=500)
    _fail(domain, "one")
    _fail(domain, "two")

    with django_capture_on_commit_callbacks(execute=True):
        counts = webhook_delivery.deliver()

    assert counts["endpoints_disabled"] == 1
    endpoint.refresh_from_db()
    assert not endpoint.enabled and "for 5 days" in endpoint.disabled_reason
    assert set(WebhookDelivery.objects.values_list("state", flat=True)) == {DeliveryState.FAILED}
    (message,) = [m for m in mail.outbox if "Webhook endpoint disabled" in m.subject]
    assert message.to == ["owner@example.com"] and receiver.url in message.body
    # No more deliveries for a disabled endpoint.
    _fail(domain, "three")
    webhook_delivery.deliver()
    assert WebhookDelivery.objects.filter(endpoint=endpoint).count() == 2


def test_an_answer_resets_the_failing_clock(receiver):
    domain = DomainFactory(status=DomainStatus.CREATING)
    endpoint, _ = create_endpoint(domain.app, receiver.url)
    receiver.answer = Answer(status=500)
    _fail(domain)
    webhook_delivery.deliver()
    endpoint.refresh_from_db()
    assert endpoint.failing_since is not None

    receiver.answer = Answer(status=200)
    retry_now(endpoint)
    webhook_delivery.deliver()

    endpoint.refresh_from_db()
    assert endpoint.failing_since is None and endpoint.last_success_at is not None


def test_a_rotated_secret_signs_with_both_secrets_for_the_overlap_then_only_the_new(receiver):
    domain = DomainFactory(status=DomainStatus.CREATING)
    endpoint, old = create_endpoint(domain.app, receiver.url)
    new = rotate_secret(endpoint)
    assert new != old and new.startswith("whsec_")
    _fail(domain, "during the overlap")
    webhook_delivery.deliver()

    during = receiver.requests[-1]
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    assert _verify(old, during)["data"]["reason"] == "Failed: during the overlap"
    assert _verify(new, during)["data"]["reason"] == "Failed: during the overlap"

    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(previous_secret_until=timezone.now())
    _fail(domain, "after the overlap")
    webhook_delivery.deliver()

    after = receiver.requests[-1]
    assert _verify(new, after)["data"]["reason"] == "Failed: after the overlap"
    with pytest.raises(WebhookVerificationError):
        _verify(old, after)


def test_a_redelivery_sends_the_event_again_with_the_same_id(receiver):
    domain = DomainFactory(status=DomainStatus.CREATING)
    endpoint, secret = create_endpoint(domain.app, receiver.url)
    _fail(domain)
    webhook_delivery.deliver()
    delivery = WebhookDelivery.objects.get(endpoint=endpoint)

    redeliver(delivery)
    webhook_delivery.deliver()

    first, again = receiver.requests
    assert first.headers["webhook-id"] == again.headers["webhook-id"]
    assert _verify(secret, again)["type"] == EventType.DOMAIN_FAILING
    delivery.refresh_from_db()
    assert (delivery.state, delivery.attempts) == (DeliveryState.DELIVERED, 2)
    assert WebhookAttempt.objects.filter(delivery=delivery).count() == 2


def test_a_deleted_endpoint_takes_its_deliveries_and_gets_nothing_more(receiver):
    domain = DomainFactory(status=DomainStatus.CREATING)
    endpoint, _ = create_endpoint(domain.app, receiver.url)
    _fail(domain)
    webhook_delivery.dispatch()

    endpoint.delete()
    webhook_delivery.deliver()

    assert receiver.requests == [] and WebhookDelivery.objects.count() == 0


def test_an_answer_with_nul_bytes_is_logged_without_them(receiver):
    domain = DomainFactory(status=DomainStatus.CREATING)
    endpoint, _ = create_endpoint(domain.app, receiver.url)
    receiver.answer = Answer(status=200, body=b"ok\x00\xff\x00done")
    _fail(domain)

    webhook_delivery.deliver()

    (attempt,) = WebhookAttempt.objects.filter(delivery__endpoint=endpoint)
    assert attempt.status_code == 200 and attempt.response_excerpt == "ok\ufffddone"
