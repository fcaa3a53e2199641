"""A test ACME proxy in front of Pebble 2.4 that adds what Pebble lacks and Let's Encrypt has: ACME
Renewal Information (RFC 9773: the directory's `renewalInfo`, windows set by the test, `replaces`
checked as Boulder checks it), certificate profiles (`meta.profiles`, each mapped to the
`notBefore`/`notAfter` Pebble honours), paused identifiers and rate-limited newOrders, with Let's
Encrypt's problem documents.

Everything else is Pebble's: the proxy listens on HTTPS with Pebble's listener certificate and
forwards with the client's Host header, so Pebble writes the proxy's URLs everywhere and a client
cannot tell the two apart. renewalInfo is answered by the proxy itself, on an asyncio loop in a
thread with HTTP/1.1 keep-alive (bench/ari.py sends it 100,000 GETs); the rest goes to Pebble over
keep-alive httpx clients on the same loop.

In process (the tests): `with AcmeProxy.in_front_of(pebble_stack) as proxy:` and the attributes and
methods below. Out of process (the benchmark): `python -m devstack.acme_proxy --upstream HOST:PORT
--ca-file F --cert F --key F` prints its directory URL and serves a JSON control API under
`/_proxy/` (see `_Control`); `ProxyControl` is its client.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import datetime
import email.utils
import importlib
import json
import logging
import re
import signal
import ssl
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import josepy as jose
from acme import jws as acme_jws
from cryptography import x509

from certificates.facts import renewal_info_id

if TYPE_CHECKING:
    from devstack.pebble import PebbleStack

# httpx logs every forwarded request at INFO: thousands of lines that say nothing in a test's output.
logging.getLogger("httpx").setLevel(logging.WARNING)

ERROR = "urn:ietf:params:acme:error:"
DEFAULT_PROFILES: dict[str, datetime.timedelta] = {
    "classic": datetime.timedelta(days=90),
    "tlsserver": datetime.timedelta(days=45),
    "shortlived": datetime.timedelta(hours=160),
}
# Boulder's Retry-After on renewalInfo: six hours.
DEFAULT_RENEWAL_INFO_RETRY_AFTER = 21600
RENEWAL_INFO_PATH = "/renewal-info"
CONTROL_PATH = "/_proxy/"
# Pebble 2.4's paths.
DIRECTORY_PATH = "/dir"
NEW_ORDER_PATH = "/order-plz"
NEW_NONCE_PATH = "/nonce-plz"
CERTIFICATE_PATH = "/certZ/"
FINALIZE_PATH = "/finalize-order/"
ORDER_PATH = "/my-order/"

# Caps on what a request may make the proxy hold: a request head, a body (ACME bodies are a few KiB),
# a renewalInfo certID (an AKI of at most 64 octets and a serial of at most 21).
MAX_HEAD_BYTES = 16 * 1024
MAX_BODY_BYTES = 1024 * 1024
MAX_CERT_ID_CHARS = 200
UPSTREAM_TIMEOUT_SECONDS = 30.0
UPSTREAM_CLIENTS = 16
UPSTREAM_CONNECTIONS_PER_CLIENT = 4

_B64URL = re.compile(r"[A-Za-z0-9_-]+")
# Headers that belong to one hop, never forwarded; and the ones the proxy writes itself.
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"}
)
_OWN_RESPONSE_HEADERS = _HOP_BY_HOP | {"content-length", "date", "server", "content-encoding"}

AccountKey = Callable[[str], jose.JWK]


def rfc3339(moment: datetime.datetime) -> str:
    """`moment` in UTC, to the second, as RFC 3339 with a Z."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> datetime.datetime:
    """An RFC 3339 timestamp with its offset (or Z); ValueError otherwise."""
    moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset")
    return moment


def default_window(
    not_before: datetime.datetime, not_after: datetime.datetime
) -> tuple[datetime.datetime, datetime.datetime]:
    """The window Let's Encrypt suggests for a certificate nobody moved: from two thirds of its
    lifetime (half under 10 days), for a ninth of its lifetime."""
    lifetime = not_after - not_before
    start = not_before + (lifetime / 2 if lifetime < datetime.timedelta(days=10) else lifetime * 2 / 3)
    return start, start + lifetime / 9


def well_formed_cert_id(cert_id: str) -> bool:
    """Whether `cert_id` has RFC 9773's shape: two unpadded base64url parts, a dot between."""
    if len(cert_id) > MAX_CERT_ID_CHARS:
        return False
    key_id, dot, serial = cert_id.partition(".")
    if not dot:
        return False
    for part in (key_id, serial):
        # A length of 1 mod 4 is no whole number of octets.
        if not _B64URL.fullmatch(part) or len(part) % 4 == 1:
            return False
    return True


def cert_id_serial(cert_id: str) -> str:
    """The serial a well-formed certID names, as Boulder prints serials (36 hexadecimal digits)."""
    octets = _b64decode(cert_id.partition(".")[2])
    return format(int.from_bytes(octets, "big"), "036x")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class SeenCertificate:
    """A certificate the proxy saw a client download."""

    cert_id: str
    account: str  # the kid of the account that downloaded it
    not_before: datetime.datetime
    not_after: datetime.datetime
    serial: str  # hexadecimal
    names: list[str]
    replaced_by: str = ""  # the URL of the finalized order that named it in `replaces`
    revoked: bool = False
    seen_at: float = 0.0  # time.time() when the proxy saw it downloaded


@dataclass
class Window:
    start: datetime.datetime
    end: datetime.datetime
    explanation_url: str | None = None


@dataclass
class RateLimit:
    """The 429 to send instead of Pebble's answer to the next `times` newOrder requests."""

    detail: str
    retry_after: str
    times: int = 1
    exempts_renewals: bool = True


