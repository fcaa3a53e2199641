"""A domain's CA profile through the API: chosen at creation and changed later, checked with the
CA's directory (a stub here), refused with a 400 naming what the CA offers, a 503 when the CA cannot
be asked, and nothing saved either way; shown with the domain and its certificate."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from domains.models import Domain, DomainEvent
from tests.api.conftest import API
from tests.factories import CertificateFactory, DomainFactory

pytestmark = pytest.mark.django_db

DOMAINS = f"{API}/apps/shop/domains"
WWW = f"{DOMAINS}/www.example.com"
OFFERED = "the CA offers classic, shortlived, tlsserver"


def test_a_domain_created_with_an_offered_profile_keeps_it(alice_api, shop, stub_directory, settings):
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
    stub_directory,
):
    response = alice_api.post(DOMAINS, {"name": "www.example.com", "profile": "sixday"}, format="json")

    assert response.status_code == 400
    assert response.json() == {"profile": [f"the CA does not offer the profile 'sixday': {OFFERED}"]}
    assert not Domain.objects.exists()
    assert not DomainEvent.objects.exists()


def test_creating_with_a_profile_when_the_ca_is_unreachable_is_503_and_adds_nothing(
    alice_api,
    shop,
    unreachable_directory,
):
    response = alice_api.post(DOMAINS, {"name": "www.example.com", "profile": "classic"}, format="json")

    assert response.status_code == 503
    assert "could not be checked: the CA's directory is unreachable" in response.json()["detail"]
    assert not Domain.objects.exists()


def test_creating_with_a_profile_longer_than_the_column_is_400_before_the_ca_is_asked(
    alice_api,
    shop,
    stub_directory,
):
    response = alice_api.post(DOMAINS, {"name": "www.example.com", "profile": "p" * 65}, format="json")

    assert response.status_code == 400
    assert "profile" in response.json()
    assert stub_directory.requests == 0
    assert not Domain.objects.exists()


def test_changing_to_an_offered_profile_keeps_it_and_says_so_in_the_history(alice_api, shop, stub_directory):
    domain = DomainFactory(app=shop, name="www.example.com")

    response = alice_api.patch(WWW, {"profile": "tlsserver"}, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["profile"] == "tlsserver"
    domain.refresh_from_db()
    assert domain.acme_profile == "tlsserver"
    assert DomainEvent.objects.filter(
        domain=domain, reason__startswith="CA profile changed from the platform's default to tlsserver"
    ).exists()


def test_changing_back_to_the_default_needs_no_ca(alice_api, shop, unreachable_directory):
    domain = DomainFactory(app=shop, name="www.example.com", acme_profile="shortlived")

    response = alice_api.patch(WWW, {"profile": ""}, format="json")

    assert response.status_code == 200, response.content
    domain.refresh_from_db()
    assert domain.acme_profile == ""


def test_changing_to_a_profile_the_ca_does_not_offer_is_400_and_changes_nothing(
    alice_api,
    shop,
    stub_directory,
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
    unreachable_directory,
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


# --- the operator's commands and the admin --------------------------------------------------------

# The change page's history inline (read only, empty here): its management form.
HISTORY_FORMSET = {"events-TOTAL_FORMS": "0", "events-INITIAL_FORMS": "0"}


def test_manage_domains_add_refuses_a_profile_the_ca_does_not_offer_and_adds_nothing(shop, stub_directory):
    with pytest.raises(CommandError, match="the CA does not offer the profile 'sixday'"):
        call_command("domains-add", "www.example.com", "--app", "shop", "--profile", "sixday")
    assert not Domain.objects.exists()


def test_manage_domains_add_and_show_give_the_profile(shop, stub_directory):
    call_command(
        "domains-add", "www.example.com", "--app", "shop", "--profile", "tlsserver", stdout=StringIO()
    )
    out = StringIO()
    call_command("domains-show", "www.example.com", stdout=out)
    assert "profile       tlsserver" in out.getvalue()


def test_the_admin_refuses_a_profile_the_ca_does_not_offer_and_changes_nothing(
    admin_client, shop, stub_directory
):
    domain = DomainFactory(app=shop, name="www.example.com", acme_profile="classic")
    url = reverse("admin:domains_domain_change", args=[domain.pk])

    response = admin_client.post(
        url, {**HISTORY_FORMSET, "letsencrypt_enabled": "on", "acme_profile": "sixday"}
    )

    assert response.status_code == 200
    assert "the CA does not offer the profile" in response.content.decode()
    domain.refresh_from_db()
    assert domain.acme_profile == "classic"
    response = admin_client.post(
        url, {**HISTORY_FORMSET, "letsencrypt_enabled": "on", "acme_profile": "shortlived"}
    )
    assert response.status_code == 302
    domain.refresh_from_db()
    assert domain.acme_profile == "shortlived"
