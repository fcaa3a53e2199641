"""The webhook API (api/webhook_views.py): endpoints per app with a secret shown once, refused
destinations with the reason and nothing saved, rotation, deliveries with their attempts,
redelivery, sending what waits now, and tenancy (another customer's endpoint is a 404)."""

from __future__ import annotations

import pytest
from standardwebhooks import Webhook

from domains.models import DomainStatus
from domains.status import change_status
from domains.webhook_models import DeliveryState, WebhookDelivery, WebhookEndpoint
from tests.api.conftest import API
from tests.factories import AppFactory, DomainFactory
from tests.webhook_receiver import Answer
from workers import webhook_delivery

HOOKS = f"{API}/apps/shop/webhooks"

pytestmark = pytest.mark.django_db


def test_adding_an_endpoint_shows_its_secret_once(alice_api, shop, receiver):
    created = alice_api.post(HOOKS, {"url": receiver.url, "events": ["domain.failing"]}, format="json")

    assert created.status_code == 201, created.content
    body = created.json()
    assert body["secret"].startswith("whsec_") and body["events"] == ["domain.failing"]
    assert body["enabled"] is True
    listed = alice_api.get(HOOKS).json()["results"]
    assert [endpoint["id"] for endpoint in listed] == [body["id"]]
    assert "secret" not in listed[0]
    assert "secret" not in alice_api.get(f"{HOOKS}/{body['id']}").json()
    assert body["secret"] not in str(listed)


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("https://127.0.0.1/hooks", "127.0.0.1 is not a public address (loopback)"),
        ("https://169.254.169.254/latest", "is not a public address (link-local)"),
        ("ftp://example.com/hooks", "must start with https://"),
        ("https://user:secret@example.com/hooks", "carries credentials"),
    ],
)
def test_a_refused_url_is_a_400_naming_why_and_nothing_is_saved(alice_api, shop, settings, url, words):
    settings.WEBHOOK_ALLOWED_NETWORKS = ()

    refused = alice_api.post(HOOKS, {"url": url}, format="json")

    assert refused.status_code == 400
    assert words in refused.json()["url"][0]
    assert WebhookEndpoint.objects.count() == 0


def test_a_name_that_resolves_to_a_private_address_is_refused_at_creation(
    alice_api, shop, settings, challtestsrv
):
    settings.WEBHOOK_ALLOWED_NETWORKS = ()
    challtestsrv.add_a("hooks.internal.example", ["10.1.2.3"])
    try:
        refused = alice_api.post(HOOKS, {"url": "https://hooks.internal.example/x"}, format="json")
    finally:
        challtestsrv.clear_a("hooks.internal.example")

    assert refused.status_code == 400
    assert (
        "hooks.internal.example resolves to 10.1.2.3 is not a public address (private)"
        in (refused.json()["url"][0])
    )
    assert WebhookEndpoint.objects.count() == 0


def test_an_unknown_event_type_is_a_400(alice_api, shop, receiver):
    refused = alice_api.post(HOOKS, {"url": receiver.url, "events": ["domain.exploded"]}, format="json")

    assert refused.status_code == 400 and "events" in refused.json()
    assert WebhookEndpoint.objects.count() == 0


def test_rotating_shows_the_new_secret_and_how_long_the_old_one_signs(alice_api, shop, receiver):
    created = alice_api.post(HOOKS, {"url": receiver.url}, format="json").json()

    rotated = alice_api.post(f"{HOOKS}/{created['id']}/rotate-secret")

    assert rotated.status_code == 200
    assert rotated.json()["secret"] != created["secret"]
    assert rotated.json()["previous_secret_valid_until"] is not None


def test_deliveries_list_their_attempts_and_one_can_be_redelivered(alice_api, shop, receiver):
    created = alice_api.post(HOOKS, {"url": receiver.url}, format="json").json()
    domain = DomainFactory(app=shop, status=DomainStatus.CREATING)
    assert change_status(domain.pk, DomainStatus.FAILING, "x", last_error="Failed: x")
    webhook_delivery.deliver()

    (delivery,) = alice_api.get(f"{HOOKS}/{created['id']}/deliveries").json()["results"]
    assert (delivery["event_type"], delivery["domain"], delivery["state"]) == (
        "domain.failing",
        domain.name,
        "delivered",
    )
    detail = alice_api.get(f"{HOOKS}/{created['id']}/deliveries/{delivery['id']}").json()
    assert [attempt["status_code"] for attempt in detail["attempt_log"]] == [204]

    again = alice_api.post(f"{HOOKS}/{created['id']}/deliveries/{delivery['id']}/redeliver")
    assert again.status_code == 202
    webhook_delivery.deliver()
    first, second = receiver.requests
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == delivery["event_id"]
    Webhook(created["secret"]).verify(second.body, second.headers)
    assert WebhookDelivery.objects.get().state == DeliveryState.DELIVERED


def test_retry_sends_what_waits_out_a_backoff_now(alice_api, shop, receiver):
    created = alice_api.post(HOOKS, {"url": receiver.url}, format="json").json()
    domain = DomainFactory(app=shop, status=DomainStatus.CREATING)
    receiver.answer = Answer(status=503)
    assert change_status(domain.pk, DomainStatus.FAILING, "x", last_error="Failed: x")
    webhook_delivery.deliver()
    assert WebhookDelivery.objects.get().state == DeliveryState.PENDING

    receiver.answer = Answer(status=204)
    answer = alice_api.post(f"{HOOKS}/{created['id']}/retry")
    assert answer.status_code == 200 and answer.json() == {"id": created["id"], "retried": 1}
    webhook_delivery.deliver()

    assert len(receiver.requests) == 2
    assert WebhookDelivery.objects.get().state == DeliveryState.DELIVERED
    # Nothing waits any more.
    assert alice_api.post(f"{HOOKS}/{created['id']}/retry").json()["retried"] == 0


def test_deleting_an_endpoint_removes_it(alice_api, shop, receiver):
    created = alice_api.post(HOOKS, {"url": receiver.url}, format="json").json()

    assert alice_api.delete(f"{HOOKS}/{created['id']}").status_code == 204
    assert WebhookEndpoint.objects.count() == 0


def test_another_customers_endpoint_is_a_404(client_for, bob, shop, receiver, alice_api):
    created = alice_api.post(HOOKS, {"url": receiver.url}, format="json").json()
    AppFactory(owner=bob, region=shop.region, name="bobs")
    bob_api = client_for(bob)

    assert bob_api.get(HOOKS).status_code == 404
    assert bob_api.get(f"{API}/apps/bobs/webhooks/{created['id']}").status_code == 404
    assert bob_api.delete(f"{API}/apps/bobs/webhooks/{created['id']}").status_code == 404
    assert WebhookEndpoint.objects.count() == 1
