"""Sending webhooks (issue 16): POSTs over one aiohttp session per worker process, to addresses
that pass domains/webhook_targets.py only. The session's resolver asks DNS_RESOLVERS and hands the
connector only checked addresses (all of a name's must pass), so the connection goes where it was
checked with no second lookup; an address written in the URL is checked here, as aiohttp asks no
resolver for it. No redirect is followed; each request has WEBHOOK_TIMEOUT_SECONDS in all; at most
EXCERPT_BYTES of the answer are read. workers/webhook_delivery.py decides what to send and writes
what came of it."""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass
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
    the URL: send() checks those itself, with domains.webhook_targets.host_problem.)"""

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


def send(requests: list[tuple[str, bytes, dict]]) -> list[Outcome]:
    """POSTs every (url, body, headers), WEBHOOK_CONCURRENCY at a time; outcomes in order."""
    refused = {url: _literal_problem(url) for url in {url for url, _, _ in requests}}

    timeout = aiohttp.ClientTimeout(total=settings.WEBHOOK_TIMEOUT_SECONDS)

    async def run() -> list[Outcome]:
        session = await _session()
        results: list[Outcome | None] = [None] * len(requests)
        pending = iter(range(len(requests)))

        async def worker() -> None:
            for index in pending:
                url, body, headers = requests[index]
                problem = refused[url]
                results[index] = (
                    Outcome(None, 0, "", problem)
                    if problem
                    else await _post(session, url, body, headers, timeout)
                )

        await asyncio.gather(*(worker() for _ in range(min(settings.WEBHOOK_CONCURRENCY, len(requests)))))
        return results  # type: ignore[return-value]

    return _client.run(run)
