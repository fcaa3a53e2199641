"""Real TLS through a router fed by the routers' endpoint: a certificate Pebble issued, then a
customer's upload, then the Let's Encrypt one again, each seen by a TLS client that verifies the
chain and the name, with the web app under gunicorn answering the router."""

from __future__ import annotations

import os
import socket
import ssl
import threading
import uuid

import pytest
from cryptography.hazmat.primitives import serialization

from api.routers import create_router_token
from devstack.router import CertificateCache, make_server
from domains.custom_certificates import install_custom_certificate, remove_custom_certificate
from tests.integration.polling import issued
from tests.integration.tls import fingerprint, shown
from tests.pki import key_pem

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _endpoint() -> str:
    return f"http://127.0.0.1:{os.environ['CERTWRIGHT_TEST_HTTP01_PORT']}/routers/v1/certificate"


@pytest.fixture
def router():
    """The demo router in this process, on a free port, revalidating on every handshake."""
    cache = CertificateCache(_endpoint(), create_router_token("tls-test"), max_cache_seconds=0)
    server = make_server(("127.0.0.1", 0), cache)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], cache
    server.shutdown()
    server.server_close()


def _get(port: int, server_name: str | None, cadata: str) -> tuple[str, bytes]:
    """(SHA-256 of the certificate a verifying client is shown, the HTTP answer)."""
    certificate, answer = shown(port, server_name, cadata)
    return fingerprint(certificate), answer


def test_tls_clients_get_the_issued_then_the_uploaded_then_the_issued_certificate_again(
    issuance_stack, challtestsrv, app, router, trusted
):
    port, cache = router
    name = f"www.tls-{uuid.uuid4().hex[:10]}.com"
    domain, certificate = issued(challtestsrv, app, name)
    pebble_root = issuance_stack.root_pem().decode()

    seen, answer = _get(port, name, pebble_root)
    assert seen == certificate.fingerprint_sha256
    assert answer.startswith(b"HTTP/1.1 200 OK")
    assert f"Hello from {name}".encode() in answer
    # The next handshake revalidates (max_cache_seconds=0) and gets a 304: the same context.
    context = cache.entries[name].context
    fetches = cache.fetches
    assert _get(port, name.upper(), pebble_root)[0] == certificate.fingerprint_sha256
    assert cache.fetches == fetches + 1 and cache.entries[name].context is context

    leaf, key = trusted.leaf([name])
    custom = install_custom_certificate(domain, trusted.chain_pem(leaf), key=key_pem(key))
    test_root = trusted.root.public_bytes(serialization.Encoding.PEM).decode()
    assert _get(port, name, test_root)[0] == custom.fingerprint_sha256
    # A client trusting only Pebble's root now refuses: it is shown the customer's certificate.
    with pytest.raises(ssl.SSLCertVerificationError):
        _get(port, name, pebble_root)

    remove_custom_certificate(domain)
    assert _get(port, name, pebble_root)[0] == certificate.fingerprint_sha256


def test_a_name_certwright_does_not_serve_and_a_client_without_sni_get_unrecognized_name(
    issuance_stack, router
):
    port, _ = router
    root = issuance_stack.root_pem().decode()
    for server_name in (f"nothing-{uuid.uuid4().hex[:8]}.example.org", None):
        with pytest.raises(ssl.SSLError, match=r"UNRECOGNIZED_NAME|unrecognized name"):
            _get(port, server_name, root)


def test_the_router_keeps_serving_a_valid_certificate_while_the_endpoint_is_down(
    issuance_stack, challtestsrv, app, router
):
    port, cache = router
    name = f"www.tls-{uuid.uuid4().hex[:10]}.com"
    _, certificate = issued(challtestsrv, app, name)
    root = issuance_stack.root_pem().decode()
    assert _get(port, name, root)[0] == certificate.fingerprint_sha256
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        cache.endpoint = f"http://127.0.0.1:{closed.getsockname()[1]}/routers/v1/certificate"
        assert _get(port, name, root)[0] == certificate.fingerprint_sha256
