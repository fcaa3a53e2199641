"""The platform's DNS resolver as the fault matrix sees it: a UDP relay in front of
pebble-challtestsrv that can stop answering (every query times out) and start again.

Certwright's DNS client asks over UDP (TCP only for a truncated answer, which challtestsrv's small
answers never are), so relaying UDP is all it needs. The relay runs on an asyncio loop in a thread
of the benchmark's own process; each query gets its own upstream socket, so answers can never be
handed to the wrong client.
"""

from __future__ import annotations

import asyncio
import threading

UPSTREAM_TIMEOUT_SECONDS = 5.0


class _Upstream(asyncio.DatagramProtocol):
    """One query's trip to challtestsrv; the answer goes back to the client that asked."""

    def __init__(self, relay: DnsRelay, client: tuple[str, int], query: bytes) -> None:
        self.relay, self.client, self.query = relay, client, query
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.sendto(self.query)
        asyncio.get_running_loop().call_later(UPSTREAM_TIMEOUT_SECONDS, self.transport.close)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self.relay.silent and self.relay.listener is not None:
            self.relay.listener.sendto(data, self.client)
        if self.transport is not None:
            self.transport.close()


class _Listener(asyncio.DatagramProtocol):
    def __init__(self, relay: DnsRelay) -> None:
        self.relay = relay

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.relay.queries += 1
        if self.relay.silent:
            # A resolver that times out: the query is read and never answered.
            self.relay.dropped += 1
            return
        loop = asyncio.get_running_loop()
        task = loop.create_task(
            loop.create_datagram_endpoint(
                lambda: _Upstream(self.relay, addr, data), remote_addr=self.relay.upstream
            )
        )
        # The loop keeps only weak references to its tasks.
        self.relay.pending.add(task)
        task.add_done_callback(self.relay.pending.discard)


class DnsRelay:
    """`start()` listens on 127.0.0.1:`port` and relays to `upstream`; `silent = True` makes every
    query time out until it is set back to False."""

    def __init__(self, port: int, upstream: tuple[str, int]) -> None:
        self.port, self.upstream = port, upstream
        self.silent = False
        self.queries = 0
        self.dropped = 0
        self.pending: set[asyncio.Task] = set()
        self.listener: asyncio.DatagramTransport | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="dns-relay", daemon=True)

    def start(self) -> DnsRelay:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(
            self._loop.create_datagram_endpoint(lambda: _Listener(self), local_addr=("127.0.0.1", self.port)),
            self._loop,
        )
        self.listener, _ = future.result(timeout=10)
        return self

    def stop(self) -> None:
        if self.listener is not None:
            self._loop.call_soon_threadsafe(self.listener.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
