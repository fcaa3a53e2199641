"""Takeover protection against Pebble: a name on the shared ingress orders nothing until its
ownership TXT record is there; a CNAME to the app's own hostname needs none."""

from __future__ import annotations

import pytest

from certificates.models import Order
from domains.models import Domain, DomainStatus
from domains.ownership import challenge_name, ownership_token
from domains.services import create_domain
from tests.integration.pointing import prove_ownership
from tests.integration.polling import status_of, unique_name, wait_for
from workers import domain_checks

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _checked_again(domain: Domain) -> None:
    Domain.objects.filter(pk=domain.pk).update(next_attempt_at=Domain.objects.get(pk=domain.pk).created)
    assert domain_checks.sweep() >= 1


def test_a_name_on_the_shared_ingress_orders_nothing_until_its_ownership_record_is_published(
    issuance_stack, challtestsrv, app
):
    name = unique_name()
    challtestsrv.add_a(name, ["127.0.0.1"])
    domain = create_domain(app, name)
    wait_for(lambda: Domain.objects.get(pk=domain.pk).last_checked_at, what="the first check")
    domain.refresh_from_db()
    assert domain.status == DomainStatus.ACTION_REQUIRED
    assert domain.waiting_on == "ownership"
    token = ownership_token(app.pk, name)
    assert domain.ownership_token == token
    assert f'_certwright-challenge.{name}. TXT "{token}"' in domain.last_error
    assert f"make it a CNAME to {app.default_hostname}" in domain.last_error
    assert domain.ownership_verified_at is None
    assert not Order.objects.filter(domain=domain).exists()

    # Another app's token does not prove anything.
    challtestsrv.set_txt(challenge_name(name), ownership_token(app.pk + 1000, name))
    _checked_again(domain)
    wait_for(lambda: Domain.objects.get(pk=domain.pk).consecutive_failures == 2, what="the second check")
    assert status_of(domain) == DomainStatus.ACTION_REQUIRED
    assert not Order.objects.filter(domain=domain).exists()

    prove_ownership(challtestsrv, app, name)
    _checked_again(domain)
    wait_for(lambda: status_of(domain) == DomainStatus.IN_USE, what="in use once ownership is proven")
    domain.refresh_from_db()
    assert domain.ownership_verified_at is not None


def test_a_cname_to_the_region_target_needs_the_ownership_record_too(issuance_stack, challtestsrv, app):
    name = unique_name()
    challtestsrv.set_cname(name, app.region.cname_target)
    challtestsrv.add_a(app.region.cname_target, ["127.0.0.1"])
    domain = create_domain(app, name)
    wait_for(lambda: Domain.objects.get(pk=domain.pk).last_checked_at, what="the first check")
    domain.refresh_from_db()
    assert domain.status == DomainStatus.ACTION_REQUIRED
    assert "_certwright-challenge" in domain.last_error


def test_a_cname_to_the_apps_own_hostname_proves_ownership_without_a_record(
    issuance_stack, challtestsrv, app
):
    name = unique_name()
    challtestsrv.set_cname(name, app.default_hostname)
    challtestsrv.add_a(app.default_hostname, ["127.0.0.1"])
    domain = create_domain(app, name)
    wait_for(lambda: status_of(domain) == DomainStatus.IN_USE, what="in use through the app's CNAME")
    domain.refresh_from_db()
    assert domain.ownership_verified_at is not None
