"""The routers' endpoint (`GET /routers/v1/certificate?server_name=`): who may fetch keys, what is
handed out for which name, and the caching protocol around it."""

from __future__ import annotations

import base64
import datetime
import hashlib
import io

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.utils import timezone

from api import routers
from api.routers import create_router_token
from api.tokens import create_token
from certificates.models import Certificate, CertificateSource
from certificates.sealing import seal
from certificates.serving import served_certificate, served_certificate_of
from domains.custom_certificates import install_custom_certificate, remove_custom_certificate
from domains.models import Domain, DomainStatus
from tests.factories import AcmeAccountFactory, DomainFactory, UserFactory
from tests.pki import Pki, der, key_pem

pytestmark = pytest.mark.django_db

URL = "/routers/v1/certificate"
DOMAIN = "www.example.com"
DAY = datetime.timedelta(days=1)


def stored_certificate(
    pki: Pki, domain: Domain, source: str = CertificateSource.LETSENCRYPT, **leaf_options
) -> tuple[x509.Certificate, Certificate]:
    """A stored certificate for the domain, signed by the test PKI (a Let's Encrypt one unless
    `source` says otherwise), without the upload checks."""
    leaf, key = pki.leaf([domain.name], **leaf_options)
    row = Certificate.objects.create(
        domain=domain,
        source=source,
        fullchain_pem=pki.chain_pem(leaf).decode(),
        private_key=seal(key_pem(key)),
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        sans=[domain.name],
        issuer=leaf.issuer.rfc4514_string(),
        serial=f"{leaf.serial_number:x}",
        fingerprint_sha256=hashlib.sha256(der(leaf)).hexdigest(),
    )
    return leaf, row


def router_client(token: str | None = None) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {token or create_router_token('edge-1')}")


def fetch(client: Client, server_name: str | None = DOMAIN, **headers):
    return client.get(URL, {} if server_name is None else {"server_name": server_name}, **headers)


def parts(body: bytes) -> tuple[list[x509.Certificate], object]:
    """The certificates (in order) and the private key of a PEM answer."""
    return x509.load_pem_x509_certificates(body), serialization.load_pem_private_key(
        body[body.index(b"-----BEGIN PRIVATE KEY-----") :], password=None
    )


def spki(public_key) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture(autouse=True)
def fresh_permission_cache():
    routers._permission_cache.clear()
    yield
    routers._permission_cache.clear()


@pytest.fixture
def served(pki):
    """www.example.com, in use with its Let's Encrypt certificate: (domain, leaf, row)."""
    domain = DomainFactory(name=DOMAIN, status=DomainStatus.IN_USE)
    leaf, row = stored_certificate(pki, domain)
    return domain, leaf, row


# --- what is handed out ------------------------------------------------------------------------------------


def test_a_router_gets_the_served_chain_leaf_first_then_the_key_that_matches_the_leaf(served, pki):
    _, leaf, row = served
    response = fetch(router_client())
    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-pem-file"
    certs, key = parts(response.content)
    assert certs == [leaf, pki.intermediate]
    assert spki(key.public_key()) == spki(leaf.public_key())
    assert response["ETag"] == f'"{row.fingerprint_sha256}"'
    assert response["X-Certificate-Source"] == "letsencrypt"
    assert response["X-Certificate-Domain"] == DOMAIN
    assert response["X-Certificate-Fingerprint"] == row.fingerprint_sha256
    assert datetime.datetime.fromisoformat(response["X-Certificate-Not-After"]) == row.not_after
    assert response["Cache-Control"] == "private, max-age=60"


def test_a_router_is_told_which_of_the_platforms_cas_issued_the_certificate(served, settings):
    _, _, row = served
    row.account = AcmeAccountFactory(directory_url=settings.ACME_DIRECTORY_URL)
    row.save(update_fields=["account"])
    assert fetch(router_client())["X-Certificate-Issuer"] == "letsencrypt"


