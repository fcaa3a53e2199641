"""Webhooks in the admin (workers/webhook_admin.py): a platform-wide endpoint added there gets its
secret shown once, in the message after the save, and signs with it; a URL at a refused address
is an error on the form, and nothing is saved; the send-now action skips a delivery's backoff."""

from __future__ import annotations

import re

import pytest
from standardwebhooks import Webhook

from domains.models import DomainStatus
from domains.status import change_status
from domains.webhook_models import DeliveryState, WebhookDelivery, WebhookEndpoint
from domains.webhooks import create_endpoint
from tests.factories import DomainFactory
from tests.webhook_receiver import Answer
from workers import webhook_delivery

pytestmark = pytest.mark.django_db
ADD = "/admin/domains/webhookendpoint/add/"


def test_a_platform_endpoint_added_in_the_admin_shows_its_secret_once_and_gets_every_apps_events(
    admin_client, receiver
):
    added = admin_client.post(
        ADD, {"url": receiver.url, "description": "ops", "event_types": ""}, follow=True
    )

    (endpoint,) = WebhookEndpoint.objects.all()
    assert endpoint.app is None and endpoint.url == receiver.url
    secret = re.search(r"whsec_[A-Za-z0-9+/=]+", added.content.decode()).group(0)
    assert (
        secret
        not in admin_client.get(f"/admin/domains/webhookendpoint/{endpoint.pk}/change/").content.decode()
    )
    domain = DomainFactory(status=DomainStatus.CREATING)
    assert change_status(domain.pk, DomainStatus.FAILING, "x", last_error="Failed: x")
    webhook_delivery.deliver()
    (request,) = receiver.requests
    assert Webhook(secret).verify(request.body, request.headers)["data"]["domain"] == domain.name


def test_a_url_at_a_refused_address_is_a_form_error_and_nothing_is_saved(admin_client, settings):
    settings.WEBHOOK_ALLOWED_NETWORKS = ()

    refused = admin_client.post(ADD, {"url": "https://169.254.169.254/latest", "event_types": ""})

    assert refused.status_code == 200
    assert "is not a public address (link-local)" in refused.content.decode()
    assert WebhookEndpoint.objects.count() == 0


def test_the_send_now_action_makes_a_backed_off_delivery_go_at_once(admin_client, receiver):
    domain = DomainFactory(status=DomainStatus.CREATING)
    endpoint, _ = create_endpoint(None, receiver.url)
    receiver.answer = Answer(status=502)
    assert change_status(domain.pk, DomainStatus.FAILING, "x", last_error="Failed: x")
    webhook_delivery.deliver()

    receiver.answer = Answer(status=204)
    done = admin_client.post(
        "/admin/domains/webhookendpoint/",
        {"action": "retry_waiting", "_selected_action": [endpoint.pk]},
        follow=True,
    )
    assert "The waiting deliveries of 1 domain(s) are sent now" in done.content.decode()
    webhook_delivery.deliver()

    assert len(receiver.requests) == 2
    assert WebhookDelivery.objects.get(endpoint=endpoint).state == DeliveryState.DELIVERED
