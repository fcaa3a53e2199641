"""A router token limited to regions never receives a key of another region: the certificate
endpoint serves nothing for another region's name, and the change feed lists none of its
certificates (a name that moves away is dropped)."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from api.models import ApiToken
from api.routers import create_router_token
from certificates.models import ServedChange
from certificates.sealing import seal
from tests.factories import AppFactory, CertificateFactory, DomainFactory, RegionFactory

pytestmark = pytest.mark.django_db(transaction=True)


def _last() -> int:
    return ServedChange.objects.order_by("-seq").values_list("seq", flat=True).first() or 0


@pytest.fixture
def regions():
    return (
        RegionFactory(name="osc-fr1", domain_suffix="osc-fr1.example-paas.io"),
        RegionFactory(name="osc-secnum", domain_suffix="osc-secnum.example-paas.io"),
    )


def _served(region, name: str):
    domain = DomainFactory(name=name, app=AppFactory(region=region))
    return CertificateFactory(
        domain=domain, private_key=seal(f"-----BEGIN PRIVATE KEY-----\n{name}\n".encode())
    )


def test_a_router_of_one_region_is_served_nothing_for_another_regions_name(regions):
    fr1, secnum = regions
    _served(fr1, "www.fr1.example")
    _served(secnum, "www.secnum.example")
    scoped = Client(HTTP_AUTHORIZATION=f"Bearer {create_router_token('edge-fr1', [fr1.pk])}")
    everywhere = Client(HTTP_AUTHORIZATION=f"Bearer {create_router_token('edge-all')}")
    url = "/routers/v1/certificate"

    assert scoped.get(url, {"server_name": "www.fr1.example"}).status_code == 200
    refused = scoped.get(url, {"server_name": "www.secnum.example"})
    assert refused.status_code == 204 and refused.content == b""
    assert everywhere.get(url, {"server_name": "www.secnum.example"}).status_code == 200


def test_the_change_feed_of_a_scoped_router_holds_only_its_regions_certificates(regions):
    fr1, secnum = regions
    before = _last()
    ours = _served(fr1, "shop.fr1.example")
    _served(secnum, "shop.secnum.example")
    token = create_router_token("edge-fr1", [fr1.pk])

    body = Client(HTTP_AUTHORIZATION=f"Bearer {token}").get("/routers/v1/changes", {"after": before})

    assert [change["name"] for change in body.json()["changes"]] == ["shop.fr1.example"]
    assert b"shop.secnum.example" not in body.content
    # A move to the other region: the scoped router is told to drop the name, with no key.
    cursor = body.json()["cursor"]
    type(ours.domain).objects.filter(pk=ours.domain_id).update(app=AppFactory(region=secnum))
    moved = Client(HTTP_AUTHORIZATION=f"Bearer {token}").get("/routers/v1/changes", {"after": cursor}).json()
    assert moved["changes"] == [{"seq": moved["cursor"], "name": "shop.fr1.example", "candidates": []}]


def test_router_token_create_takes_regions_by_name_and_list_shows_the_scope(regions):
    out = io.StringIO()
    call_command("router_token", "create", "--name", "edge-1", "--region", "osc-fr1", stdout=out)
    assert ApiToken.objects.get(name="edge-1").regions == [regions[0].pk]
    listing = io.StringIO()
    call_command("router_token", "list", stdout=listing)
    assert "edge-1" in listing.getvalue() and "osc-fr1" in listing.getvalue()
    with pytest.raises(CommandError, match="no region named mars; the regions are: osc-fr1, osc-secnum"):
        call_command("router_token", "create", "--name", "edge-2", "--region", "mars")
    assert not ApiToken.objects.filter(name="edge-2").exists()
