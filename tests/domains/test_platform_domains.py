"""The platform's own `*.<suffix>` domain of each region (domains/platform.py): made with the region,
replaced when the suffix changes, removed with the region; customers can neither add names under the
platform's suffixes nor see the platform's app; its DNS-01 record is published directly when the
suffix lies in DNS01_ZONE."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from rest_framework.test import APIClient

from api.tokens import create_token
from certificates import dns01
from certificates.models import CertificateSource
from certificates.serving import served_certificate
from domains.models import App, Domain, DomainStatus, Region
from domains.platform import (
    PLATFORM_APP_NAME,
    PLATFORM_USERNAME,
    ensure_platform_domains,
    platform_domains,
    remove_platform_domain,
)
from domains.services import InvalidDomainName, create_domain, dns_records_to_add
from tests.api.conftest import API
from tests.factories import AppFactory, CertificateFactory, RegionFactory, UserFactory
from workers.tasks.dns import sweep_due_domains

pytestmark = pytest.mark.django_db


def _platform_names() -> dict[str, str]:
    return dict(platform_domains().values_list("app__region__name", "name"))


def test_a_region_gets_its_platform_domain_once_owned_by_a_user_who_cannot_sign_in():
    region = RegionFactory(name="eu1", domain_suffix="EU1.Example-Paas.io.")
    changes = ensure_platform_domains()
    assert [(c.region, c.name, c.what) for c in changes] == [("eu1", "*.eu1.example-paas.io", "created")]
    domain = Domain.objects.get(name="*.eu1.example-paas.io")
    assert domain.app.region == region and domain.app.name == PLATFORM_APP_NAME
    # The suffix is the platform's: nothing to prove, checked like any wildcard.
    assert domain.ownership_verified_at is not None
    assert domain.status == DomainStatus.PENDING_DNS and domain.claim_token is not None
    owner = domain.app.owner
    assert owner.username == PLATFORM_USERNAME
    assert not owner.is_active and not owner.has_usable_password() and not owner.is_staff
    # Idempotent: a second call (beat's next tick) changes nothing.
    assert ensure_platform_domains() == []
    assert Domain.objects.filter(name="*.eu1.example-paas.io").count() == 1


def test_a_suffix_change_replaces_the_platform_domain_and_its_certificates_go(
    django_capture_on_commit_callbacks,
):
    region = RegionFactory(name="eu1", domain_suffix="eu1.example-paas.io")
    ensure_platform_domains()
    old = Domain.objects.get(name="*.eu1.example-paas.io")
    CertificateFactory(domain=old)
    region.domain_suffix = "eu-west.example-paas.io"
    region.save()
    changes = ensure_platform_domains()
    assert [c.what for c in changes] == ["replaced *.eu1.example-paas.io"]
    assert _platform_names() == {"eu1": "*.eu-west.example-paas.io"}
    assert not Domain.objects.filter(pk=old.pk).exists()
    # The same app holds the new name; nothing of the old one is served any more.
    assert Domain.objects.get(name="*.eu-west.example-paas.io").app_id == old.app_id
    assert served_certificate("my-app.eu1.example-paas.io") is None


def test_every_region_gets_its_own_and_a_removed_region_takes_its_platform_domain_along():
    RegionFactory(name="eu1", domain_suffix="eu1.example-paas.io")
    us1 = RegionFactory(
        name="us1", domain_suffix="us1.example-paas.io", cname_target="ingress.us1.example-paas.io"
    )
    ensure_platform_domains()
    assert _platform_names() == {"eu1": "*.eu1.example-paas.io", "us1": "*.us1.example-paas.io"}
    assert remove_platform_domain(us1)
    us1.delete()
    assert _platform_names() == {"eu1": "*.eu1.example-paas.io"}
    assert not App.objects.filter(region__name="us1").exists()


def test_a_name_a_customer_took_before_the_suffix_was_the_platforms_is_reported_not_raised():
    customer_app = AppFactory(region=RegionFactory(name="eu1", domain_suffix="eu1.example-paas.io"))
    # Added before the second region existed (its suffix was nobody's then).
    create_domain(customer_app, "*.us1.example-paas.io")
    RegionFactory(name="us1", domain_suffix="us1.example-paas.io", cname_target="ingress.us1.example-paas.io")
    changes = {c.region: c.what for c in ensure_platform_domains()}
    assert changes["eu1"] == "created"
    assert changes["us1"] == "refused: *.us1.example-paas.io is already in use by another app"
    assert _platform_names() == {"eu1": "*.eu1.example-paas.io"}


@pytest.mark.parametrize(
    "name",
    ["x.eu1.example-paas.io", "*.eu1.example-paas.io", "eu1.example-paas.io", "a.b.dns01.example-paas.net"],
)
def test_a_customer_cannot_add_a_name_under_the_platforms_suffixes_or_its_dns01_zone(name, settings):
    settings.DNS01_ZONE = "dns01.example-paas.net"
    app = AppFactory(region=RegionFactory(name="eu1", domain_suffix="eu1.example-paas.io"))
    with pytest.raises(InvalidDomainName) as refused:
        create_domain(app, name)
    assert refused.value.rule == "platform_name"
    assert "belongs to the platform" in str(refused.value)


def test_a_customers_api_does_not_list_or_reach_the_platform_app_or_domain(quota_redis):
    region = RegionFactory(name="eu1", domain_suffix="eu1.example-paas.io")
    ensure_platform_domains()
    alice = UserFactory(username="alice")
    AppFactory(owner=alice, region=region, name="shop")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {create_token(alice, 'tests')[1]}")
    listed = api.get(f"{API}/apps")
    assert listed.status_code == 200
    assert [app["name"] for app in listed.json()["results"]] == ["shop"]
    for path in (
        f"{API}/apps/{PLATFORM_APP_NAME}",
        f"{API}/apps/{PLATFORM_APP_NAME}/domains",
        f"{API}/apps/{PLATFORM_APP_NAME}/domains/*.eu1.example-paas.io",
    ):
        assert api.get(path).status_code == 404, path
        assert api.delete(path).status_code in (404, 405), path
    assert _platform_names() == {"eu1": "*.eu1.example-paas.io"}
    # Nor can a customer make an app of that name, or sign in as the platform's user.
    made = api.post(f"{API}/apps", {"name": PLATFORM_APP_NAME, "region": "eu1"}, format="json")
    assert made.status_code == 400
    assert not get_user_model().objects.get(username=PLATFORM_USERNAME).api_tokens.exists()


def test_the_platform_dns01_record_is_published_directly_inside_the_zone_else_delegated(settings):
    settings.DNS01_ZONE = "example-paas.io"
    assert dns01.txt_owner("*.eu1.example-paas.io") == "_acme-challenge.eu1.example-paas.io"
    assert not dns01.delegated("*.eu1.example-paas.io")
    # A customer's wildcard elsewhere keeps its delegation.
    assert dns01.delegated("*.example.com")
    assert re.fullmatch(r"[a-z2-7]{32}\.example-paas\.io", dns01.txt_owner("*.example.com"))
    region = RegionFactory(name="eu1", domain_suffix="eu1.example-paas.io")
    ensure_platform_domains()
    domain = Domain.objects.get(name="*.eu1.example-paas.io")
    # No delegation to ask for: only the wildcard's own records, at the region's ingress.
    assert dns_records_to_add(domain) == [
        "*.eu1.example-paas.io. A 192.0.2.10",
        "*.eu1.example-paas.io. A 192.0.2.11",
        "*.eu1.example-paas.io. AAAA 2001:db8::10",
    ]
    # Outside the zone, the platform's name takes the delegation, like a customer's wildcard.
    settings.DNS01_ZONE = "dns01.example-paas.net"
    assert dns01.txt_owner(domain.name).endswith(".dns01.example-paas.net")
    assert dns_records_to_add(domain)[-1] == dns01.delegation_record(domain.name)
    assert region.name == "eu1"


def test_an_app_hostname_is_served_the_regions_wildcard_but_a_customer_domain_is_not():
    region = RegionFactory(name="eu1", domain_suffix="eu1.example-paas.io")
    ensure_platform_domains()
    platform = Domain.objects.get(name="*.eu1.example-paas.io")
    certificate = CertificateFactory(domain=platform, sans=[platform.name])
    shop = AppFactory(region=region, name="shop")
    customer = create_domain(shop, "shop.example.com")
    assert served_certificate("shop.eu1.example-paas.io").pk == certificate.pk
    assert served_certificate("shop.eu1.example-paas.io", regions=[region.pk]).pk == certificate.pk
    other = RegionFactory(name="us1", domain_suffix="us1.example-paas.io", cname_target="ingress.us1.x.io")
    assert served_certificate("shop.eu1.example-paas.io", regions=[other.pk]) is None
    # Neither the suffix itself, two labels below, nor a customer's own name.
    assert served_certificate("eu1.example-paas.io") is None
    assert served_certificate("a.shop.eu1.example-paas.io") is None
    assert served_certificate(customer.name) is None
    assert certificate.source == CertificateSource.LETSENCRYPT


def test_the_command_ensures_and_lists_the_platform_certificates(capsys):
    RegionFactory(name="eu1", domain_suffix="eu1.example-paas.io")
    call_command("platform_certificates")
    out = capsys.readouterr().out
    assert "eu1: *.eu1.example-paas.io created" in out
    assert re.search(r"eu1\s+\*\.eu1\.example-paas\.io\s+Pending DNS\s+-", out), out
    call_command("platform_certificates")
    assert "created" not in capsys.readouterr().out
    assert Region.objects.count() == 1


def test_the_admin_makes_the_platform_domain_with_the_region_and_deletes_it_with_the_region(admin_client):
    form = {
        "name": "eu1",
        "domain_suffix": "eu1.example-paas.io",
        "cname_target": "ingress.eu1.example-paas.io",
        "ingress_ipv4": "192.0.2.10",
        "ingress_ipv6": "",
    }
    added = admin_client.post("/admin/domains/region/add/", form, follow=True)
    assert added.status_code == 200
    assert "Platform certificate *.eu1.example-paas.io: created" in added.content.decode()
    region = Region.objects.get(name="eu1")
    listing = admin_client.get("/admin/domains/region/").content.decode()
    assert "*.eu1.example-paas.io</a>: Pending DNS, nothing served yet" in listing
    changed = admin_client.post(
        f"/admin/domains/region/{region.pk}/change/", {**form, "domain_suffix": "eu-west.example-paas.io"}
    )
    assert changed.status_code == 302
    assert _platform_names() == {"eu1": "*.eu-west.example-paas.io"}
    # The platform's app does not stop the deletion (a customer's would).
    confirm = admin_client.get(f"/admin/domains/region/{region.pk}/delete/").content.decode()
    assert "protected" not in confirm
    assert admin_client.post(f"/admin/domains/region/{region.pk}/delete/", {"post": "yes"}).status_code == 302
    assert not Region.objects.filter(pk=region.pk).exists()
    assert not platform_domains().exists()


def test_a_customers_app_still_stops_the_deletion_of_its_region_in_the_admin(admin_client):
    region = RegionFactory(name="eu1", domain_suffix="eu1.example-paas.io")
    ensure_platform_domains()
    AppFactory(region=region, name="shop")
    confirm = admin_client.get(f"/admin/domains/region/{region.pk}/delete/").content.decode()
    assert "would require deleting the following protected related objects" in confirm
    assert ">shop</a>" in confirm and PLATFORM_APP_NAME not in confirm


def test_beats_domain_sweep_gives_a_region_made_any_other_way_its_platform_domain():
    Region.objects.create(
        name="eu1", domain_suffix="eu1.example-paas.io", cname_target="in.eu1.example-paas.io"
    )
    assert not platform_domains().exists()
    sweep_due_domains()
    assert _platform_names() == {"eu1": "*.eu1.example-paas.io"}