@dataclass
class _Failure:
    status: int
    times: int
    retry_after: int | None = None


@dataclass
class Request:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes
    keep_alive: bool

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


class _Refusal(Exception):
    """A problem document the proxy answers a newOrder with instead of forwarding it."""

    def __init__(self, status: int, kind: str, detail: str, headers: list[tuple[str, str]] | None = None):
        super().__init__(detail)
        self.status, self.kind, self.detail, self.headers = status, kind, detail, headers or []


def _json(status: int, document: Any, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(
        status, [("Content-Type", "application/json"), *(headers or [])], json.dumps(document).encode()
    )


def problem(status: int, kind: str, detail: str, headers: list[tuple[str, str]] | None = None) -> Response:
    """An ACME problem document (RFC 8555 section 6.7) of `kind` (e.g. "malformed")."""
    document = {"type": ERROR + kind, "detail": detail, "status": status}
    return Response(
        status,
        [("Content-Type", "application/problem+json"), *(headers or [])],
        json.dumps(document).encode(),
    )


class AcmeProxy:
    """The proxy, its loop in a thread; what tests set and read. Safe to use from any thread."""

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        context: ssl.SSLContext,
        cert: Path,
        key: Path,
        *,
        account_key: AccountKey | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.upstream = f"https://{upstream_host}:{upstream_port}"
        self.upstream_context = context
        self.listener_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.listener_context.load_cert_chain(cert, key)
        self.account_key = account_key
        self.host, self.port = host, port
        self._lock = threading.Lock()
        # Switches and settings, read on every request.
        self.ari_enabled = True
        self.profiles: dict[str, datetime.timedelta] = dict(DEFAULT_PROFILES)
        self.retry_after = DEFAULT_RENEWAL_INFO_RETRY_AFTER
        # What the tests set.
        self._windows: dict[str, Window] = {}
        self._all_windows: Window | None = None
        self._all_windows_at = 0.0
        self._unknown_window: Window | None = None
        self._renewal_info_failures: list[_Failure] = []
        self._limits: list[RateLimit] = []
        self._paused: dict[tuple[str, str | None], str] = {}
        # What the proxy saw.
        self.certificates: dict[str, SeenCertificate] = {}
        self.orders: list[dict[str, Any]] = []
        self._orders_by_path: dict[str, dict[str, Any]] = {}
        self._orders_by_certificate: dict[str, dict[str, Any]] = {}
        self._new_orders: Counter[str] = Counter()
        self._renewal_info_by_cert: Counter[str] = Counter()
        self.renewal_info_served = 0
        self.connections_accepted = 0
        self.new_orders_refused = 0
        self.new_orders_passed = 0
        self._keys: dict[str, jose.JWK] = {}
        # The machinery.
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="acme-proxy", daemon=True)
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="acme-proxy-key")
        self._server: asyncio.AbstractServer | None = None
        self._clients: list[httpx.AsyncClient] = []
        self._next_client = 0
        self._connections: set[_Connection] = set()
        self._date = ("", 0.0)
        self.control = _Control(self)

    @classmethod
    def in_front_of(cls, pebble: PebbleStack, **kwargs: Any) -> AcmeProxy:
        """A proxy in front of a running PebbleStack, with its listener certificate."""
        return cls(
            "127.0.0.1",
            pebble.acme_port,
            pebble.ssl_context(),
            pebble.state_dir / "tls" / "cert.pem",
            pebble.state_dir / "tls" / "key.pem",
            **kwargs,
        )

    # Life cycle.

    def start(self) -> AcmeProxy:
        """Starts listening; returns at once, serving from a thread."""
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        except BaseException:
            # A port in use, an unreadable certificate: leave no thread or client behind.
            self.stop()
            raise
        return self

    async def _start(self) -> None:
        # Several small clients rather than one with a large pool: httpx's pool costs more CPU per
        # request the more connections it holds (encode/httpx#3215; measured here, 64 requests at a
        # time: 4 ms of the proxy's CPU a forwarded request with one client of 64 connections, 2 ms
        # with 16 clients of 4).
        self._clients = [
            httpx.AsyncClient(
                base_url=self.upstream,
                verify=self.upstream_context,
                timeout=UPSTREAM_TIMEOUT_SECONDS,
                limits=httpx.Limits(max_connections=UPSTREAM_CONNECTIONS_PER_CLIENT),
            )
            for _ in range(UPSTREAM_CLIENTS)
        ]
        self._server = await self._loop.create_server(
            lambda: _Connection(self), self.host, self.port, ssl=self.listener_context, backlog=1024
        )
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        """Closes every connection and stops the loop."""
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for connection in list(self._connections):
            connection.abort()
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for upstream in self._clients:
            await upstream.aclose()

    def __enter__(self) -> AcmeProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def directory_url(self) -> str:
        return f"{self.base_url}{DIRECTORY_PATH}"

    @property
    def renewal_info_url(self) -> str:
        return f"{self.base_url}{RENEWAL_INFO_PATH}"

    # What tests set.

    def set_window(
        self,
        cert_id: str,
        start: datetime.datetime,
        end: datetime.datetime,
        explanation_url: str | None = None,
    ) -> None:
        """renewalInfo of `cert_id` answers this window from now on (over any other)."""
        with self._lock:
            self._windows[cert_id] = Window(start, end, explanation_url)

    def move_all_windows(
        self, start: datetime.datetime, end: datetime.datetime, explanation_url: str | None = None
    ) -> None:
        """Every certificate known by now without a window of its own answers this one (the
        mass-revocation drill). Certificates issued later (the replacements) keep their default
        windows, as Let's Encrypt moved the windows of the certificates that existed: otherwise
        each replacement would be replaced again, without end."""
        with self._lock:
            self._all_windows = Window(start, end, explanation_url)
            self._all_windows_at = time.time()

    def reset_windows(self) -> None:
        """Forgets every window set: certificates answer their default windows again."""
        with self._lock:
            self._windows.clear()
            self._all_windows = None

    def answer_unknown(self, start: datetime.datetime | None, end: datetime.datetime | None = None) -> None:
        """Well-formed certIDs the proxy never saw get this window instead of a 404 (synthetic load);
        None restores the 404."""
        with self._lock:
            self._unknown_window = None if start is None or end is None else Window(start, end)

    def fail_renewal_info(self, status: int = 500, times: int = 1, retry_after: int | None = None) -> None:
        """The next `times` renewalInfo requests get `status` with a problem document (and a
        Retry-After header when `retry_after` is given)."""
        with self._lock:
            self._renewal_info_failures.append(_Failure(status, times, retry_after))

    def refuse_new_orders(
        self, detail: str, retry_after: str, times: int = 1, exempt_renewals: bool = True
    ) -> None:
        """The next `times` newOrders get Let's Encrypt's 429 with `detail` and `Retry-After`. As at
        Let's Encrypt, an order that `replaces` a certificate whose window has opened passes (and
        leaves the refusal for the next order) unless `exempt_renewals` is False."""
        with self._lock:
            self._limits.append(RateLimit(detail, retry_after, times, exempt_renewals))

    def pause(self, identifier: str, unpause_url: str, account: str | None = None) -> None:
        """newOrders naming `identifier` from `account` (a kid; None: any account) get Let's
        Encrypt's paused 429 naming `unpause_url`, until `unpause`."""
        with self._lock:
            self._paused[(identifier.lower(), account)] = unpause_url

    def unpause(self, identifier: str, account: str | None = None) -> None:
        """Lifts `pause` (of every account when `account` is None)."""
        with self._lock:
            for key in [key for key in self._paused if key[0] == identifier.lower()]:
                if account is None or key[1] == account:
                    del self._paused[key]

    # What tests read.

    def new_orders_for(self, name: str) -> int:
        """How many newOrders named `name`, whatever their fate."""
        with self._lock:
            return self._new_orders[name.lower()]

    def renewal_info_served_for(self, cert_id: str) -> int:
        """How many renewalInfo requests named `cert_id`, whatever their answer."""
        with self._lock:
            return self._renewal_info_by_cert[cert_id]

    def certificate(self, cert_id: str) -> SeenCertificate | None:
        """What the proxy saw of the certificate `cert_id` (None: never downloaded through it)."""
        with self._lock:
            return self.certificates.get(cert_id)

    def window_for(self, cert_id: str) -> Window | None:
        """The window renewalInfo answers for `cert_id` now; None for a certificate it does not know."""
        with self._lock:
            return self._window_locked(cert_id)

    def _window_locked(self, cert_id: str) -> Window | None:
        window = self._windows.get(cert_id)
        if window is not None:
            return window
        seen = self.certificates.get(cert_id)
        if seen is None:
            return self._unknown_window
        if seen.revoked:
            # Boulder's answer for a revoked certificate: renew now (a window that ended already).
            hour_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)
            return Window(hour_ago, hour_ago + datetime.timedelta(minutes=30))
        if self._all_windows is not None and seen.seen_at <= self._all_windows_at:
            return self._all_windows
        return Window(*default_window(seen.not_before, seen.not_after))

    # Serving: every method below runs on the loop.

    def date_header(self) -> str:
        """The Date header's value, formatted once a second rather than on every response."""
        now = time.time()
        text, at = self._date
        if now - at >= 1:
            text = email.utils.formatdate(now, usegmt=True)
            self._date = (text, now)
        return text

    def dispatch(self, request: Request) -> Response | Coroutine[Any, Any, Response]:
        """The response, or a coroutine making it (requests that go to Pebble)."""
        path = request.path
        if path.startswith(RENEWAL_INFO_PATH) and (
            len(path) == len(RENEWAL_INFO_PATH) or path[len(RENEWAL_INFO_PATH)] == "/"
        ):
            return self._renewal_info(request)
        if path.startswith(CONTROL_PATH):
            return self.control.handle(request)
        if request.method == "POST" and path == NEW_ORDER_PATH:
            return self._new_order(request)
        return self._forward_and_watch(request)

    def _renewal_info(self, request: Request) -> Response:
        cert_id = request.path[len(RENEWAL_INFO_PATH) + 1 :]
        with self._lock:
            self.renewal_info_served += 1
            if len(cert_id) <= MAX_CERT_ID_CHARS:
                self._renewal_info_by_cert[cert_id] += 1
            if not self.ari_enabled:
                return problem(404, "malformed", "this CA does not offer renewalInfo")
            if request.method not in ("GET", "HEAD"):
                return problem(405, "malformed", "renewalInfo takes GET", [("Allow", "GET")])
            if self._renewal_info_failures:
                failure = self._renewal_info_failures[0]
                failure.times -= 1
                if failure.times <= 0:
                    self._renewal_info_failures.pop(0)
                kind = "rateLimited" if failure.status == 429 else "serverInternal"
                headers = [] if failure.retry_after is None else [("Retry-After", str(failure.retry_after))]
                return problem(failure.status, kind, "renewalInfo failed, as the test asked", headers)
            if not well_formed_cert_id(cert_id):
                return problem(
                    400,
                    "malformed",
                    f"{cert_id[:MAX_CERT_ID_CHARS]!r} is not a certificate identifier "
                    "(base64url key identifier, a dot, base64url serial)",
                )
            window = self._window_locked(cert_id)
            retry_after = self.retry_after
        if window is None:
            return problem(404, "malformed", "Requested certificate was not found")
        document: dict[str, Any] = {
            "suggestedWindow": {"start": rfc3339(window.start), "end": rfc3339(window.end)}
        }
        if window.explanation_url:
            document["explanationURL"] = window.explanation_url
        return _json(200, document, [("Retry-After", str(retry_after))])

    async def _upstream(
        self, method: str, path: str, headers: list[tuple[str, str]], body: bytes
    ) -> Response:
        self._next_client = (self._next_client + 1) % len(self._clients)
        upstream = self._clients[self._next_client]
        forwarded = [
            (k, v) for k, v in headers if k.lower() not in _HOP_BY_HOP | {"content-length", "accept-encoding"}
        ]
        # The proxy reads bodies: never let Pebble compress them.
        forwarded.append(("Accept-Encoding", "identity"))
        try:
            answer = await upstream.request(
                method, path, headers=forwarded, content=body if method not in ("GET", "HEAD") else None
            )
        except httpx.HTTPError as exc:
            return problem(502, "serverInternal", f"the proxy could not reach Pebble: {exc!r}")
        kept = [(k, v) for k, v in answer.headers.multi_items() if k.lower() not in _OWN_RESPONSE_HEADERS]
        if method == "HEAD" and "content-length" in answer.headers:
            kept.append(("Content-Length", answer.headers["content-length"]))
        return Response(answer.status_code, kept, answer.content)

    async def _fresh_nonce(self, request: Request) -> list[tuple[str, str]]:
        host = [(k, v) for k, v in request.headers if k.lower() == "host"]
        answer = await self._upstream("HEAD", NEW_NONCE_PATH, host, b"")
        return [(k, v) for k, v in answer.headers if k.lower() in ("replay-nonce", "link")]

    async def _forward_and_watch(self, request: Request) -> Response:
        response = await self._upstream(request.method, request.target, request.headers, request.body)
        path = request.path
        if request.method == "GET" and path == DIRECTORY_PATH and response.status == 200:
            return self._extend_directory(request, response)
        if request.method != "POST" or response.status != 200:
            return response
        if path.startswith(CERTIFICATE_PATH):
            self._saw_certificate(request, response)
        elif path.startswith(FINALIZE_PATH) or path.startswith(ORDER_PATH):
            return self._reflect_order(path, response)
        elif path == "/revoke-cert":
            self._saw_revocation(request)
        return response

    def _extend_directory(self, request: Request, response: Response) -> Response:
        try:
            directory = json.loads(response.body)
        except ValueError:
            return response
        host = request.header("host") or f"{self.host}:{self.port}"
        with self._lock:
            if self.ari_enabled:
                directory["renewalInfo"] = f"https://{host}{RENEWAL_INFO_PATH}"
            if self.profiles:
                meta = directory.setdefault("meta", {})
                meta["profiles"] = {name: _describe(life) for name, life in self.profiles.items()}
        headers = [(k, v) for k, v in response.headers if k.lower() != "content-type"]
        return _json(200, directory, headers)

    def _saw_certificate(self, request: Request, response: Response) -> None:
        try:
            leaf = x509.load_pem_x509_certificates(response.body)[0]
            cert_id = renewal_info_id(leaf)
            protected = _jws_parts(request.body)[0]
        except (ValueError, IndexError, KeyError, TypeError):
            return
        if not cert_id:
            return
        try:
            names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            dns_names = [name.lower() for name in names.get_values_for_type(x509.DNSName)]
        except (x509.ExtensionNotFound, ValueError):
            dns_names = []
        with self._lock:
            order = self._orders_by_certificate.get(request.path)
            if order is not None:
                order["cert_id"] = cert_id
            if cert_id not in self.certificates:
                self.certificates[cert_id] = SeenCertificate(
                    cert_id=cert_id,
                    account=str(protected.get("kid", "")),
                    not_before=leaf.not_valid_before_utc,
                    not_after=leaf.not_valid_after_utc,
                    serial=format(leaf.serial_number, "x"),
                    names=dns_names,
                    seen_at=time.time(),
                )

    def _saw_revocation(self, request: Request) -> None:
        try:
            payload = _jws_parts(request.body)[1]
            leaf = x509.load_der_x509_certificate(_b64decode(payload["certificate"]))
            cert_id = renewal_info_id(leaf)
        except (ValueError, KeyError, TypeError, binascii.Error):
            return
        with self._lock:
            seen = self.certificates.get(cert_id)
            if seen is not None:
                seen.revoked = True

    def _reflect_order(self, path: str, response: Response) -> Response:
        """RFC 9773 section 5: the order says what it replaces (and its profile), in every answer;
        a finalized order marks the certificate it replaces as replaced."""
        with self._lock:
            order = self._orders_by_path.get(path.replace(FINALIZE_PATH, ORDER_PATH, 1))
            if order is None:
                return response
            if path.startswith(FINALIZE_PATH) and order["replaces"]:
                seen = self.certificates.get(order["replaces"])
                if seen is not None and not seen.replaced_by:
                    seen.replaced_by = order["url"]
            certificate_url = _json_field(response.body, "certificate")
            if certificate_url:
                # Its download will say which certificate this order issued.
                self._orders_by_certificate[httpx.URL(certificate_url).path] = order
        return _with_order_fields(response, order)

    async def _new_order(self, request: Request) -> Response:
        try:
            protected, payload = _jws_parts(request.body)
            identifiers = [str(item["value"]).lower() for item in payload.get("identifiers", [])]
            replaces = payload.get("replaces") or ""
            profile = payload.get("profile") or ""
            if not isinstance(replaces, str) or not isinstance(profile, str):
                raise TypeError("replaces and profile are strings")
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
            # Not a newOrder the proxy can read: Pebble says what is wrong with it.
            return await self._upstream(request.method, request.target, request.headers, request.body)
        kid = str(protected.get("kid", ""))
        try:
            lifetime = self._check_new_order(kid, identifiers, replaces, profile)
        except _Refusal as refusal:
            headers = [*refusal.headers, *await self._fresh_nonce(request)]
            return problem(refusal.status, refusal.kind, refusal.detail, headers)
        body = request.body
        if lifetime is not None:
            try:
                body = await self._resigned(protected, payload, lifetime)
            except _Refusal as refusal:
                return problem(refusal.status, refusal.kind, refusal.detail, await self._fresh_nonce(request))
        response = await self._upstream(request.method, request.target, request.headers, body)
        if response.status != 201:
            return response
        try:
            created = json.loads(response.body)
        except ValueError:
            created = {}
        location = next((v for k, v in response.headers if k.lower() == "location"), "")
        order = {
            "kid": kid,
            "identifiers": identifiers,
            "replaces": replaces,
            "profile": profile,
            "url": location,
            "finalize": created.get("finalize", "") if isinstance(created, dict) else "",
            "cert_id": "",  # of the certificate it issued, once downloaded
        }
        with self._lock:
            self.orders.append(order)
            self._orders_by_path[httpx.URL(location).path if location else ""] = order
        return _with_order_fields(response, order)

    def _check_new_order(
        self, kid: str, identifiers: list[str], replaces: str, profile: str
    ) -> datetime.timedelta | None:
        """Boulder's checks, in Boulder's order (paused, replaces, profile, limits); the profile's
        lifetime when the order names one."""
        with self._lock:
            self._new_orders.update(set(identifiers))
            paused = [
                (name, self._paused.get((name, kid)) or self._paused.get((name, None)))
                for name in identifiers
            ]
            paused = [(name, url) for name, url in paused if url]
            if paused:
                self.new_orders_refused += 1
                raise _Refusal(
                    429,
                    "rateLimited",
                    "Your account is temporarily prevented from requesting certificates for "
                    f"{', '.join(name for name, _ in paused)} and possibly others. "
                    f"Please visit: {paused[0][1]}",
                )
            exempt = False
            if replaces:
                self._check_replaces(kid, identifiers, replaces)
                # Let's Encrypt exempts a renewal that names what it replaces, once its window has
                # opened, from every limit (a window moved into the past included: the drill).
                window = self._window_locked(replaces)
                exempt = window is not None and window.start <= datetime.datetime.now(datetime.UTC)
            lifetime = None
            if profile:
                lifetime = self.profiles.get(profile)
                if lifetime is None:
                    offered = ", ".join(sorted(self.profiles)) or "none"
                    raise _Refusal(
                        400,
                        "invalidProfile",
                        f"profile name {profile!r} not recognized (this CA offers: {offered})",
                    )
            if self._limits and not (exempt and self._limits[0].exempts_renewals):
                limit = self._limits[0]
                limit.times -= 1
                if limit.times <= 0:
                    self._limits.pop(0)
                self.new_orders_refused += 1
                raise _Refusal(429, "rateLimited", limit.detail, [("Retry-After", limit.retry_after)])
            self.new_orders_passed += 1
            return lifetime

    def _check_replaces(self, kid: str, identifiers: list[str], replaces: str) -> None:
        prefix = "Could not validate ARI 'replaces' field :: "
        if not well_formed_cert_id(replaces):
            raise _Refusal(400, "malformed", prefix + "Invalid path")
        seen = self.certificates.get(replaces)
        if seen is None:
            raise _Refusal(
                404,
                "malformed",
                prefix + "request included `replaces` field, but no current certificate with serial "
                f'"{cert_id_serial(replaces)}" exists',
            )
        if seen.replaced_by:
            raise _Refusal(
                409,
                "alreadyReplaced",
                prefix
                + f'cannot indicate an order replaces certificate with serial "{int(seen.serial, 16):036x}", '
                "which already has a replacement order",
            )
        if seen.account != kid:
            raise _Refusal(
                403,
                "unauthorized",
                prefix + "requester account did not request the certificate being replaced by this order",
            )
        if not any(_covers(seen.names, name) for name in identifiers):
            raise _Refusal(
                400,
                "malformed",
                prefix
                + "identifiers in this order do not match any identifiers in the certificate being replaced",
            )

    async def _resigned(self, protected: dict, payload: dict, lifetime: datetime.timedelta) -> bytes:
        """The newOrder with the profile's validity as `notBefore`/`notAfter` (which Pebble 2.4
        honours), signed again with the account's key."""
        kid = str(protected.get("kid", ""))
        if self.account_key is None:
            raise _Refusal(
                500,
                "serverInternal",
                "the test ACME proxy needs an account_key callback to apply a profile "
                "(it re-signs the newOrder)",
            )
        key = self._keys.get(kid)
        if key is None:
            try:
                key = await self._loop.run_in_executor(self._executor, self.account_key, kid)
            except Exception as exc:  # the callback is the test's: say what it raised
                raise _Refusal(
                    500, "serverInternal", f"the proxy has no key for account {kid}: {exc!r}"
                ) from exc
            if key is None:
                raise _Refusal(500, "serverInternal", f"the proxy has no key for account {kid}")
            self._keys[kid] = key
        try:
            alg = jose.JWASignature.from_json(protected["alg"])
            nonce = jose.decode_b64jose(protected["nonce"])
        except (KeyError, jose.DeserializationError) as exc:
            raise _Refusal(400, "malformed", f"the JWS has no usable alg and nonce: {exc}") from exc
        not_before = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        edited = {**payload, "notBefore": rfc3339(not_before), "notAfter": rfc3339(not_before + lifetime)}
        signed = acme_jws.JWS.sign(
            json.dumps(edited).encode(),
            key=key,
            alg=alg,
            nonce=nonce,
            url=protected.get("url"),
            kid=kid or None,
        )
        return signed.json_dumps().encode()


