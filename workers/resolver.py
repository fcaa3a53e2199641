"""DNS lookups for the targeting check and the CAA pre-flight, through DNS_RESOLVERS only (never
the system resolver).

Many names are resolved concurrently in one event loop (workers/dns_client.py): at most an
A and an AAAA query per name, since a CNAME chain and the addresses it ends at come back inside
those answers; the AAAA query is skipped when the A answer already settles the check (NXDOMAIN, or
a CNAME to the platform that ends at an IPv4 address).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping

import dns.exception
from django.conf import settings

from domains.caa import CaaRecord, climb
from domains.targeting import Lookup, platform_name_reached
from workers.dns_client import NXDOMAIN, DnsClient, QueryFailed
from workers.dns_wire import Answer

logger = logging.getLogger(__name__)


class Resolvers:
    """The DNS_RESOLVERS, in order: a query that fails at one is asked of the next."""

    def __init__(self) -> None:
        self.clients = [
            DnsClient(host, port, timeout=settings.DNS_TIMEOUT_SECONDS)
            for host, port in settings.DNS_RESOLVERS
        ]
        # At most DNS_CONCURRENCY queries in flight, whatever phase sends them: the CAA climb and
        # the ownership TXT lookups of a whole chunk would otherwise go out in one burst.
        self.in_flight = asyncio.Semaphore(settings.DNS_CONCURRENCY)

    async def __aenter__(self) -> Resolvers:
        for client in self.clients:
            await client.__aenter__()
        return self

    async def __aexit__(self, *exc) -> None:
        for client in self.clients:
            await client.__aexit__(*exc)

    async def query(self, name: str, rdtype: str) -> Answer:
        failure = QueryFailed("no resolver configured")
        async with self.in_flight:
            for client in self.clients:
                try:
                    return await client.query(name, rdtype)
                except QueryFailed as exc:
                    failure = exc
        raise failure


class _Outcome:
    __slots__ = ("cnames", "error", "nxdomain", "records")

    def __init__(self) -> None:
        self.nxdomain = False
        self.cnames: list[str] = []
        self.records: list = []
        self.error: str | None = None


async def _query(resolvers: Resolvers, name: str, rdtype: str) -> _Outcome:
    outcome = _Outcome()
    try:
        answer = await resolvers.query(name, rdtype)
    except QueryFailed as failure:
        outcome.error = failure.reason
        return outcome
    except (OSError, dns.exception.DNSException) as exc:
        outcome.error = type(exc).__name__
        return outcome
    # An NXDOMAIN answer still carries the CNAME chain up to the name that does not exist.
    outcome.cnames = answer.cnames
    if answer.rcode == NXDOMAIN:
        outcome.nxdomain = True
        return outcome
    outcome.records = {"CAA": answer.caa, "TXT": answer.txt}.get(rdtype, answer.addresses)
    return outcome


async def lookup(resolver: Resolvers, name: str, accepted_cnames: frozenset[str] = frozenset()) -> Lookup:
    """A, then AAAA unless the A answer settles it, folded into one Lookup."""
    a = await _query(resolver, name, "A")
    # Through a CNAME to the platform only the end of the chain is left to know: an IPv4 address
    # settles it; without one, the AAAA query says whether the platform's name has any address.
    settled = a.nxdomain or (bool(a.records) and any(cname in accepted_cnames for cname in a.cnames))
    aaaa = _Outcome() if settled or a.error else await _query(resolver, name, "AAAA")
    error = a.error or aaaa.error
    return Lookup(
        name=name,
        nxdomain=(a.nxdomain or aaaa.nxdomain) and not error,
        cnames=tuple(dict.fromkeys([*a.cnames, *aaaa.cnames])),
        a=tuple(sorted(set(a.records))),
        aaaa=tuple(sorted(set(aaaa.records))),
        error=error,
    )


async def lookup_many(
    resolver: Resolvers,
    names: Iterable[str],
    accepted_cnames: Mapping[str, frozenset[str]] | None = None,
    concurrency: int = 500,
) -> dict[str, Lookup]:
    """Looks up every name with at most `concurrency` names in flight."""
    semaphore = asyncio.Semaphore(concurrency)
    accepted_cnames = accepted_cnames or {}

    async def bounded(name: str) -> Lookup:
        async with semaphore:
            return await lookup(resolver, name, accepted_cnames.get(name, frozenset()))

    results = await asyncio.gather(*(bounded(name) for name in names))
    _report_unresolved_platform_names(results, accepted_cnames)
    return {result.name: result for result in results}


def _report_unresolved_platform_names(
    results: Iterable[Lookup], accepted_cnames: Mapping[str, frozenset[str]]
) -> None:
    """Logs, once per name per batch, each platform name that customers' CNAMEs reach but that has
    no address: the platform's DNS is broken there, and only its operators can mend it."""
    stranded: dict[str, list[str]] = defaultdict(list)
    for result in results:
        if result.error or result.a or result.aaaa:
            continue
        reached = platform_name_reached(result, accepted_cnames.get(result.name, frozenset()))
        if reached:
            stranded[reached].append(result.name)
    for platform_name, names in sorted(stranded.items()):
        logger.warning(
            "the platform's name %s has no address in DNS: %d custom domain(s) that are a CNAME to it "
            "wait until it has one (e.g. %s)",
            platform_name,
            len(names),
            ", ".join(sorted(names)[:3]),
        )


