"""The proxy itself: what it forwards to Pebble, what it answers on its own (renewalInfo,
profiles, pauses, rate limits), and what it saw."""

from __future__ import annotations

import asyncio
import binascii
import datetime
import email.utils
import json
import logging
import ssl
import threading
import time
from collections import Counter
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import josepy as jose
from acme import jws as acme_jws
from cryptography import x509

from certificates.facts import renewal_info_id
from devstack.acme_proxy.connection import _Connection
from devstack.acme_proxy.control import _Control
from devstack.acme_proxy.documents import (
    _HOP_BY_HOP,
    _OWN_RESPONSE_HEADERS,
    CERTIFICATE_PATH,
    CONTROL_PATH,
    DEFAULT_PROFILES,
    DEFAULT_RENEWAL_INFO_RETRY_AFTER,
    DIRECTORY_PATH,
    FINALIZE_PATH,
    MAX_CERT_ID_CHARS,
    NEW_NONCE_PATH,
    NEW_ORDER_PATH,
    ORDER_PATH,
    RENEWAL_INFO_PATH,
    UPSTREAM_CLIENTS,
    UPSTREAM_CONNECTIONS_PER_CLIENT,
    UPSTREAM_TIMEOUT_SECONDS,
    AccountKey,
    RateLimit,
    Request,
    Response,
    SeenCertificate,
    Window,
    _b64decode,
    _covers,
    _describe,
    _Failure,
    _json,
    _json_field,
    _jws_parts,
    _Refusal,
    _with_order_fields,
    cert_id_serial,
    default_window,
    problem,
    rfc3339,
    well_formed_cert_id,
)
from devstack.acme_proxy.outage import CaOutage

if TYPE_CHECKING:
    from devstack.pebble import PebbleStack


# httpx logs every forwarded request at INFO: thousands of lines that say nothing in a test's output.
logging.getLogger("httpx").setLevel(logging.WARNING)


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
        self.outage = CaOutage()
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
        outage = self.outage.answer()
        if outage is not None:
            return outage
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