def _describe(lifetime: datetime.timedelta) -> str:
    hours = lifetime.total_seconds() / 3600
    if hours % 24 == 0:
        return f"certificates valid for {int(hours // 24)} days"
    return f"certificates valid for {hours:g} hours"


def _covers(names: list[str], name: str) -> bool:
    """Whether a certificate for `names` covers `name` (a wildcard covers one label)."""
    if name in names:
        return True
    _, dot, rest = name.partition(".")
    return bool(dot) and f"*.{rest}" in names


def _jws_parts(body: bytes) -> tuple[dict, dict]:
    """The protected header and the payload of a flattened JWS (the payload {} when empty, as in a
    POST-as-GET)."""
    document = json.loads(body)
    protected = json.loads(_b64decode(document["protected"]))
    payload = json.loads(_b64decode(document["payload"])) if document["payload"] else {}
    if not isinstance(protected, dict) or not isinstance(payload, dict):
        raise TypeError("the protected header and the payload are JSON objects")
    return protected, payload


def _json_field(body: bytes, name: str) -> str:
    """A string field of a JSON object body; empty when there is none."""
    try:
        document = json.loads(body)
    except ValueError:
        return ""
    value = document.get(name) if isinstance(document, dict) else None
    return value if isinstance(value, str) else ""


