"""A verifying TLS client for the router tests: what certificate a name is shown, and the answer."""

from __future__ import annotations

import socket
import ssl

from cryptography import x509


def shown(port: int, server_name: str | None, cadata: str | None) -> tuple[x509.Certificate, bytes]:
    """The certificate a TLS client asking for `server_name` (SNI; None sends none) on 127.0.0.1
    is shown, and the answer to `GET /`. With `cadata`, the chain and the name are verified against
    those roots; without, nothing is verified."""
    if cadata is None:
        context = ssl._create_unverified_context()  # noqa: S323 (the test only reads what it is shown)
    else:
        context = ssl.create_default_context(cadata=cadata)
        context.check_hostname = server_name is not None
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=server_name) as tls:
            certificate = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
            tls.sendall(f"GET / HTTP/1.1\r\nHost: {server_name}\r\nConnection: close\r\n\r\n".encode())
            answer = b""
            while chunk := tls.recv(4096):
                answer += chunk
    return certificate, answer


def fingerprint(certificate: x509.Certificate) -> str:
    """Its SHA-256, as Certwright stores it (`fingerprint_sha256`)."""
    from cryptography.hazmat.primitives import hashes

    return certificate.fingerprint(hashes.SHA256()).hex()
