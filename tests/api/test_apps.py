"""Regions and apps: listing, creating, showing and deleting."""

from __future__ import annotations

import pytest

from certificates.models import Certificate
from domains.models import App, Domain, DomainEvent
from tests.api.conftest import API
from tests.factories import AppFactory, CertificateFactory, DomainFactory, RegionFactory

pytestmark = pytest.mark.django_db

NAME_RULE = (
    "An app name is 1 to 48 lowercase letters, digits and hyphens, not starting or ending with a hyphen."
)


def test_regions_lists_every_region_with_where_domains_point(alice_api, region):
    RegionFactory(
        name="osc-secnum-fr1",
        domain_suffix="osc-secnum-fr1.example-paas.io",
        cname_target="ingress.osc-secnum-fr1.example-paas.io",
        ingress_ipv4=["198.51.100.1"],
        ingress_ipv6=[],
    )

    response = alice_api.get(f"{API}/regions")

    assert response.status_code == 200
    assert response.json() == [
        {
            "name": "osc-fr1",
            "domain_suffix": "osc-fr1.example-paas.io",
            "cname_target": "ingress.osc-fr1.example-paas.io",
            "ingress_ipv4": ["192.0.2.10", "192.0.2.11"],
            "ingress_ipv6": ["2001:db8::10"],
        },
        {
            "name": "osc-secnum-fr1",
            "domain_suffix": "osc-secnum-fr1.example-paas.io",
            "cname_target": "ingress.osc-secnum-fr1.example-paas.io",
            "ingress_ipv4": ["198.51.100.1"],
            "ingress_ipv6": [],
        },
    ]


def test_apps_lists_the_users_apps_by_name_with_their_domain_counts(alice_api, alice, region):
    blog = AppFactory(owner=alice, region=region, name="blog")
    AppFactory(owner=alice, region=region, name="api")
    DomainFactory.create_batch(2, app=blog)

    response = alice_api.get(f"{API}/apps")

    assert response.status_code == 200
    results = response.json()["results"]
    assert [(app["name"], app["domain_count"]) for app in results] == [("api", 0), ("blog", 2)]
    assert results[1]["hostname"] == "blog.osc-fr1.example-paas.io"
    assert results[1]["region"] == "osc-fr1"


def test_creating_an_app_answers_201_with_the_app(alice_api, alice, region):
    response = alice_api.post(f"{API}/apps", {"name": "new-shop", "region": "osc-fr1"}, format="json")

    assert response.status_code == 201
    body = response.json()
    assert {key: body[key] for key in ("name", "region", "owner", "hostname", "domain_count")} == {
        "name": "new-shop",
        "region": "osc-fr1",
        "owner": "alice",
        "hostname": "new-shop.osc-fr1.example-paas.io",
        "domain_count": 0,
    }
    assert App.objects.get(name="new-shop").owner == alice


@pytest.mark.parametrize(
    "name", ["New_Shop", "-shop", "shop-", "x" * 49], ids=["case", "lead", "trail", "long"]
)
def test_creating_an_app_with_a_bad_name_is_400_naming_the_rule(alice_api, region, name):
    response = alice_api.post(f"{API}/apps", {"name": name, "region": "osc-fr1"}, format="json")

    assert response.status_code == 400
    assert NAME_RULE in response.json()["name"]
    assert not App.objects.exists()


def test_creating_an_app_in_an_unknown_region_is_400_on_region(alice_api, region):
    response = alice_api.post(f"{API}/apps", {"name": "shop", "region": "mars-1"}, format="json")

    assert response.status_code == 400
    assert response.json() == {"region": ["no region named mars-1"]}
    assert not App.objects.exists()


def test_creating_an_app_whose_name_is_taken_is_409_even_in_another_region(alice_api, bob, region):
    AppFactory(owner=bob, region=region, name="shop")
    RegionFactory(name="osc-secnum-fr1", domain_suffix="osc-secnum-fr1.example-paas.io")

    response = alice_api.post(f"{API}/apps", {"name": "shop", "region": "osc-secnum-fr1"}, format="json")

    assert response.status_code == 409
    assert response.json() == {"detail": "an app named shop already exists"}
    assert App.objects.filter(name="shop").count() == 1


def test_showing_an_app_gives_its_domain_count(alice_api, shop):
    DomainFactory.create_batch(3, app=shop)

    response = alice_api.get(f"{API}/apps/shop")

    assert response.status_code == 200
    assert response.json()["domain_count"] == 3
    assert response.json()["owner"] == "alice"


def test_showing_an_unknown_app_is_404(alice_api, shop):
    response = alice_api.get(f"{API}/apps/nope")

    assert response.status_code == 404
    assert response.json() == {"detail": "no app named nope"}


def test_deleting_an_app_deletes_its_domains_their_certificates_and_history(alice_api, shop):
    domains = DomainFactory.create_batch(2, app=shop)
    CertificateFactory(domain=domains[0])
    DomainEvent.objects.create(domain=domains[0], to_status="pending_dns", reason="added")

    response = alice_api.delete(f"{API}/apps/shop")

    assert response.status_code == 204
    assert not App.objects.filter(name="shop").exists()
    assert not Domain.objects.exists()
    assert not Certificate.objects.exists()
    assert not DomainEvent.objects.exists()
    assert alice_api.get(f"{API}/apps/shop").status_code == 404