def _with_order_fields(response: Response, order: dict[str, Any]) -> Response:
    try:
        document = json.loads(response.body)
    except ValueError:
        return response
    if not isinstance(document, dict):
        return response
    if order["replaces"]:
        document["replaces"] = order["replaces"]
    if order["profile"]:
        document["profile"] = order["profile"]
    return Response(response.status, response.headers, json.dumps(document).encode())


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


class _Connection(asyncio.Protocol):
    """One client connection: HTTP/1.1 with keep-alive, requests answered in order."""

    def __init__(self, proxy: AcmeProxy) -> None:
        self.proxy = proxy
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.busy = False
        self.pending: asyncio.Future | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.proxy._connections.add(self)
        self.proxy.connections_accepted += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.proxy._connections.discard(self)
        self.transport = None

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > MAX_HEAD_BYTES + MAX_BODY_BYTES:
            # A client piling up requests without reading answers.
            self.abort()
            return
        if not self.busy:
            self._process()

    def _process(self) -> None:
        while not self.busy and self.transport is not None:
            request = self._next_request()
            if request is None:
                return
            try:
                result = self.proxy.dispatch(request)
            except Exception as exc:  # a bug of the proxy: a 500, never a dead connection
                result = problem(500, "serverInternal", f"the test ACME proxy failed: {exc!r}")
            if isinstance(result, Response):
                self._send(request, result)
            else:
                self.busy = True
                # The loop holds tasks weakly; the connection holds its one pending task.
                self.pending = asyncio.ensure_future(self._finish(request, result))

    async def _finish(self, request: Request, pending: Coroutine[Any, Any, Response]) -> None:
        try:
            response = await pending
        except Exception as exc:  # as above
            response = problem(500, "serverInternal", f"the test ACME proxy failed: {exc!r}")
        self.busy = False
        self._send(request, response)
        self._process()

    def _refuse(self, status: int, detail: str) -> None:
        """Answers a request that cannot be read, and closes: what follows it cannot be framed."""
        response = problem(status, "malformed", detail)
        self._send(Request("GET", "/", "HTTP/1.1", [], b"", keep_alive=False), response)
        self.buffer.clear()

    def _next_request(self) -> Request | None:
        # RFC 9112 section 2.2: ignore empty lines before a request line.
        while self.buffer.startswith(b"\r\n"):
            del self.buffer[:2]
        end = self.buffer.find(b"\r\n\r\n", 0, MAX_HEAD_BYTES + 4)
        if end < 0:
            if len(self.buffer) > MAX_HEAD_BYTES:
                self._refuse(431, f"request head over {MAX_HEAD_BYTES} bytes")
            return None
        lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        # An origin-form target only: "//host/..." would make the upstream client go elsewhere.
        if (
            len(parts) != 3
            or not parts[0].isalpha()
            or not parts[1].startswith("/")
            or parts[1].startswith("//")
        ):
            self._refuse(400, "malformed request line")
            return None
        method, target, version = parts
        if version not in ("HTTP/1.1", "HTTP/1.0"):
            self._refuse(505, f"{version[:20]!r} is not HTTP/1.1")
            return None
        headers = []
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon or not name or name != name.strip():
                self._refuse(400, "malformed header line")
                return None
            headers.append((name, value.strip()))
        lowered = {name.lower(): value for name, value in headers}
        if "transfer-encoding" in lowered:
            self._refuse(411, "send a Content-Length, not a Transfer-Encoding")
            return None
        length_text = lowered.get("content-length", "0")
        if not length_text.isdigit():
            self._refuse(400, "malformed Content-Length")
            return None
        length = int(length_text)
        if length > MAX_BODY_BYTES:
            self._refuse(413, f"request body over {MAX_BODY_BYTES} bytes")
            return None
        if len(self.buffer) < end + 4 + length:
            return None
        body = bytes(self.buffer[end + 4 : end + 4 + length])
        del self.buffer[: end + 4 + length]
        connection = lowered.get("connection", "").lower()
        keep_alive = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
        return Request(method.upper(), target, version, headers, body, keep_alive)

    def _send(self, request: Request, response: Response) -> None:
        if self.transport is None:
            return
        head = [
            f"HTTP/1.1 {response.status} {_reason(response.status)}",
            f"Date: {self.proxy.date_header()}",
            "Server: certwright-acme-proxy",
        ]
        head.extend(f"{name}: {value}" for name, value in response.headers)
        if response.status in (204, 304):
            body = b""  # neither has a body, nor a Content-Length
        elif request.method == "HEAD":
            if not any(name.lower() == "content-length" for name, _ in response.headers):
                head.append(f"Content-Length: {len(response.body)}")
            body = b""
        else:
            head.append(f"Content-Length: {len(response.body)}")
            body = response.body
        if not request.keep_alive:
            head.append("Connection: close")
        self.transport.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        if not request.keep_alive:
            self.transport.close()
            self.transport = None