class CaaLookupFailed(Exception):
    """The resolvers could not say whether a CAA record set exists (the CA would refuse too)."""


async def _caa_at(resolver: Resolvers, name: str) -> list[CaaRecord] | None:
    outcome = await _query(resolver, name, "CAA")
    if outcome.error:
        raise CaaLookupFailed(f"the CAA lookup of {name} failed ({outcome.error})")
    if not outcome.records:
        return None
    return [CaaRecord(flags, tag, value) for flags, tag, value in outcome.records]


async def find_caa_many(
    resolver: Resolvers, names: Iterable[str]
) -> dict[str, tuple[str, list[CaaRecord]] | CaaLookupFailed | None]:
    """For each name, the nearest CAA record set while climbing to the TLD (owner, records), None
    when there is none, or the failure. Each owner name is queried once for the whole batch."""
    cache: dict[str, asyncio.Task] = {}

    def at(owner: str) -> asyncio.Task:
        if owner not in cache:
            cache[owner] = asyncio.ensure_future(_caa_at(resolver, owner))
        return cache[owner]

    async def nearest(name: str):
        try:
            for owner in climb(name):
                records = await at(owner)
                if records is not None:
                    return owner, records
        except CaaLookupFailed as failure:
            return failure
        return None

    names = list(names)
    results = await asyncio.gather(*(nearest(name) for name in names))
    return dict(zip(names, results, strict=True))


class TxtLookupFailed(Exception):
    """The resolvers could not say which TXT records a name has."""


async def find_txt_many(resolver: Resolvers, names: Iterable[str]) -> dict[str, list[str] | TxtLookupFailed]:
    """Each name's TXT records (an empty list for none or NXDOMAIN), or why they are unknown."""

    async def one(name: str):
        outcome = await _query(resolver, name, "TXT")
        if outcome.error:
            return TxtLookupFailed(f"the TXT lookup of {name} failed ({outcome.error})")
        return list(outcome.records)

    names = list(names)
    results = await asyncio.gather(*(one(name) for name in names))
    return dict(zip(names, results, strict=True))


async def find_cnames_many(
    resolver: Resolvers, names: Iterable[str]
) -> dict[str, list[str] | TxtLookupFailed]:
    """Each name's CNAME chain, read from the answer to a TXT query (the query the CA sends for a
    DNS-01 record; a CNAME to a name with no record yet comes back with NXDOMAIN), or why it is
    unknown."""

    async def one(name: str):
        try:
            answer = await resolver.query(name, "TXT")
        except QueryFailed as failure:
            return TxtLookupFailed(f"the lookup of {name} failed ({failure.reason})")
        except (OSError, dns.exception.DNSException) as exc:
            return TxtLookupFailed(f"the lookup of {name} failed ({type(exc).__name__})")
        return list(answer.cnames)

    names = list(names)
    results = await asyncio.gather(*(one(name) for name in names))
    return dict(zip(names, results, strict=True))


def resolve_for_check(
    names: list[str],
    accepted_cnames: Mapping[str, frozenset[str]],
    needs_caa: Callable[[Lookup], bool],
    txt_for: Callable[[Lookup], str | None] | None = None,
    cnames_for: Callable[[Lookup], str | None] | None = None,
) -> tuple[dict[str, Lookup], dict, dict, dict]:
    """One event loop for a check chunk: every name's lookup, then, for the names whose lookup
    `needs_caa` (those that point at the platform), the CAA search, the TXT records `txt_for` asks
    about (ownership records) and the CNAME chains `cnames_for` asks about (a wildcard's DNS-01
    delegation), all at once."""

    async def run() -> tuple[dict[str, Lookup], dict, dict, dict]:
        async with Resolvers() as resolver:
            lookups = await lookup_many(resolver, names, accepted_cnames, settings.DNS_CONCURRENCY)
            wanted = [name for name in names if needs_caa(lookups[name])]
            asked = [txt_for(lookups[name]) for name in wanted] if txt_for else []
            delegations = [cnames_for(lookups[name]) for name in wanted] if cnames_for else []
            caa, txt, cnames = await asyncio.gather(
                find_caa_many(resolver, wanted),
                find_txt_many(resolver, [a for a in asked if a]),
                find_cnames_many(resolver, [d for d in delegations if d]),
            )
            return lookups, caa, txt, cnames

    return asyncio.run(run())
