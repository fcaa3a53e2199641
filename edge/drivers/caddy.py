"""The Caddy driver: answers Caddy's `get_certificate http` manager on localhost from memory.

Caddy's config (Caddyfile):

    tls {
        get_certificate http http://127.0.0.1:PORT/certificate
    }

Caddy asks `GET /certificate?server_name=NAME` during a handshake (it caches nothing it gets this way,
so every handshake asks); the answer is 200 with the PEM (chain, then key) of the name's certificate
(the exact name, else the wildcard one label up) or 204 when the agent serves nothing for it. The PEMs
are held in memory as bytes (about 3 KB a name), so an answer costs a dictionary lookup.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from edge.drivers import DriverConfigError, DriverError, Served
from edge.names import lookup_order


def parse_listen(listen: str) -> tuple[str, int]:
    """HOST:PORT of --caddy-listen, checked."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise DriverConfigError(f"--caddy-listen must be HOST:PORT, e.g. 127.0.0.1:8765, not {listen[:60]!r}")
    return host.strip("[]"), int(port)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    # Headers and body are written apart on a kept-alive connection: with Nagle's algorithm the body
    # waited for Caddy's delayed ACK, about 40 ms per handshake (bench/edge.py measured it).
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path != "/certificate":
            self._answer(404, b"not found\n")
            return
        server_name = parse_qs(parts.query).get("server_name", [""])[0]
        pem = self.server.lookup(server_name)
        if pem is None:
            self._answer(204, b"")
        else:
            self._answer(200, pem, "application/x-pem-file")

    def _answer(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(status)
        if status != 204:
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per handshake would drown the agent's log


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, _Handler)
        self.pems: dict[str, bytes] = {}

    def lookup(self, server_name: str) -> bytes | None:
        pems = self.pems  # replaced whole by start(), mutated per name by apply(): both atomic in CPython
        for name in lookup_order(server_name):
            pem = pems.get(name)
            if pem is not None:
                return pem
        return None


class CaddyDriver:
    def __init__(self, host: str, port: int) -> None:
        try:
            self.server = _Server((host, port))
        except OSError as error:
            raise DriverError(f"cannot listen on {host}:{port}: {error.strerror}") from None
        self.address = self.server.server_address
        self.thread = threading.Thread(target=self.server.serve_forever, name="edge-caddy", daemon=True)
        self.thread.start()

    def start(self, served: Mapping[str, Served]) -> None:
        self.server.pems = {name: served[name].pem.encode() for name in served}

    def apply(self, name: str, served: Served | None) -> None:
        if served is None:
            self.server.pems.pop(name, None)
        else:
            self.server.pems[name] = served.pem.encode()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
