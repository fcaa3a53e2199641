"""The issuers in the admin: *Issuers* lists them from the settings with their breaker and the
problem an operator must fix (never the HMAC key); a domain is pinned to one on its page, and a
name the platform does not have is refused on the form with nothing saved."""

from __future__ import annotations

import pytest

from certificates.issuers import record_ca_failure
from config.issuers import IssuerSetting
from domains.models import Domain
from tests.factories import AppFactory, DomainFactory

pytestmark = pytest.mark.django_db

HMAC_KEY = "c2VjcmV0LWhtYWMta2V5LWZvci1hZG1pbi10ZXN0"


@pytest.fixture(autouse=True)
def two_issuers(settings):
    second = IssuerSetting(
        "second", "https://second.test/dir", ("pki.goog",), eab_kid="kid-7", eab_hmac_key=HMAC_KEY
    )
    settings.ACME_ISSUERS = [*settings.ACME_ISSUERS, second]
    settings.ISSUER_BREAKER_FAILURES = 1


def test_the_issuers_page_lists_them_with_breaker_and_binding_but_never_the_hmac_key(admin_client):
    record_ca_failure("https://second.test/dir", "could not reach the CA: ConnectionError")

    body = admin_client.get("/admin/certificates/issuer/").content.decode()

    assert "letsencrypt" in body and "second" in body
    assert "key id kid-7" in body
    assert "open until" in body
    assert HMAC_KEY not in body


def test_a_domain_is_pinned_on_its_page_and_an_unknown_issuer_is_refused(admin_client):
    domain = DomainFactory()
    page = f"/admin/domains/domain/{domain.pk}/change/"
    form = {
        "letsencrypt_enabled": "on",
        "acme_profile": "",
        "events-TOTAL_FORMS": "0",
        "events-INITIAL_FORMS": "0",
    }

    response = admin_client.post(page, {**form, "issuer": "zerossl"})
    assert response.status_code == 200
    assert (
        "not one of the platform&#x27;s certificate authorities (letsencrypt, second)"
        in response.content.decode()
    )
    assert Domain.objects.get(pk=domain.pk).issuer == ""

    response = admin_client.post(page, {**form, "issuer": "second"})
    assert response.status_code == 302
    assert Domain.objects.get(pk=domain.pk).issuer == "second"


def test_a_domain_added_in_the_admin_with_an_issuer_is_pinned(admin_client):
    app = AppFactory()
    response = admin_client.post(
        "/admin/domains/domain/add/",
        {
            "app": app.pk,
            "name": "www.example.com",
            "letsencrypt_enabled": "on",
            "issuer": "second",
            "events-TOTAL_FORMS": "0",
            "events-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert Domain.objects.get().issuer == "second"
