"""One client connection to the proxy: HTTP/1.1 with keep-alive over TLS."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from devstack.acme_proxy.documents import MAX_BODY_BYTES, MAX_HEAD_BYTES, Request, Response, _reason, problem

if TYPE_CHECKING:
    from devstack.acme_proxy.proxy import AcmeProxy


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