class _Control:
    """The JSON control API under /_proxy/, for a proxy in another process (the benchmark):

    GET  /_proxy/state                  settings and counters (see `state`)
    GET  /_proxy/orders                 every order, as `AcmeProxy.orders`
    GET  /_proxy/certificates           every certificate seen (certID, account, dates, serial, replaced_by)
    GET  /_proxy/renewal-info-count/ID  renewalInfo requests for one certID
    GET  /_proxy/new-order-count/NAME   newOrders naming NAME
    POST /_proxy/window                 {"cert_id", "start", "end", "explanation_url"?}
    POST /_proxy/move-all-windows       {"start", "end", "explanation_url"?}
    POST /_proxy/reset-windows          {}
    POST /_proxy/answer-unknown         {"start", "end"} or {} to answer 404 again
    POST /_proxy/settings               {"ari_enabled"?, "retry_after"?, "profiles"? {name: seconds}}
    POST /_proxy/fail-renewal-info      {"status"?, "times"?, "retry_after"?}
    POST /_proxy/pause                  {"identifier", "unpause_url", "account"?}
    POST /_proxy/unpause                {"identifier", "account"?}
    POST /_proxy/refuse-new-orders      {"detail", "retry_after", "times"?, "exempt_renewals"?}
    Bad input is a 400 {"error": "..."} naming what is wrong.
    """

    def __init__(self, proxy: AcmeProxy) -> None:
        self.proxy = proxy

    def handle(self, request: Request) -> Response:
        name = request.path[len(CONTROL_PATH) :]
        try:
            if request.method == "GET":
                return self._get(name)
            if request.method != "POST":
                return _json(405, {"error": "the control API takes GET and POST"})
            try:
                document = json.loads(request.body or b"{}")
            except ValueError:
                return _json(400, {"error": "the body is not JSON"})
            if not isinstance(document, dict):
                return _json(400, {"error": "the body is not a JSON object"})
            handler = getattr(self, "_post_" + name.replace("-", "_"), None)
            if handler is None or "/" in name:
                return _json(404, {"error": f"no control {name!r}"})
            handler(document)
            return _json(200, self.state())
        except _BadInput as exc:
            return _json(400, {"error": str(exc)})

    def state(self) -> dict[str, Any]:
        proxy = self.proxy
        with proxy._lock:
            return {
                "directory_url": proxy.directory_url,
                "ari_enabled": proxy.ari_enabled,
                "retry_after": proxy.retry_after,
                "profiles": {name: life.total_seconds() for name, life in proxy.profiles.items()},
                "renewal_info_served": proxy.renewal_info_served,
                "connections_accepted": proxy.connections_accepted,
                "new_orders_passed": proxy.new_orders_passed,
                "new_orders_refused": proxy.new_orders_refused,
                "orders": len(proxy.orders),
                "certificates": len(proxy.certificates),
            }

    def _get(self, name: str) -> Response:
        proxy = self.proxy
        if name == "state":
            return _json(200, self.state())
        if name == "orders":
            with proxy._lock:
                return _json(200, list(proxy.orders))
        if name == "certificates":
            with proxy._lock:
                seen = [
                    {
                        "cert_id": c.cert_id,
                        "account": c.account,
                        "not_before": rfc3339(c.not_before),
                        "not_after": rfc3339(c.not_after),
                        "serial": c.serial,
                        "names": c.names,
                        "replaced_by": c.replaced_by,
                        "revoked": c.revoked,
                    }
                    for c in proxy.certificates.values()
                ]
            return _json(200, seen)
        head, _, rest = name.partition("/")
        if head == "renewal-info-count" and rest:
            return _json(200, {"cert_id": rest, "count": proxy.renewal_info_served_for(rest)})
        if head == "new-order-count" and rest:
            return _json(200, {"identifier": rest, "count": proxy.new_orders_for(rest)})
        return _json(404, {"error": f"no control {name!r}"})

    def _post_window(self, document: dict) -> None:
        cert_id = _text(document, "cert_id")
        if not well_formed_cert_id(cert_id):
            raise _BadInput(
                f"cert_id {cert_id[:MAX_CERT_ID_CHARS]!r} is not an RFC 9773 certificate identifier"
            )
        start, end = _window(document)
        self.proxy.set_window(cert_id, start, end, _optional_text(document, "explanation_url"))

    def _post_move_all_windows(self, document: dict) -> None:
        start, end = _window(document)
        self.proxy.move_all_windows(start, end, _optional_text(document, "explanation_url"))

    def _post_reset_windows(self, document: dict) -> None:
        self.proxy.reset_windows()

    def _post_answer_unknown(self, document: dict) -> None:
        if document.get("start") is None and document.get("end") is None:
            self.proxy.answer_unknown(None)
        else:
            self.proxy.answer_unknown(*_window(document))

    def _post_settings(self, document: dict) -> None:
        unknown = set(document) - {"ari_enabled", "retry_after", "profiles"}
        if unknown:
            raise _BadInput(f"unknown settings: {', '.join(sorted(unknown))}")
        updates: dict[str, Any] = {}
        if "ari_enabled" in document:
            if not isinstance(document["ari_enabled"], bool):
                raise _BadInput("ari_enabled is true or false")
            updates["ari_enabled"] = document["ari_enabled"]
        if "retry_after" in document:
            updates["retry_after"] = _whole(document, "retry_after", 0, 10**9)
        if "profiles" in document:
            profiles = document["profiles"]
            if not isinstance(profiles, dict) or not all(
                isinstance(name, str) and name and isinstance(seconds, int | float) and 0 < seconds < 10**10
                for name, seconds in profiles.items()
            ):
                raise _BadInput("profiles is an object of profile name -> lifetime in seconds (positive)")
            updates["profiles"] = {name: datetime.timedelta(seconds=s) for name, s in profiles.items()}
        with self.proxy._lock:
            for attribute, value in updates.items():
                setattr(self.proxy, attribute, value)

    def _post_fail_renewal_info(self, document: dict) -> None:
        status = _whole(document, "status", 400, 599, default=500)
        times = _whole(document, "times", 1, 10**9, default=1)
        retry_after = (
            None if document.get("retry_after") is None else _whole(document, "retry_after", 0, 10**9)
        )
        self.proxy.fail_renewal_info(status, times, retry_after)

    def _post_pause(self, document: dict) -> None:
        self.proxy.pause(
            _text(document, "identifier"), _text(document, "unpause_url"), _optional_text(document, "account")
        )

    def _post_unpause(self, document: dict) -> None:
        self.proxy.unpause(_text(document, "identifier"), _optional_text(document, "account"))

    def _post_refuse_new_orders(self, document: dict) -> None:
        retry_after = str(_whole(document, "retry_after", 0, 10**9))
        times = _whole(document, "times", 1, 10**9, default=1)
        exempt = document.get("exempt_renewals", True)
        if not isinstance(exempt, bool):
            raise _BadInput("exempt_renewals is true or false")
        self.proxy.refuse_new_orders(_text(document, "detail"), retry_after, times, exempt)