def test_the_token_as_a_basic_auth_password_works_as_caddy_sends_it_from_its_url(served):
    token = create_router_token("caddy")
    basic = base64.b64encode(f"router:{token}".encode()).decode()
    response = Client(HTTP_AUTHORIZATION=f"Basic {basic}").get(URL, {"server_name": DOMAIN})
    assert response.status_code == 200


def test_a_valid_custom_certificate_is_handed_out_instead_of_the_letsencrypt_one(served, trusted):
    domain, _, letsencrypt_row = served
    leaf, key = trusted.leaf([DOMAIN])
    custom = install_custom_certificate(domain, trusted.chain_pem(leaf), key=key_pem(key))
    client = router_client()
    response = fetch(client)
    assert response["X-Certificate-Source"] == "custom"
    assert "X-Certificate-Issuer" not in response
    certs, served_key = parts(response.content)
    assert certs[0] == leaf and spki(served_key.public_key()) == spki(leaf.public_key())
    assert response["ETag"] == f'"{custom.fingerprint_sha256}"'
    # Deleted: the Let's Encrypt certificate is handed out on the next question.
    remove_custom_certificate(domain)
    assert fetch(client)["ETag"] == f'"{letsencrypt_row.fingerprint_sha256}"'


def test_an_expired_certificate_is_never_handed_out_the_newest_valid_one_is(pki):
    domain = DomainFactory(name=DOMAIN, status=DomainStatus.IN_USE)
    now = timezone.now()
    stored_certificate(pki, domain, not_before=now - 100 * DAY, not_after=now - DAY)
    _, older = stored_certificate(pki, domain, not_before=now - 10 * DAY, not_after=now + 20 * DAY)
    _, newer = stored_certificate(pki, domain, not_before=now - DAY, not_after=now + 80 * DAY)
    assert fetch(router_client())["ETag"] == f'"{newer.fingerprint_sha256}"'
    newer.delete()
    assert fetch(router_client())["ETag"] == f'"{older.fingerprint_sha256}"'


def test_a_name_certwright_does_not_serve_gets_204_so_the_router_falls_back(served):
    response = fetch(router_client(), "other.example.org")
    assert response.status_code == 204
    assert response.content == b""
    assert response["Cache-Control"] == "no-store"


def test_letsencrypt_disabled_without_a_custom_certificate_hands_out_nothing(served):
    domain, _, _ = served
    Domain.objects.filter(pk=domain.pk).update(letsencrypt_enabled=False)
    assert fetch(router_client()).status_code == 204


def test_a_wildcard_domain_covers_one_label_below_and_the_exact_domain_wins(pki):
    wildcard = DomainFactory(name="*.example.com", status=DomainStatus.IN_USE)
    _, wildcard_row = stored_certificate(pki, wildcard)
    client = router_client()
    assert fetch(client, "shop.example.com")["ETag"] == f'"{wildcard_row.fingerprint_sha256}"'
    assert fetch(client, "a.shop.example.com").status_code == 204
    exact = DomainFactory(name="shop.example.com", status=DomainStatus.IN_USE)
    _, exact_row = stored_certificate(pki, exact)
    assert fetch(client, "shop.example.com")["ETag"] == f'"{exact_row.fingerprint_sha256}"'


def test_the_name_is_matched_without_case_or_a_trailing_dot(served):
    client = router_client()
    assert fetch(client, "WWW.Example.COM.").status_code == 200


