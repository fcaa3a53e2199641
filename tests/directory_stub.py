"""A stand-in for a CA's directory, for tests of what Certwright reads from it (profiles,
renewalInfo) without a CA: a small HTTP server in a thread answering one JSON document.

The `stub_directory` fixture (a plugin of tests/conftest.py, so any test can name it) points
ACME_DIRECTORY_URL at the stub for the test and empties the directory cache before and after.
Change `stub.document` to change what the CA offers, or set `stub.status` to make it fail;
`stub.requests` counts the fetches.
"""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from certificates.directory import forget_directories

LETS_ENCRYPT_PROFILES = {
    "classic": "The same profile you're accustomed to",
    "tlsserver": "https://letsencrypt.org/docs/profiles#tlsserver",
    "shortlived": "https://letsencrypt.org/docs/profiles#shortlived",
}


@dataclass
class StubDirectory:
    url: str = ""
    status: int = 200
    requests: int = 0
    document: dict = field(
        default_factory=lambda: {
            "newNonce": "https://ca.invalid/nonce",
            "newAccount": "https://ca.invalid/account",
            "newOrder": "https://ca.invalid/order",
            "renewalInfo": "https://ca.invalid/renewal-info",
            "meta": {"profiles": dict(LETS_ENCRYPT_PROFILES)},
        }
    )


def _handler(stub: StubDirectory) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            stub.requests += 1
            payload = json.dumps(stub.document).encode()
            self.send_response(stub.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format, *args):
            pass

    return Handler


@pytest.fixture
def stub_directory(settings):
    stub = StubDirectory()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(stub))
    stub.url = f"http://127.0.0.1:{server.server_address[1]}/directory"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings.ACME_DIRECTORY_URL = stub.url
    forget_directories()
    yield stub
    forget_directories()
    server.shutdown()
    server.server_close()


@pytest.fixture
def unreachable_directory(settings):
    """ACME_DIRECTORY_URL at a port nothing listens on (connection refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings.ACME_DIRECTORY_URL = f"http://127.0.0.1:{port}/directory"
    forget_directories()
    yield settings.ACME_DIRECTORY_URL
    forget_directories()