class _BadInput(ValueError):
    pass


def _text(document: dict, key: str) -> str:
    value = document.get(key)
    if not isinstance(value, str) or not value or len(value) > 2000:
        raise _BadInput(f"{key} is a non-empty string (at most 2000 characters)")
    return value


def _optional_text(document: dict, key: str) -> str | None:
    return None if document.get(key) is None else _text(document, key)


def _whole(document: dict, key: str, low: int, high: int, default: int | None = None) -> int:
    value = document.get(key, default)
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise _BadInput(f"{key} is a whole number from {low} to {high}")
    return value


def _window(document: dict) -> tuple[datetime.datetime, datetime.datetime]:
    try:
        start, end = parse_rfc3339(_text(document, "start")), parse_rfc3339(_text(document, "end"))
    except ValueError as exc:
        raise _BadInput(f"start and end are RFC 3339 timestamps with an offset: {exc}") from None
    if end < start:
        raise _BadInput("end is before start")
    return start, end


class ProxyControl:
    """A client of a proxy's control API (a proxy in another process)."""

    def __init__(self, directory_url: str, ca_file: str | Path) -> None:
        base = (
            directory_url[: -len(DIRECTORY_PATH)] if directory_url.endswith(DIRECTORY_PATH) else directory_url
        )
        self.client = httpx.Client(
            base_url=base + CONTROL_PATH.rstrip("/"),
            verify=ssl.create_default_context(cafile=str(ca_file)),
            timeout=30,
        )

    def get(self, name: str) -> Any:
        response = self.client.get(f"/{name}")
        response.raise_for_status()
        return response.json()

    def post(self, name: str, **document: Any) -> dict[str, Any]:
        """POSTs `document` (datetimes as RFC 3339) to /_proxy/<name>; raises on a 4xx with its error."""
        encoded = {k: rfc3339(v) if isinstance(v, datetime.datetime) else v for k, v in document.items()}
        response = self.client.post(f"/{name}", json=encoded)
        if response.status_code >= 400:
            raise ValueError(f"{name}: {response.status_code} {response.text}")
        return response.json()

    def close(self) -> None:
        self.client.close()