def test_the_handshake_lookup_agrees_with_the_serving_rule_for_every_mix_of_certificates(pki):
    """served_certificate (one hand-written statement) and in_serving_order (the ORM rule the admin
    and the API use) choose the same certificate, or both nothing."""
    now = timezone.now()
    mixes = {
        "letsencrypt-only": [("le", -DAY, 80 * DAY)],
        "two-letsencrypt": [("le", -30 * DAY, 60 * DAY), ("le", -DAY, 89 * DAY)],
        "custom-and-letsencrypt": [("le", -DAY, 80 * DAY), ("custom", -DAY, 300 * DAY)],
        "expired-custom": [("le", -DAY, 80 * DAY), ("custom", -400 * DAY, -DAY)],
        "not-yet-valid": [("le", DAY, 90 * DAY)],
        "expired-only": [("le", -100 * DAY, -10 * DAY)],
        "disabled-with-custom": [("le", -DAY, 80 * DAY), ("custom", -DAY, 300 * DAY)],
        "disabled-without-custom": [("le", -DAY, 80 * DAY)],
    }
    domains = []
    for label, certificates in mixes.items():
        domain = DomainFactory(
            name=f"{label}.example.net", letsencrypt_enabled=not label.startswith("disabled")
        )
        for source, start, end in certificates:
            kind = CertificateSource.LETSENCRYPT if source == "le" else CertificateSource.CUSTOM
            stored_certificate(pki, domain, kind, not_before=now + start, not_after=now + end)
        domains.append(domain)
    chosen = {}
    for domain in domains:
        by_rule = served_certificate_of(domain.pk, now)
        by_handshake = served_certificate(domain.name, now)
        assert (by_handshake and by_handshake.pk) == (by_rule and by_rule.pk), domain.name
        chosen[domain.name.split(".")[0]] = by_rule and by_rule.source
    assert chosen == {
        "letsencrypt-only": "letsencrypt",
        "two-letsencrypt": "letsencrypt",
        "custom-and-letsencrypt": "custom",
        "expired-custom": "letsencrypt",
        "not-yet-valid": None,
        "expired-only": None,
        "disabled-with-custom": "custom",
        "disabled-without-custom": None,
    }


# --- caching ------------------------------------------------------------------------------------------------


def test_if_none_match_with_the_served_fingerprint_gets_304_without_the_key(served, trusted):
    domain, _, row = served
    client = router_client()
    etag = f'"{row.fingerprint_sha256}"'
    response = fetch(client, HTTP_IF_NONE_MATCH=etag)
    assert response.status_code == 304
    assert response.content == b""
    assert response["ETag"] == etag
    # Once another certificate is served, the same question gets it in full.
    leaf, key = trusted.leaf([DOMAIN])
    install_custom_certificate(domain, trusted.chain_pem(leaf), key=key_pem(key))
    response = fetch(client, HTTP_IF_NONE_MATCH=etag)
    assert response.status_code == 200
    assert parts(response.content)[0][0] == leaf


def test_max_age_never_runs_past_the_certificates_expiry(pki, settings):
    settings.ROUTER_CACHE_SECONDS = 3600
    domain = DomainFactory(name=DOMAIN, status=DomainStatus.IN_USE)
    now = timezone.now()
    stored_certificate(pki, domain, not_before=now - DAY, not_after=now + datetime.timedelta(seconds=30))
    max_age = int(fetch(router_client())["Cache-Control"].removeprefix("private, max-age="))
    assert 25 <= max_age <= 30


# --- who may ask -----------------------------------------------------------------------------------------


def test_no_credentials_get_401_with_a_challenge_and_no_certificate(served):
    response = fetch(Client())
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="routers"'
    assert b"router token" in response.content
    assert b"CERTIFICATE" not in response.content


@pytest.mark.parametrize(
    "authorization",
    ["Bearer cwt_not-a-real-token-at-all-000000", "Bearer ", "Basic !!!not-base64", "Basic " + "Og=="],
)
def test_an_unknown_or_malformed_token_gets_401(served, authorization):
    response = Client(HTTP_AUTHORIZATION=authorization).get(URL, {"server_name": DOMAIN})
    assert response.status_code == 401
    assert response.content == b"Invalid or revoked token.\n"


def test_a_revoked_router_token_gets_401_at_once(served):
    token = create_router_token("edge-2")
    client = router_client(token)
    assert fetch(client).status_code == 200
    call_command("router_token", "revoke", token[:16], stdout=io.StringIO())
    assert fetch(client).status_code == 401


