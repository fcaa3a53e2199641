"""The certificate authorities through the API: `GET issuers` lists them in order with their breaker;
a domain is pinned to one at creation or later (an unknown name is a 400 naming those there are, and
nothing is saved), unpinned with ""; the served certificate says which of them issued it."""

from __future__ import annotations

import pytest

from certificates.issuers import record_ca_failure
from config.issuers import IssuerSetting
from domains.models import Domain
from tests.api.conftest import API
from tests.factories import AcmeAccountFactory, CertificateFactory, DomainFactory

pytestmark = pytest.mark.django_db

DOMAINS = f"{API}/apps/shop/domains"
WWW = f"{DOMAINS}/www.example.com"
PRIMARY = IssuerSetting("letsencrypt", "https://le.test/dir", ("letsencrypt.org",))
SECOND = IssuerSetting("second", "https://second.test/dir", ("pki.goog",), limits="none")


@pytest.fixture(autouse=True)
def two_issuers(settings):
    settings.ACME_ISSUERS = [PRIMARY, SECOND]
    settings.ISSUER_BREAKER_FAILURES = 1


def test_issuers_are_listed_in_order_with_their_caa_names_and_breaker(alice_api):
    record_ca_failure(SECOND.directory_url, "could not reach the CA: ConnectionError")

    response = alice_api.get(f"{API}/issuers")

    assert response.status_code == 200
    assert response.json() == [
        {"name": "letsencrypt", "primary": True, "caa": ["letsencrypt.org"], "state": "closed"},
        {"name": "second", "primary": False, "caa": ["pki.goog"], "state": "open"},
    ]


def test_a_domain_is_pinned_at_creation_and_unpinned_later(alice_api, shop):
    response = alice_api.post(DOMAINS, {"name": "www.example.com", "issuer": "second"}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["issuer"] == "second"
    assert Domain.objects.get(name="www.example.com").issuer == "second"

    response = alice_api.patch(WWW, {"issuer": ""}, format="json")

    assert response.status_code == 200
    assert response.json()["issuer"] == ""
    assert Domain.objects.get(name="www.example.com").issuer == ""


def test_an_unknown_issuer_is_400_naming_the_known_ones_and_saves_nothing(alice_api, shop):
    response = alice_api.post(DOMAINS, {"name": "www.example.com", "issuer": "zerossl"}, format="json")

    assert response.status_code == 400
    assert "'zerossl' is not one of the platform's certificate authorities (letsencrypt, second)" in str(
        response.json()["issuer"]
    )
    assert not Domain.objects.exists()

    DomainFactory(app=shop, name="www.example.com")
    response = alice_api.patch(WWW, {"issuer": "x" * 40}, format="json")
    assert response.status_code == 400 and "issuer" in response.json()
    assert Domain.objects.get(name="www.example.com").issuer == ""


def test_the_served_certificate_says_which_ca_issued_it(alice_api, shop):
    domain = DomainFactory(app=shop, name="www.example.com")
    CertificateFactory(domain=domain, account=AcmeAccountFactory(directory_url=SECOND.directory_url))

    certificate = alice_api.get(WWW).json()["certificate"]

    assert certificate["issued_by"] == "second"
    assert certificate["issuer"]  # the X.509 issuer name, as before