def _load_account_key(spec: str) -> AccountKey:
    module, _, name = spec.partition(":")
    if not module or not name:
        raise SystemExit(f"--account-key takes MODULE:FUNCTION, not {spec!r}")
    return getattr(importlib.import_module(module), name)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.acme_proxy", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--upstream", required=True, help="Pebble's ACME listener, HOST:PORT")
    parser.add_argument("--ca-file", required=True, help="the CA of Pebble's listener certificate")
    parser.add_argument("--cert", required=True, help="the proxy's listener certificate (Pebble's)")
    parser.add_argument("--key", required=True, help="its key")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument(
        "--account-key", help="MODULE:FUNCTION taking an account URL, returning its josepy JWK (for profiles)"
    )
    args = parser.parse_args(argv)
    upstream_host, _, upstream_port = args.upstream.rpartition(":")
    if not upstream_host or not upstream_port.isdigit():
        parser.error(f"--upstream is HOST:PORT, not {args.upstream!r}")
    proxy = AcmeProxy(
        upstream_host,
        int(upstream_port),
        ssl.create_default_context(cafile=args.ca_file),
        Path(args.cert),
        Path(args.key),
        account_key=_load_account_key(args.account_key) if args.account_key else None,
        host=args.host,
        port=args.port,
    )
    stopped = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopped.set())
    with proxy:
        print(proxy.directory_url, flush=True)
        stopped.wait()
    sys.exit(0)


if __name__ == "__main__":
    main()
