"""A multiplexed asynchronous DNS client: many queries in flight over one UDP socket per resolver.

dnspython's async resolver opens a socket and runs its whole resolution machinery per query, which
caps one process at about 700 names a second; the sweep needs several times that. Here queries
share one connected UDP socket, answers are matched by message id and question, a timed-out query
is sent again once, and a truncated answer is asked again over TCP (with dnspython). Messages are
encoded and decoded by workers/dns_wire.py, which reads only the answer section.
"""

from __future__ import annotations

import asyncio
import random
import socket

import dns.asyncquery
import dns.message

from workers.dns_wire import (
    RCODES,
    TYPES,
    Answer,
    MalformedMessage,
    decode_response,
    encode_query,
    encode_question,
    question_of,
)

RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024
NOERROR, NXDOMAIN = 0, 3


class QueryFailed(Exception):
    """No usable answer: `reason` is SERVFAIL, REFUSED, timeout, and so on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, pending: dict[int, tuple[asyncio.Future, bytes]]) -> None:
        self.pending = pending

    def datagram_received(self, data: bytes, addr) -> None:
        if len(data) < 12:
            return
        waiting = self.pending.get(int.from_bytes(data[:2], "big"))
        if waiting is None:
            return
        future, question = waiting
        try:
            matches = question_of(data) == question
        except MalformedMessage:
            matches = False
        # A stray or spoofed datagram with a reused id is ignored; the real answer may still come.
        if matches and not future.done():
            future.set_result(data)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: fail everything in flight now instead of timing out.
        for future, _ in list(self.pending.values()):
            if not future.done():
                future.set_exception(QueryFailed(f"unreachable ({exc.__class__.__name__})"))


def _expire(future: asyncio.Future) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


class DnsClient:
    """Queries one resolver (host, port); use as `async with DnsClient(...) as client`."""

    def __init__(self, host: str, port: int, timeout: float, tries: int = 2) -> None:
        self.host, self.port, self.timeout, self.tries = host, port, timeout, tries
        self.pending: dict[int, tuple[asyncio.Future, bytes]] = {}
        self.transport: asyncio.DatagramTransport | None = None

    async def __aenter__(self) -> DnsClient:
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self.pending), remote_addr=(self.host, self.port)
        )
        # Hundreds of answers can arrive while the loop is busy: a deeper receive buffer keeps the
        # kernel from dropping them (which would cost a timeout and a second query).
        sock = self.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
        return self

    async def __aexit__(self, *exc) -> None:
        if self.transport is not None:
            self.transport.close()

    def _new_id(self) -> int:
        while True:
            query_id = random.randrange(65536)  # noqa: S311 (ids need uniqueness in flight, not secrecy)
            if query_id not in self.pending:
                return query_id

    async def query(self, name: str, rdtype: str) -> Answer:
        """The answer to (name, rdtype), NXDOMAIN included; raises QueryFailed otherwise."""
        loop = asyncio.get_running_loop()
        try:
            question = encode_question(name, rdtype)
        except MalformedMessage as exc:
            raise QueryFailed(str(exc)) from None
        for _ in range(self.tries):
            query_id = self._new_id()
            future = loop.create_future()
            self.pending[query_id] = (future, question.lower())
            # A timer rather than asyncio.wait_for: no extra task per query.
            timer = loop.call_later(self.timeout, _expire, future)
            try:
                self.transport.sendto(encode_query(query_id, question))
                data = await future
            except TimeoutError:
                continue
            finally:
                timer.cancel()
                self.pending.pop(query_id, None)
            try:
                answer = decode_response(data, TYPES[rdtype])
                if answer.truncated:
                    answer = await self._over_tcp(name, rdtype)
            except MalformedMessage as exc:
                raise QueryFailed(f"malformed answer ({exc})") from None
            if answer.rcode not in (NOERROR, NXDOMAIN):
                raise QueryFailed(RCODES.get(answer.rcode, f"rcode {answer.rcode}"))
            return answer
        raise QueryFailed("timeout")

    async def _over_tcp(self, name: str, rdtype: str) -> Answer:
        query = dns.message.make_query(name, rdtype)
        response = await dns.asyncquery.tcp(query, self.host, port=self.port, timeout=self.timeout)
        return decode_response(response.to_wire(), TYPES[rdtype])
