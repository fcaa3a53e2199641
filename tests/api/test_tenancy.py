"""Tenancy: a user sees and changes only their own apps; someone else's app is a 404 on every route,
indistinguishable from an app that does not exist; staff see and change everything."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.urls import URLPattern
from django.utils import timezone

from api import urls
from certificates.models import Certificate, CertificateSource
from certificates.sealing import seal
from domains.events import record_event
from domains.models import App, Domain, DomainStatus, Event, EventType
from domains.webhook_models import WebhookDelivery, WebhookEndpoint
from domains.webhooks import new_secret
from tests.api.conftest import API
from tests.factories import AcmeAccountFactory, AppFactory, CertificateFactory, DomainFactory, RegionFactory

pytestmark = pytest.mark.django_db

APP = f"{API}/apps/{{app}}"
DOMAIN = f"{APP}/domains/www.example.com"
# Bob's webhook endpoint and one delivery of it, at ids no other row takes.
HOOK_ID, DELIVERY_ID = 900_001, 900_002
HOOK = f"{APP}/webhooks/{HOOK_ID}"
# Every app-scoped route and verb, with a body that would succeed for the owner, and what the
# owner (or staff) gets.
ROUTES = [
    ("api-app", "get", APP, None, 200),
    ("api-app", "delete", APP, None, 204),
    ("api-domains", "get", f"{APP}/domains", None, 200),
    ("api-domains", "post", f"{APP}/domains", {"name": "new.example.org"}, 201),
    ("api-domain", "get", DOMAIN, None, 200),
    ("api-domain", "patch", DOMAIN, {"letsencrypt": False}, 200),
    ("api-domain", "delete", DOMAIN, None, 204),
    ("api-certificate", "delete", f"{DOMAIN}/certificate", None, 200),
    ("api-retry", "post", f"{DOMAIN}/retry", None, 202),
    ("api-revoke-and-replace", "post", f"{DOMAIN}/revoke-and-replace", None, 202),
    ("api-events", "get", f"{DOMAIN}/events", None, 200),
    ("api-webhooks", "get", f"{APP}/webhooks", None, 200),
    ("api-webhooks", "post", f"{APP}/webhooks", {"url": "https://93.184.215.14/hooks"}, 201),
    ("api-webhook", "get", f"{HOOK}", None, 200),
    ("api-webhook", "delete", f"{HOOK}", None, 204),
    ("api-webhook-rotate-secret", "post", f"{HOOK}/rotate-secret", None, 200),
    ("api-webhook-enable", "post", f"{HOOK}/enable", None, 200),
    ("api-webhook-retry", "post", f"{HOOK}/retry", None, 200),
    ("api-webhook-deliveries", "get", f"{HOOK}/deliveries", None, 200),
    ("api-webhook-delivery", "get", f"{HOOK}/deliveries/{DELIVERY_ID}", None, 200),
    ("api-webhook-redeliver", "post", f"{HOOK}/deliveries/{DELIVERY_ID}/redeliver", None, 202),
]
ROUTE_IDS = [f"{method}-{name}" for name, method, *_ in ROUTES]
HTTP_METHODS = {"get", "post", "put", "patch", "delete"}


@pytest.fixture
def bobs_app(bob, region) -> App:
    """Bob's app, with a served domain holding a custom certificate: every route would succeed on it."""
    app = AppFactory(owner=bob, region=region, name="bobs-app")
    domain = DomainFactory(app=app, name="www.example.com", status=DomainStatus.IN_USE)
    CertificateFactory(domain=domain)
    CertificateFactory(domain=domain, source=CertificateSource.CUSTOM)
    # The platform's ACME account, which revoke and replace orders with.
    AcmeAccountFactory(directory_url=settings.ACME_DIRECTORY_URL, account_url="https://ca.example.net/acct/1")
    endpoint = WebhookEndpoint.objects.create(
        pk=HOOK_ID, app=app, url="https://93.184.215.14/hooks", secret=seal(new_secret().encode())
    )
    record_event(EventType.DOMAIN_IN_USE, domain.pk, timezone.now())
    event = Event.objects.get(domain_id=domain.pk)
    WebhookDelivery.objects.create(
        pk=DELIVERY_ID, endpoint=endpoint, event=event, seq=event.seq, domain_id=domain.pk, state="delivered"
    )
    return app


