"""Sending webhooks (issue 16): POSTs over one aiohttp session per worker process, to addresses
that pass domains/webhook_targets.py only. The session's resolver asks DNS_RESOLVERS and hands the
connector only checked addresses (all of a name's must pass), so the connection goes where it was
checked with no second lookup; an address written in the URL is checked here, as aiohttp asks no
resolver for it. No redirect is followed; each request has WEBHOOK_TIMEOUT_SECONDS in all; at most
EXCERPT_BYTES of the answer are read. workers/webhook_delivery.py decides what to send and writes
what came of it."""

from __future__ import annotations

import asyncio
import itertools
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from django.conf import settings

from certificates.acme_client import USER_AGENT
from domains.webhook_models import EXCERPT_BYTES
from domains.webhook_targets import address_problem, host_problem, literal_address
from workers.process_loop import ProcessLoop
from workers.resolver import Resolvers, lookup


class RefusedAddress(OSError):
    """A destination that resolves to an address webhooks are not sent to."""


@dataclass(frozen=True, slots=True)
class Outcome:
    status_code: int | None
    latency_ms: int
    excerpt: str
    error: str

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class CheckedResolver(AbstractResolver):
    """aiohttp's resolver for webhooks: a name's addresses through DNS_RESOLVERS, handed to the
    connector only when every one of them passes the address rule; so the connection goes to a
    checked address, with no other lookup. (aiohttp asks no resolver for an address written in
    the URL: start() checks those itself, with domains.webhook_targets.host_problem.)"""

    def __init__(self) -> None:
        self._resolvers: Resolvers | None = None

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[ResolveResult]:
        if self._resolvers is None:
            self._resolvers = Resolvers()
            await self._resolvers.__aenter__()
        found = await lookup(self._resolvers, host)
        if found.error:
            raise OSError(f"the name {host} could not be resolved ({found.error})")
        if found.nxdomain or not (found.a or found.aaaa):
            raise OSError(f"the name {host} has no address")
        addresses = [literal_address(a) for a in (*found.a, *found.aaaa)]
        for address in addresses:
            problem = address_problem(address, settings.WEBHOOK_ALLOWED_NETWORKS)
            if problem:
                raise RefusedAddress(f"refused: {host} resolves to {problem}")
        return [
            {
                "hostname": host,
                "host": str(address),
                "port": port,
                "family": socket.AF_INET if address.version == 4 else socket.AF_INET6,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for address in addresses
        ]

    async def close(self) -> None:
        if self._resolvers is not None:
            resolvers, self._resolvers = self._resolvers, None
            await resolvers.__aexit__(None, None, None)


def destination_problem(url: str) -> str | None:
    """Why webhooks would be refused at this URL's host now (its name resolved through
    DNS_RESOLVERS), or None: for the API and the admin to refuse an endpoint at creation when they
    can. A name that does not resolve is not refused (its record may come later); every send
    checks again."""
    host = urlsplit(url).hostname or ""
    if literal_address(host) is not None:
        return host_problem(host, settings.WEBHOOK_ALLOWED_NETWORKS)

    async def run() -> str | None:
        resolver = CheckedResolver()
        try:
            await resolver.resolve(host, 0)
        except RefusedAddress as exc:
            return str(exc).removeprefix("refused: ")
        except OSError:
            return None
        finally:
            await resolver.close()
        return None

    return asyncio.run(run())


# The loop and session of this process (workers/process_loop.py): keep-alive connections to the
# receivers outlive a batch.
_client = ProcessLoop("webhook")


async def _session() -> aiohttp.ClientSession:
    def make() -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            resolver=CheckedResolver(),
            limit=settings.WEBHOOK_CONCURRENCY,
            # Names are re-resolved (and re-checked) for every new connection.
            use_dns_cache=False,
            keepalive_timeout=30,
        )
        return aiohttp.ClientSession(
            connector=connector,
            headers={"User-Agent": USER_AGENT, "Content-Type": "application/json"},
            # Never the environment's proxies nor ~/.netrc: the request goes where it was checked.
            trust_env=False,
        )

    return await _client.session(settings.WEBHOOK_CONCURRENCY, make)


def _literal_problem(url: str) -> str | None:
    """Why an address written in the URL is refused: aiohttp connects to an address literal
    without asking any resolver, so CheckedResolver never sees it."""
    try:
        problem = host_problem(urlsplit(url).hostname or "", settings.WEBHOOK_ALLOWED_NETWORKS)
    except ValueError:
        return None
    return f"refused: {problem}" if problem else None


