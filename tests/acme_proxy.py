"""A small ACME proxy in front of Pebble that can answer newOrder with a real 429, as Let's Encrypt
does when a rate limit is hit (Pebble itself never does).

It listens on HTTPS with Pebble's own listener certificate (so the client trusts it as it trusts
Pebble) and forwards everything else to Pebble with the client's Host header, so Pebble writes the
proxy's own URLs into its directory, Location headers and expected JWS `url`s: the client cannot
tell the proxy from the CA.
"""

from __future__ import annotations

import http.client
import json
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class RateLimit:
    """The 429 to send instead of Pebble's answer to the next `times` newOrder requests."""

    detail: str
    retry_after: str
    times: int = 1


@dataclass
class ProxyState:
    upstream_host: str
    upstream_port: int
    context: ssl.SSLContext
    limits: list[RateLimit] = field(default_factory=list)
    new_orders_refused: int = 0
    new_orders_passed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args) -> None:
        pass

    def _upstream(
        self, method: str, body: bytes | None, path: str | None = None
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        state = self.server.state
        connection = http.client.HTTPSConnection(
            state.upstream_host, state.upstream_port, context=state.context, timeout=30
        )
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "content-length")}
        if body is not None:
            headers["Content-Length"] = str(len(body))
        connection.request(method, path or self.path, body=body, headers=headers)
        response = connection.getresponse()
        payload = response.read()
        connection.close()
        return response.status, response.getheaders(), payload

    def _reply(self, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in ("content-length", "connection", "transfer-encoding", "date", "server"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _limit_for_new_order(self) -> RateLimit | None:
        state = self.server.state
        with state.lock:
            if not state.limits:
                state.new_orders_passed += 1
                return None
            limit = state.limits[0]
            limit.times -= 1
            if limit.times <= 0:
                state.limits.pop(0)
            state.new_orders_refused += 1
            return limit

    def _handle(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else (b"" if method == "POST" else None)
        if method == "POST" and self.path.startswith("/order-plz"):
            limit = self._limit_for_new_order()
            if limit is not None:
                # A real 429 problem document, with a fresh nonce as Let's Encrypt sends one.
                _, nonce_headers, _ = self._upstream("HEAD", None, "/nonce-plz")
                problem = json.dumps(
                    {"type": "urn:ietf:params:acme:error:rateLimited", "detail": limit.detail, "status": 429}
                ).encode()
                headers = [
                    ("Content-Type", "application/problem+json"),
                    ("Retry-After", limit.retry_after),
                    *[(k, v) for k, v in nonce_headers if k.lower() in ("replay-nonce", "link")],
                ]
                self._reply(429, headers, problem)
                return
        status, headers, payload = self._upstream(method, body)
        self._reply(status, headers, payload)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_HEAD(self) -> None:
        status, headers, _ = self._upstream("HEAD", None)
        self._reply(status, headers, b"")

    def do_POST(self) -> None:
        self._handle("POST")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: ProxyState) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state


class AcmeProxy:
    """Runs the proxy in a thread; `directory_url` is what the client is given."""

    def __init__(
        self, upstream_host: str, upstream_port: int, context: ssl.SSLContext, cert: Path, key: Path
    ) -> None:
        self.state = ProxyState(upstream_host, upstream_port, context)
        self.server = _Server(self.state)
        listener = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        listener.load_cert_chain(cert, key)
        self.server.socket = listener.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def directory_url(self) -> str:
        return f"https://127.0.0.1:{self.server.server_address[1]}/dir"

    def refuse_new_orders(self, detail: str, retry_after: str, times: int = 1) -> None:
        with self.state.lock:
            self.state.limits.append(RateLimit(detail, retry_after, times))

    def __enter__(self) -> AcmeProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