def test_a_customers_token_gets_403_even_for_its_own_domain(served):
    domain, _, _ = served
    _, token = create_token(domain.app.owner, "laptop")
    response = fetch(Client(HTTP_AUTHORIZATION=f"Bearer {token}"))
    assert response.status_code == 403
    assert b"not a router's token" in response.content


def test_a_superusers_token_gets_403_keys_go_to_routers_only(served):
    _, token = create_token(UserFactory(username="root", is_staff=True, is_superuser=True), "ops")
    assert fetch(Client(HTTP_AUTHORIZATION=f"Bearer {token}")).status_code == 403


def test_a_permission_taken_away_is_refused_once_the_cache_window_ends(served, monkeypatch):
    from django.contrib.auth.models import Permission

    client = router_client()
    assert fetch(client).status_code == 200
    user = get_user_model().objects.get(username="routers")
    user.user_permissions.remove(Permission.objects.get(codename="fetch_served_keys"))
    assert fetch(client).status_code == 200  # still within the window
    monkeypatch.setattr(routers, "PERMISSION_CACHE_SECONDS", 0.0)
    routers._permission_cache.clear()
    assert fetch(client).status_code == 403


def test_the_routers_user_cannot_sign_in_to_the_admin(served):
    create_router_token("edge-1")
    client = Client()
    assert not client.login(username="routers", password="")
    assert client.get("/admin/").status_code == 302


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        (None, b"server_name (the name the TLS client asked for) is missing"),
        ("", b"server_name is empty"),
        ("bücher.example", b"is not ASCII: SNI carries the A-label"),
        ("www example.com", b"is not a host name"),
        ("-bad.example.com", b"is not a host name"),
        ("a" * 64 + ".example.com", b"is not a host name"),
        (("a" * 60 + ".") * 5 + "com", b"is not a host name"),
        ("www.example.com/../admin", b"is not a host name"),
    ],
)
def test_a_missing_or_malformed_server_name_gets_400_naming_the_problem(served, query, problem):
    response = fetch(router_client(), query)
    assert response.status_code == 400
    assert problem in response.content


def test_only_get_is_allowed(served):
    assert router_client().post(URL, {"server_name": DOMAIN}).status_code == 405


def test_a_key_no_configured_key_opens_gets_503_naming_the_domain(served, settings):
    from cryptography.fernet import Fernet

    settings.KEY_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    response = fetch(router_client())
    assert response.status_code == 503
    assert b"www.example.com cannot be read" in response.content


def test_a_warm_question_costs_at_most_four_queries(served, django_assert_max_num_queries):
    client = router_client()
    fetch(client)  # records the token's last use
    with django_assert_max_num_queries(4):
        assert fetch(client).status_code == 200


# --- the command -------------------------------------------------------------------------------------------


def test_router_token_create_list_and_revoke(served):
    out = io.StringIO()
    call_command("router_token", "create", "--name", "edge-9", stdout=out)
    token = out.getvalue().strip()
    assert token.startswith("cwt_")
    assert fetch(router_client(token)).status_code == 200
    listing = io.StringIO()
    call_command("router_token", "list", stdout=listing)
    assert "edge-9" in listing.getvalue() and token not in listing.getvalue()
    with pytest.raises(CommandError, match="no active router token starts with cwt_nope"):
        call_command("router_token", "revoke", "cwt_nope", stdout=io.StringIO())
    call_command("router_token", "revoke", token[:16], stdout=io.StringIO())
    assert fetch(router_client(token)).status_code == 401


def test_revoking_a_customer_token_through_router_token_is_refused(served):
    domain, _, _ = served
    row, _ = create_token(domain.app.owner, "laptop")
    with pytest.raises(CommandError, match="no active router token"):
        call_command("router_token", "revoke", row.prefix, stdout=io.StringIO())