async def _post(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict, timeout: aiohttp.ClientTimeout
) -> Outcome:
    started = time.perf_counter()

    def ms() -> int:
        return round((time.perf_counter() - started) * 1000)

    try:
        # aiohttp's own total timeout (connecting, sending, reading the excerpt): the same deadline
        # as an asyncio.timeout() around it, without a second timer per request.
        async with session.post(
            url, data=body, headers=headers, allow_redirects=False, timeout=timeout
        ) as response:
            excerpt = await response.content.read(EXCERPT_BYTES)
            return Outcome(response.status, ms(), excerpt.decode("utf-8", "replace"), "")
    except TimeoutError:
        return Outcome(None, ms(), "", f"no answer within {settings.WEBHOOK_TIMEOUT_SECONDS:g} s")
    except aiohttp.ClientConnectorError as exc:
        cause = exc.os_error
        if isinstance(cause, RefusedAddress):
            return Outcome(None, ms(), "", str(cause))
        return Outcome(None, ms(), "", f"cannot connect ({cause.strerror or cause})")
    except aiohttp.ClientError as exc:
        return Outcome(None, ms(), "", str(exc) or type(exc).__name__)
    except (OSError, ValueError) as exc:
        return Outcome(None, ms(), "", str(exc) or type(exc).__name__)


# An endpoint whose request has gone unanswered this long, or took this long, is slow: until it
# answers one quickly (for SLOW_MEMORY_SECONDS at most) it holds at most SLOW_SHARE of this
# process's requests in flight, so that a receiver that never answers does not keep the others'
# deliveries waiting for its timeouts. (Above the 1 s a lost SYN's first retransmission takes.)
SLOW_SECONDS = 2.0
SLOW_MEMORY_SECONDS = 300.0
SLOW_SHARE = 4
# An endpoint not yet seen answering within SLOW_SECONDS holds at most this part of the requests in
# flight (the rest stays free for the others while a new endpoint shows what it is); one that
# answers quickly may have them all.
NEW_SHARE = 0.75


@dataclass(eq=False)
class Flight:
    """Requests handed to this process's sender, each (key, url, body, headers), the key naming who
    they go to (an endpoint); their outcomes fill in as they come (None: not yet)."""

    requests: list[tuple]
    outcomes: list[Outcome | None]
    # Why a URL's address literal is refused (domains.webhook_targets), by URL; and each request's
    # deadline: both from the settings when the flight was made.
    refused: dict[str, str | None]
    timeout: aiohttp.ClientTimeout
    completed: int = 0
    # Set once every request has an outcome.
    finished: threading.Event = field(default_factory=threading.Event)

    @property
    def done(self) -> bool:
        return self.completed >= len(self.requests)


# The outcome of a request withdrawn before it was sent (withdraw()).
WITHDRAWN = Outcome(None, 0, "", "not sent")