def snapshot() -> list[tuple]:
    return [
        *App.objects.order_by("pk").values_list("pk", "name", "owner_id"),
        *Domain.objects.order_by("pk").values_list("pk", "name", "app_id", "status", "letsencrypt_enabled"),
        *Certificate.objects.order_by("pk").values_list("pk", "source"),
        *WebhookEndpoint.objects.order_by("pk").values_list("pk", "url", "enabled", "secret"),
        *WebhookDelivery.objects.order_by("pk").values_list("pk", "state", "next_attempt_at"),
    ]


def call(client, method: str, path: str, body: dict | None):
    return getattr(client, method)(path, body, format="json") if body else getattr(client, method)(path)


def test_the_route_table_covers_every_app_scoped_route_and_verb():
    served = {
        (pattern.name, method)
        for pattern in urls.urlpatterns
        if isinstance(pattern, URLPattern) and "<str:app>" in str(pattern.pattern)
        for method in HTTP_METHODS
        if hasattr(pattern.callback.view_class, method)
    }

    assert served == {(name, method) for name, method, *_ in ROUTES}


@pytest.mark.parametrize(("name", "method", "path", "body", "ok"), ROUTES, ids=ROUTE_IDS)
def test_another_users_app_is_404_and_untouched_on_every_route(
    alice_api, shop, bobs_app, name, method, path, body, ok
):
    before = snapshot()

    response = call(alice_api, method, path.format(app="bobs-app"), body)

    assert response.status_code == 404
    assert response.json() == {"detail": "no app named bobs-app"}
    assert "bob-the-owner" not in response.content.decode()
    assert snapshot() == before


@pytest.mark.parametrize(("name", "method", "path", "body", "ok"), ROUTES, ids=ROUTE_IDS)
def test_another_users_app_answers_like_an_app_that_does_not_exist(
    alice_api, shop, bobs_app, name, method, path, body, ok
):
    theirs = call(alice_api, method, path.format(app="bobs-app"), body)
    missing = call(alice_api, method, path.format(app="no-such-app"), body)

    assert theirs.status_code == missing.status_code == 404
    assert theirs.json()["detail"].replace("bobs-app", "X") == missing.json()["detail"].replace(
        "no-such-app", "X"
    )


@pytest.mark.parametrize("method", ["head", "options"])
def test_head_and_options_tell_nothing_about_another_users_app(alice_api, bobs_app, method):
    theirs = getattr(alice_api, method)(f"{API}/apps/bobs-app/domains")
    missing = getattr(alice_api, method)(f"{API}/apps/no-such-app/domains")

    assert theirs.status_code == missing.status_code
    assert theirs.content.replace(b"bobs-app", b"X") == missing.content.replace(b"no-such-app", b"X")
    assert b"bob-the-owner" not in theirs.content


def test_the_app_list_never_shows_another_users_apps(alice_api, shop, bobs_app):
    response = alice_api.get(f"{API}/apps")

    assert [app["name"] for app in response.json()["results"]] == ["shop"]


@pytest.mark.parametrize(("name", "method", "path", "body", "ok"), ROUTES, ids=ROUTE_IDS)
def test_the_owner_succeeds_on_every_route(client_for, bob, bobs_app, name, method, path, body, ok):
    response = call(client_for(bob), method, path.format(app="bobs-app"), body)

    assert response.status_code == ok, response.content


@pytest.mark.parametrize(("name", "method", "path", "body", "ok"), ROUTES, ids=ROUTE_IDS)
def test_staff_succeed_on_every_route_of_any_users_app(
    client_for, staff, bobs_app, name, method, path, body, ok
):
    response = call(client_for(staff), method, path.format(app="bobs-app"), body)

    assert response.status_code == ok, response.content


def test_staff_see_every_users_apps(client_for, staff, shop, bobs_app):
    response = client_for(staff).get(f"{API}/apps")

    assert [(app["name"], app["owner"]) for app in response.json()["results"]] == [
        ("bobs-app", "bob-the-owner"),
        ("shop", "alice"),
    ]


def test_staff_tell_two_apps_of_one_name_apart_by_region(client_for, staff, bob, alice, region):
    other = RegionFactory(name="osc-secnum-fr1", domain_suffix="osc-secnum-fr1.example-paas.io")
    AppFactory(owner=alice, region=region, name="twin")
    AppFactory(owner=bob, region=other, name="twin")
    client = client_for(staff)

    ambiguous = client.get(f"{API}/apps/twin")
    chosen = client.get(f"{API}/apps/twin", {"region": "osc-secnum-fr1"})

    assert ambiguous.status_code == 404
    assert chosen.status_code == 200
    assert chosen.json()["owner"] == "bob-the-owner"
