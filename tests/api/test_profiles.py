"""A domain's CA profile through the API: chosen at creation and changed later, checked with the
CA's directory (a stub here), refused with a 400 naming what the CA offers, a 503 when the CA cannot
be asked, and nothing saved either way; shown with the domain and its certificate."""

from __future__ import annotations

import pytest

from domains.models import Domain, DomainEvent
from tests.api.conftest import API
from tests.directory_stub import stub_directory, unreachable_directory  # noqa: F401 (fixtures)
from tests.factories import CertificateFactory, DomainFactory

pytestmark = pytest.mark.django_db

DOMAINS = f"{API}/apps/shop/domains"
WWW = f"{DOMAINS}/www.example.com"
OFFERED = "the CA offers classic, shortlived, tlsserver"


def test_a_domain_created_with_an_offered_profile_keeps_it(alice_api, shop, stub_directory, settings):  # noqa: F811
    settings.ACME_PROFILE = "classic"

    response = alice_api.post(DOMAINS, {"name": "www.example.com", "profile": "shortlived"}, format="json")

    assert response.status_code == 201, response.content
    assert response.json()["profile"] == "shortlived"
    assert response.json()["effective_profile"] == "shortlived"
    assert Domain.objects.get(name="www.example.com").acme_profile == "shortlived"


def test_a_domain_created_without_a_profile_shows_the_platforms_default(alice_api, shop, settings):
    settings.ACME_PROFILE = "tlsserver"

    response = alice_api.post(DOMAINS, {"name": "www.example.com"}, format="json")

    assert response.status_code == 201
    assert (response.json()["profile"], response.json()["effective_profile"]) == ("", "tlsserver")


def test_creating_with_a_profile_the_ca_does_not_offer_is_400_naming_the_offered_ones_and_adds_nothing(
    alice_api,
    shop,
    stub_directory,  # noqa: F811
):
    response = alice_api.post(DOMAINS, {"name": "www.example.com", "profile": "sixday"}, format="json")

    assert response.status_code == 400
    assert response.json() == {"profile": [f"the CA does not offer the profile 'sixday': {OFFERED}"]}
    assert not Domain.objects.exists()
    assert not DomainEvent.objects.exists()


def test_creating_with_a_profile_when_the_ca_is_unreachable_is_503_and_adds_nothing(
    alice_api,
    shop,
    unreachable_directory,  # noqa: F811
):
    response = alice_api.post(DOMAINS, {"name": "www.example.com", "profile": "classic"}, format="json")

    assert response.status_code == 503
    assert "could not be checked: the CA's directory is unreachable" in response.json()["detail"]
    assert not Domain.objects.exists()


def test_creating_with_a_profile_longer_than_the_column_is_400_before_the_ca_is_asked(
    alice_api,
    shop,
    stub_directory,  # noqa: F811
):
    response = alice_api.post(DOMAINS, {"name": "www.example.com", "profile": "p" * 65}, format="json")

    assert response.status_code == 400
    assert "profile" in response.json()
    assert stub_directory.requests == 0
    assert not Domain.objects.exists()


def test_changing_to_an_offered_profile_keeps_it_and_says_so_in_the_history(alice_api, shop, stub_directory):  # noqa: F811
    domain = DomainFactory(app=shop, name="www.example.com")

    response = alice_api.patch(WWW, {"profile": "tlsserver"}, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["profile"] == "tlsserver"
    domain.refresh_from_db()
    assert domain.acme_profile == "tlsserver"
    assert DomainEvent.objects.filter(
        domain=domain, reason__startswith="CA profile changed from the platform's default to tlsserver"
    ).exists()


def test_changing_back_to_the_default_needs_no_ca(alice_api, shop, unreachable_directory):  # noqa: F811
    domain = DomainFactory(app=shop, name="www.example.com", acme_profile="shortlived")

    response = alice_api.patch(WWW, {"profile": ""}, format="json")

    assert response.status_code == 200, response.content
    domain.refresh_from_db()
    assert domain.acme_profile == ""


def test_changing_to_a_profile_the_ca_does_not_offer_is_400_and_changes_nothing(
    alice_api,
    shop,
    stub_directory,  # noqa: F811
):
    domain = DomainFactory(app=shop, name="www.example.com", acme_profile="classic")

    # With another change in the same request: all or nothing.
    response = alice_api.patch(WWW, {"profile": "sixday", "letsencrypt": False}, format="json")

    assert response.status_code == 400
    assert response.json() == {"profile": [f"the CA does not offer the profile 'sixday': {OFFERED}"]}
    domain.refresh_from_db()
    assert (domain.acme_profile, domain.letsencrypt_enabled) == ("classic", True)
    assert not DomainEvent.objects.filter(domain=domain).exists()


def test_changing_the_profile_when_the_ca_is_unreachable_is_503_and_changes_nothing(
    alice_api,
    shop,
    unreachable_directory,  # noqa: F811
):
    domain = DomainFactory(app=shop, name="www.example.com", acme_profile="classic")

    response = alice_api.patch(WWW, {"profile": "shortlived"}, format="json")

    assert response.status_code == 503
    assert "try again later" in response.json()["detail"]
    domain.refresh_from_db()
    assert domain.acme_profile == "classic"


def test_the_served_certificate_shows_the_profile_it_was_issued_under(alice_api, shop):
    domain = DomainFactory(app=shop, name="www.example.com", acme_profile="shortlived")
    CertificateFactory(domain=domain, profile="shortlived")

    body = alice_api.get(WWW).json()

    assert body["certificate"]["profile"] == "shortlived"