class Sender:
    """This process's requests in flight, WEBHOOK_CONCURRENCY at a time, shared between the
    endpoints in turn: a slow endpoint (SLOW_SECONDS) gets at most SLOW_SHARE of them and a new
    one NEW_SHARE, so the others' go on. Lives on the loop's thread; `progress` is set each time a
    flight ends, for a thread that waits for one."""

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.new_share = max(1, int(concurrency * NEW_SHARE))
        # Requests not started yet, by key, in the order the keys take turns.
        self.waiting: dict[object, deque[tuple[Flight, int]]] = {}
        self.busy: dict[object, int] = {}
        # When each key's requests in flight started (time.monotonic), by a number given to each.
        self.started: dict[object, dict[int, float]] = {}
        self.numbers = itertools.count()
        # The workers (started with the first request), and the futures of those waiting for one.
        self.workers: list[asyncio.Task] = []
        self.idle: list[asyncio.Future] = []
        self.slow_until: dict[object, float] = {}
        self.quick_until: dict[object, float] = {}
        self.progress = threading.Event()

    def submit(self, flight: Flight) -> None:
        for index, (key, _, _, _) in enumerate(flight.requests):
            self.waiting.setdefault(key, deque()).append((flight, index))
        if not self.workers:
            loop = asyncio.get_running_loop()
            self.workers = [loop.create_task(self._work()) for _ in range(self.concurrency)]
        self._wake(len(flight.requests))

    def _wake(self, count: int) -> None:
        """Up to `count` idle workers look for a request to start."""
        while count > 0 and self.idle:
            idle = self.idle.pop()
            if not idle.done():
                idle.set_result(None)
                count -= 1

    def withdraw(self, flight: Flight, keys: set | None = None) -> int:
        """Takes back the requests of `flight` not started yet (those of `keys` only, if given):
        their outcome is WITHDRAWN."""
        withdrawn = 0
        for key in list(self.waiting):
            if keys is not None and key not in keys:
                continue
            kept = deque()
            for entry in self.waiting[key]:
                if entry[0] is flight:
                    self._complete(flight, entry[1], WITHDRAWN)
                    withdrawn += 1
                else:
                    kept.append(entry)
            if kept:
                self.waiting[key] = kept
            else:
                del self.waiting[key]
        return withdrawn

    def slow(self) -> set:
        """The keys slow now: one of their requests took SLOW_SECONDS lately, or has been in flight
        that long."""
        now = time.monotonic()
        for key in self.started:
            self._check_stuck(key, now)
        return {key for key, until in self.slow_until.items() if until > now}

    def _check_stuck(self, key, now: float) -> None:
        """Marks `key` slow if one of its requests has been unanswered for SLOW_SECONDS (its
        requests in flight are in the order they started: the first is the oldest)."""
        started = self.started.get(key)
        if started and next(iter(started.values())) < now - SLOW_SECONDS:
            self.slow_until[key] = now + SLOW_MEMORY_SECONDS

    def _share(self, key, now: float) -> int:
        if self.busy.get(key, 0) > SLOW_SHARE:
            self._check_stuck(key, now)
        if self.slow_until.get(key, 0.0) > now:
            return SLOW_SHARE
        return self.concurrency if self.quick_until.get(key, 0.0) > now else self.new_share

    def _take(self):
        """The next request to start (key, flight, index), the keys taking turns, none of a key
        holding its share; or None."""
        now = time.monotonic()
        for key in self.waiting:
            if self.busy.get(key, 0) < self._share(key, now):
                break
        else:
            return None  # every key waiting holds its share: the free places wait for answers
        if len(self.waiting) == 1:
            queue = self.waiting[key]
            flight, index = queue.popleft()
            if not queue:
                del self.waiting[key]
        else:
            queue = self.waiting.pop(key)
            flight, index = queue.popleft()
            if queue:
                self.waiting[key] = queue  # to the end of the turn
        self.busy[key] = self.busy.get(key, 0) + 1
        return key, flight, index, now

    async def _work(self) -> None:
        """One of WEBHOOK_CONCURRENCY workers: sends the requests _take() gives, one at a time."""
        loop = asyncio.get_running_loop()
        # The session of this process, as the settings say now (taken again after each rest).
        session = await _session()
        while True:
            job = self._take() if self.waiting else None
            if job is None:
                idle = loop.create_future()
                self.idle.append(idle)
                await idle
                session = await _session()
                continue
            await self._send(session, *job)

    async def _send(
        self, session: aiohttp.ClientSession, key, flight: Flight, index: int, started: float
    ) -> None:
        _, url, body, headers = flight.requests[index]
        number = next(self.numbers)
        self.started.setdefault(key, {})[number] = started
        outcome = WITHDRAWN
        try:
            problem = flight.refused.get(url)
            if problem:
                outcome = Outcome(None, 0, "", problem)
            else:
                outcome = await _post(session, url, body, headers, flight.timeout)
        finally:
            now = time.monotonic()
            del self.started[key][number]
            if now - started >= SLOW_SECONDS:
                self.slow_until[key] = now + SLOW_MEMORY_SECONDS
            elif outcome.status_code is not None:
                if self.quick_until.get(key, 0.0) < now + SLOW_MEMORY_SECONDS - 1:
                    self.quick_until[key] = now + SLOW_MEMORY_SECONDS
                if key in self.slow_until:
                    del self.slow_until[key]
            if self.busy[key] > 1:
                self.busy[key] -= 1
            else:
                del self.busy[key]
            self._complete(flight, index, outcome)
            if self.idle and self.waiting:
                # A share freed (or grown: the endpoint answered quickly): an idle worker looks.
                self._wake(1)

    def _complete(self, flight: Flight, index: int, outcome: Outcome) -> None:
        flight.outcomes[index] = outcome
        flight.completed += 1
        if flight.completed >= len(flight.requests):
            flight.finished.set()
            self.progress.set()


def _sender() -> Sender:
    """This process's sender (made on the loop's thread; a new one with a new loop or settings)."""
    sender = _client.state.get("sender")
    if sender is None or sender.concurrency != settings.WEBHOOK_CONCURRENCY:
        sender = _client.state["sender"] = Sender(settings.WEBHOOK_CONCURRENCY)
    return sender


def _on_loop(function):
    """`function()` run on the loop's thread; its result."""

    async def call():
        return function()

    return asyncio.run_coroutine_threadsafe(call(), _client.loop).result()


def start(requests: list[tuple]) -> Flight:
    """Hands (key, url, body, headers) requests to this process's sender and returns at once: the
    outcomes fill in on the Flight as the answers come."""
    refused = {url: _literal_problem(url) for url in {request[1] for request in requests}}
    timeout = aiohttp.ClientTimeout(total=settings.WEBHOOK_TIMEOUT_SECONDS)
    flight = Flight(requests, [None] * len(requests), refused, timeout)
    if requests:
        _on_loop(lambda: _sender().submit(flight))
    return flight


def progress() -> threading.Event:
    """Set by the sender each time a flight ends (clear it, then wait on it)."""
    return _on_loop(lambda: _sender().progress)


def slow_keys() -> set:
    """The keys (endpoints) this process's sender holds for slow now."""
    return _on_loop(lambda: _sender().slow())


def withdraw(flight: Flight, keys: set | None = None) -> int:
    """Takes back the requests of `flight` not started yet (of `keys` only, if given): their
    outcome is WITHDRAWN."""
    return _on_loop(lambda: _sender().withdraw(flight, keys))


def wait(flight: Flight, stall: float | None = None) -> None:
    """Until every request of `flight` is answered, or (with `stall`) until none of them was for
    `stall` seconds."""
    while not flight.done:
        seen = flight.completed
        if flight.finished.wait(stall) or flight.completed == seen:
            return
