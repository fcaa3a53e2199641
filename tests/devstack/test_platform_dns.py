"""`make run`'s mock DNS answers for the platform's own names, kept in step with the database: the
record Certwright asks customers for (a CNAME to the app's hostname) must lead the CA somewhere."""

from __future__ import annotations

import uuid

import dns.message
import dns.query
import dns.rdatatype
import pytest

from devstack.platform_dns import PlatformDns
from domains.models import Domain, DomainStatus
from domains.services import create_domain
from tests.factories import AppFactory, RegionFactory
from tests.integration.polling import status_of, unique_name, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def addresses(stack, name: str, rdtype: str = "A") -> list[str]:
    """What the mock DNS answers for `name`, as the CA and the check ask it."""
    query = dns.message.make_query(name, rdtype)
    response = dns.query.udp(query, "127.0.0.1", port=stack.dns_port, timeout=5)
    wanted = dns.rdatatype.from_text(rdtype)
    return sorted(r.to_text() for rrset in response.answer if rrset.rdtype == wanted for r in rrset)


def region(**fields):
    suffix = f"r{uuid.uuid4().hex[:8]}.example-paas.io"
    defaults = {
        "name": suffix.split(".")[0],
        "domain_suffix": suffix,
        "cname_target": f"ingress.{suffix}",
        "ingress_ipv4": ["127.0.0.1"],
        "ingress_ipv6": [],
    }
    return RegionFactory(**(defaults | fields))


def test_every_apps_hostname_and_cname_target_resolve_to_their_regions_ingress(pebble_stack):
    first = region(ingress_ipv4=["192.0.2.10", "192.0.2.11"], ingress_ipv6=["2001:db8::10"])
    second = region()
    shop, blog = AppFactory(name="shop", region=first), AppFactory(name="blog", region=second)
    assert PlatformDns(pebble_stack.challtestsrv).sync() == 4
    assert addresses(pebble_stack, shop.default_hostname) == ["192.0.2.10", "192.0.2.11"]
    assert addresses(pebble_stack, shop.default_hostname, "AAAA") == ["2001:db8::10"]
    assert addresses(pebble_stack, first.cname_target) == ["192.0.2.10", "192.0.2.11"]
    assert addresses(pebble_stack, blog.default_hostname) == ["127.0.0.1"]
    assert addresses(pebble_stack, blog.default_hostname, "AAAA") == []


def test_the_mock_dns_follows_apps_and_regions_as_they_change(pebble_stack):
    where = region(ingress_ipv4=["192.0.2.10"])
    app = AppFactory(name="shop", region=where)
    platform = PlatformDns(pebble_stack.challtestsrv)
    platform.sync()
    old_hostname = app.default_hostname
    assert platform.sync() == 0, "nothing changed, nothing sent"

    app.name = "boutique"
    app.save()
    where.ingress_ipv4 = ["192.0.2.20"]
    where.ingress_ipv6 = ["2001:db8::20"]
    where.save()
    kept = AppFactory(name="kept", region=where)
    platform.sync()
    assert addresses(pebble_stack, old_hostname) == []
    assert addresses(pebble_stack, app.default_hostname) == ["192.0.2.20"]
    assert addresses(pebble_stack, app.default_hostname, "AAAA") == ["2001:db8::20"]
    assert addresses(pebble_stack, where.cname_target) == ["192.0.2.20"]

    app.delete()
    platform.sync()
    assert addresses(pebble_stack, app.default_hostname) == []
    assert addresses(pebble_stack, kept.default_hostname) == ["192.0.2.20"]


def test_the_cname_certwright_asks_for_gets_a_certificate_once_the_platforms_names_are_published(
    issuance_stack, challtestsrv, quota_redis
):
    app = AppFactory(name="demo", region=region())
    PlatformDns(challtestsrv).sync()
    name = unique_name()
    # Exactly the record domains-show prints, and nothing else: no address of the customer's own.
    challtestsrv.set_cname(name, f"{app.default_hostname}.")
    domain = create_domain(app, name)
    wait_for(
        lambda: status_of(domain) == DomainStatus.IN_USE,
        what=f"{name} in use",
        describe=lambda: Domain.objects.filter(pk=domain.pk).values("status", "last_error").first(),
    )
