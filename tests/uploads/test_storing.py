"""Certificates are stored by one function (certificates/store.py) for uploads and issued certificates,
and an upload of the domain's own Let's Encrypt certificate is refused in words, never a 500."""

from __future__ import annotations

import hashlib

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from api.tokens import create_token
from certificates.custom import UploadRejected, check_upload
from certificates.facts import certificate_facts
from certificates.models import Certificate, CertificateSource, renewal_due
from certificates.store import store_certificate
from certificates.verify import verify_issued_chain
from domains.custom_certificates import install_custom_certificate
from tests.factories import AppFactory, CertificateFactory, DomainFactory
from tests.pki import der, key_pem

pytestmark = pytest.mark.django_db

DOMAIN = "www.example.com"
OWN_LETSENCRYPT = (
    "this is the domain's Let's Encrypt certificate, which Certwright already serves and renews: "
    "upload a certificate of your own"
)


def letsencrypt_certificate(trusted, domain):
    """The domain's Let's Encrypt certificate as step_download stores it; returns (leaf, key, row)."""
    leaf, key = trusted.leaf([domain.name])
    facts = verify_issued_chain(trusted.chain_pem(leaf).decode(), key_pem(key), [domain.name])
    row = store_certificate(domain.pk, CertificateSource.LETSENCRYPT, facts, key_pem(key), timezone.now())
    return leaf, key, row


def letsencrypt_row(trusted, domain):
    """A Let's Encrypt certificate row of the domain whose leaf is a real one; returns (leaf, key)."""
    leaf, key = trusted.leaf([domain.name])
    CertificateFactory(domain=domain, fingerprint_sha256=hashlib.sha256(der(leaf)).hexdigest())
    return leaf, key


def test_upload_of_the_domains_own_letsencrypt_certificate_is_refused_and_keeps_the_custom_one(trusted):
    domain = DomainFactory(name=DOMAIN)
    own_leaf, own_key = trusted.leaf([DOMAIN])
    custom = install_custom_certificate(domain, trusted.chain_pem(own_leaf), key=key_pem(own_key))
    leaf, key = letsencrypt_row(trusted, domain)

    with pytest.raises(UploadRejected) as rejected:
        install_custom_certificate(domain, trusted.chain_pem(leaf), key=key_pem(key))

    assert (str(rejected.value), rejected.value.field) == (OWN_LETSENCRYPT, "cert")
    # Nothing half-done: the earlier custom certificate is still there.
    assert list(Certificate.objects.filter(domain=domain).order_by("source").values_list("source", "pk")) == [
        (CertificateSource.CUSTOM, custom.pk),
        (CertificateSource.LETSENCRYPT, Certificate.objects.get(source=CertificateSource.LETSENCRYPT).pk),
    ]


def test_api_upload_of_the_domains_own_letsencrypt_certificate_answers_400(trusted, quota_redis):
    app = AppFactory()
    domain = DomainFactory(app=app, name=DOMAIN)
    leaf, key = letsencrypt_row(trusted, domain)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {create_token(app.owner, 'tests')[1]}")
    response = client.patch(
        f"/api/v1/apps/{app.name}/domains/{DOMAIN}",
        {"tlscert": trusted.chain_pem(leaf).decode(), "tlskey": key_pem(key).decode()},
        format="json",
    )
    assert (response.status_code, response.json()) == (400, {"tlscert": [OWN_LETSENCRYPT]})


def test_storing_a_certificate_twice_stores_it_once(trusted):
    domain = DomainFactory(name=DOMAIN)
    leaf, key, first = letsencrypt_certificate(trusted, domain)
    facts = certificate_facts([leaf, trusted.intermediate])
    again = store_certificate(domain.pk, CertificateSource.LETSENCRYPT, facts, key_pem(key), timezone.now())
    assert again is None
    assert list(Certificate.objects.filter(domain=domain).values_list("pk", flat=True)) == [first.pk]


def test_stored_letsencrypt_certificate_is_due_for_renewal_and_a_custom_one_is_not(trusted):
    domain = DomainFactory(name=DOMAIN)
    now = timezone.now()
    _, _, letsencrypt = letsencrypt_certificate(trusted, domain)
    leaf, key = trusted.leaf([DOMAIN])
    checked = check_upload(DOMAIN, trusted.chain_pem(leaf), key_pem(key))
    custom = store_certificate(domain.pk, CertificateSource.CUSTOM, checked, checked.private_key_pem, now)

    letsencrypt.refresh_from_db()
    assert letsencrypt.renew_at == renewal_due(letsencrypt.not_before, letsencrypt.not_after)
    custom.refresh_from_db()
    assert (custom.renew_at, custom.created, custom.fingerprint_sha256) == (
        None,
        now,
        checked.fingerprint_sha256,
    )
    assert custom.private_key.reveal() == checked.private_key_pem


def test_upload_facts_and_issued_chain_facts_are_read_the_same_way(trusted):
    leaf, key = trusted.leaf([DOMAIN, "Shop.Example.com"])
    checked = check_upload(DOMAIN, trusted.chain_pem(leaf), key_pem(key))
    issued = verify_issued_chain(trusted.chain_pem(leaf).decode(), key_pem(key), [DOMAIN])
    assert issued == certificate_facts([leaf, trusted.intermediate])
    assert vars(issued) == {name: value for name, value in vars(checked).items() if name != "private_key_pem"}
    assert issued.sans == [DOMAIN, "shop.example.com"]
