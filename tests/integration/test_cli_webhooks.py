"""The `certwright webhooks` commands against the real API under gunicorn: an endpoint added (its
secret printed once), listed, its deliveries and one delivery's attempts shown, redelivered, its
secret rotated and the endpoint removed; a failed delivery sent again at once by `webhooks-retry`;
a refused URL exits non-zero with the reason."""

from __future__ import annotations

import re

import pytest
from standardwebhooks import Webhook

from domains.models import DomainStatus
from domains.status import change_status
from domains.webhook_models import DeliveryState, WebhookDelivery, WebhookEndpoint
from tests.factories import DomainFactory
from tests.integration.polling import wait_for, wait_for_recorded_attempts
from tests.webhook_receiver import Answer
from workers import webhook_delivery

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_an_endpoint_is_added_listed_delivered_to_redelivered_rotated_and_removed(cli, app, receiver):
    added = cli.ok("webhooks-add", receiver.url, "--events", "domain.failing")
    secret = re.search(r"whsec_\S+", added).group(0)
    endpoint = WebhookEndpoint.objects.get(app=app)
    assert f"Added webhook endpoint {endpoint.pk} for domain.failing" in added
    assert receiver.url in cli.ok("webhooks") and secret not in cli.ok("webhooks")

    domain = DomainFactory(app=app, status=DomainStatus.CREATING)
    assert change_status(domain.pk, DomainStatus.FAILING, "x", last_error="Failed: x")
    # A worker may be running too (the commit asked for a run): whichever sends it, it arrives once.
    webhook_delivery.deliver()
    wait_for(lambda: receiver.requests, what="the delivery")
    wait_for_recorded_attempts(endpoint)
    (request,) = receiver.requests
    assert Webhook(secret).verify(request.body, request.headers)["data"]["domain"] == domain.name

    listed = cli.ok("webhooks-deliveries", str(endpoint.pk))
    delivery_id = re.search(r"^(\d+)\s+domain\.failing", listed, re.M).group(1)
    assert "delivered" in listed
    assert "204" in cli.ok("webhooks-delivery", str(endpoint.pk), delivery_id)
    cli.ok("webhooks-redeliver", str(endpoint.pk), delivery_id)
    webhook_delivery.deliver()
    wait_for(lambda: len(receiver.requests) == 2, what="the redelivery")
    assert [r.headers["webhook-id"] for r in receiver.requests] == [request.headers["webhook-id"]] * 2

    rotated = cli.ok("webhooks-rotate-secret", str(endpoint.pk))
    assert re.search(r"whsec_\S+", rotated).group(0) != secret
    assert "The previous secret also signs until" in rotated
    cli.ok("webhooks-remove", str(endpoint.pk))
    assert not WebhookEndpoint.objects.exists()


def test_retry_sends_a_failed_delivery_now_instead_of_after_its_backoff(cli, app, receiver):
    cli.ok("webhooks-add", receiver.url)
    endpoint = WebhookEndpoint.objects.get(app=app)
    receiver.answer = Answer(status=500)
    domain = DomainFactory(app=app, status=DomainStatus.CREATING)
    assert change_status(domain.pk, DomainStatus.FAILING, "x", last_error="Failed: x")
    webhook_delivery.deliver()
    wait_for(lambda: receiver.requests, what="the first attempt")
    wait_for_recorded_attempts(endpoint)

    receiver.answer = Answer(status=204)
    assert "are sent now" in cli.ok("webhooks-retry", str(endpoint.pk))
    webhook_delivery.deliver()
    delivery = WebhookDelivery.objects.filter(endpoint=endpoint)
    wait_for(lambda: delivery.get().state == DeliveryState.DELIVERED, what="the delivery sent again")
    assert "was waiting out a backoff" in cli.ok("webhooks-retry", str(endpoint.pk))


def test_a_refused_url_exits_non_zero_with_the_reason(cli):
    result = cli("webhooks-add", "https://10.0.0.1/hooks")

    assert result.returncode != 0
    assert "10.0.0.1 is not a public address" in result.stderr
    assert "Traceback" not in result.stderr
