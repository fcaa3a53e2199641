"""A small TLS router for `make run` and the tests: it terminates TLS for any name with the
certificate Certwright's routers' endpoint hands out, the way the platform's real routers do.

`python -m devstack.router --listen 127.0.0.1:8443 --endpoint http://127.0.0.1:8000/routers/v1/certificate`
with the token in CERTWRIGHT_ROUTER_TOKEN (never on the command line, where `ps` shows it).

On each handshake it picks the certificate by SNI: a cached one while its `max-age` runs, else it
asks the endpoint (with `If-None-Match`, so an unchanged certificate comes back as a 304 without
its key). A name Certwright serves nothing for (204) gets TLS alert `unrecognized_name`, as does a
client that sends no SNI; if the endpoint cannot be reached, the last certificate is served while
it is valid. It answers every request with a page naming the domain and the certificate (a real
router would proxy to the app instead). It is a reference, not a production router: in production
use Caddy (`get_certificate http`, see the README) or any router that can ask this endpoint.
"""

from __future__ import annotations

import argparse
import logging
import os
import socketserver
import ssl
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

logger = logging.getLogger("devstack.router")

# How long a "nothing served here" answer is kept, so that a client retrying an unknown name does
# not turn every handshake into a question.
NOTHING_SECONDS = 5.0


@dataclass
class Entry:
    context: ssl.SSLContext | None
    etag: str
    fresh_until: float
    not_after: float  # time.time() when the certificate ends; 0 when nothing is served
    description: str


class CertificateCache:
    """SSL contexts by server name, from the routers' endpoint."""

    def __init__(
        self, endpoint: str, token: str, timeout: float = 5.0, max_cache_seconds: float | None = None
    ) -> None:
        self.endpoint = endpoint
        self.token = token
        self.timeout = timeout
        # At most this long, whatever the endpoint's max-age says (0: revalidate on every handshake).
        self.max_cache_seconds = max_cache_seconds
        self.entries: dict[str, Entry] = {}
        self.lock = threading.Lock()
        self.fetches = 0
        self._key_dir = tempfile.mkdtemp(prefix="certwright-router-")  # mode 0700

    def lookup(self, name: str) -> Entry | None:
        with self.lock:
            entry = self.entries.get(name)
        if entry is not None and time.monotonic() < entry.fresh_until:
            return entry
        try:
            fetched = self._fetch(name, entry)
        except (urllib.error.URLError, OSError, ValueError, ssl.SSLError) as exc:
            # The endpoint is down or answered nonsense: keep serving what is still valid.
            logger.warning("cannot ask about %s: %s", name, exc)
            return entry if entry is not None and entry.not_after > time.time() else None
        with self.lock:
            self.entries[name] = fetched
        return fetched

    def _fetch(self, name: str, entry: Entry | None) -> Entry:
        query = urllib.parse.urlencode({"server_name": name})
        request = urllib.request.Request(f"{self.endpoint}?{query}")
        request.add_header("Authorization", f"Bearer {self.token}")
        if entry is not None and entry.etag:
            request.add_header("If-None-Match", entry.etag)
        self.fetches += 1
        try:
            response = urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            if exc.code == 304 and entry is not None:
                entry.fresh_until = time.monotonic() + self._max_age(exc.headers)
                logger.info("%s: unchanged (%s)", name, entry.description)
                return entry
            raise ValueError(f"the endpoint answered {exc.code}: {exc.read()[:200]!r}") from None
        with response:
            if response.status == 204:
                logger.info("%s: Certwright serves nothing for it", name)
                return Entry(None, "", time.monotonic() + NOTHING_SECONDS, 0, "nothing")
            body = response.read()
            headers = response.headers
        context = self._context(body)
        description = f"{headers['X-Certificate-Source']} {headers['X-Certificate-Fingerprint'][:16]}..."
        logger.info("%s: fetched %s, valid until %s", name, description, headers["X-Certificate-Not-After"])
        not_after = datetime.fromisoformat(headers["X-Certificate-Not-After"]).timestamp()
        fresh_until = time.monotonic() + self._max_age(headers)
        return Entry(context, headers["ETag"], fresh_until, not_after, description)

    def _max_age(self, headers) -> float:
        age = _max_age(headers)
        return age if self.max_cache_seconds is None else min(age, self.max_cache_seconds)

    def _context(self, pem: bytes) -> ssl.SSLContext:
        # load_cert_chain reads files only: write the bundle to a private file for the moment it
        # takes, then remove it.
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        fd, path = tempfile.mkstemp(dir=self._key_dir, suffix=".pem")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(pem)
            context.load_cert_chain(path)
        finally:
            Path(path).unlink(missing_ok=True)
        return context


def _max_age(headers) -> float:
    for part in (headers.get("Cache-Control") or "").split(","):
        name, _, value = part.strip().partition("=")
        if name == "max-age" and value.isdigit():
            return float(value)
    return 0.0


def make_server(listen: tuple[str, int], cache: CertificateCache) -> socketserver.ThreadingTCPServer:
    base = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)

    def choose(sock: ssl.SSLObject, server_name: str | None, _context) -> int | None:
        entry = cache.lookup(server_name.lower()) if server_name else None
        if entry is None or entry.context is None:
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        sock.context = entry.context
        sock.certwright = (server_name.lower(), entry)  # type: ignore[attr-defined]
        return None

    base.sni_callback = choose

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.request.settimeout(10)
            try:
                tls = base.wrap_socket(self.request, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                logger.info("handshake from %s failed: %s", self.client_address[0], exc)
                return
            with tls:
                try:
                    head = b""
                    while b"\r\n\r\n" not in head and len(head) < 16384:
                        chunk = tls.recv(4096)
                        if not chunk:
                            return
                        head += chunk
                    name, entry = getattr(tls, "certwright", ("?", None))
                    page = (
                        f"Hello from {name}: served over TLS by Certwright's demo router with the "
                        f"{entry.description if entry else '?'} certificate.\n"
                    ).encode()
                    tls.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
                        + f"Content-Length: {len(page)}\r\nConnection: close\r\n\r\n".encode()
                        + page
                    )
                except (ssl.SSLError, OSError):
                    return

    class Server(socketserver.ThreadingTCPServer):
        allow_reuse_address = True
        daemon_threads = True

    return Server(listen, Handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:8443", help="host:port to accept TLS on")
    parser.add_argument("--endpoint", required=True, help="the routers' endpoint's URL")
    parser.add_argument(
        "--max-cache-seconds", type=float, help="keep a certificate at most this long (default: its max-age)"
    )
    args = parser.parse_args(argv)
    token = os.environ.get("CERTWRIGHT_ROUTER_TOKEN", "")
    if not token:
        parser.error("set CERTWRIGHT_ROUTER_TOKEN to a router token (manage.py router_token create)")
    host, _, port = args.listen.rpartition(":")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stdout)
    server = make_server(
        (host, int(port)), CertificateCache(args.endpoint, token, max_cache_seconds=args.max_cache_seconds)
    )
    logger.info("listening on %s, certificates from %s", args.listen, args.endpoint)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
