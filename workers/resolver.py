"""DNS lookups for the targeting check and the CAA pre-flight, through DNS_RESOLVERS only (never
the system resolver).

Many names are resolved concurrently in one event loop (dnspython's async resolver): at most an
A and an AAAA query per name, since a CNAME chain comes back inside those answers; the AAAA query
is skipped when the A answer already settles the check (NXDOMAIN, or a CNAME to the platform).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.rdatatype
import dns.resolver
from django.conf import settings

from domains.caa import CaaRecord, climb
from domains.targeting import Lookup


def make_resolver() -> dns.asyncresolver.Resolver:
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = [
        dns.nameserver.Do53Nameserver(host, port) for host, port in settings.DNS_RESOLVERS
    ]
    resolver.timeout = settings.DNS_TIMEOUT_SECONDS
    # One retry after a timeout fits in the lifetime.
    resolver.lifetime = settings.DNS_TIMEOUT_SECONDS * 2.5
    resolver.cache = None
    return resolver


class _Outcome:
    __slots__ = ("cnames", "error", "nxdomain", "records")

    def __init__(self) -> None:
        self.nxdomain = False
        self.cnames: list[str] = []
        self.records: list = []
        self.error: str | None = None


async def _query(resolver: dns.asyncresolver.Resolver, name: str, rdtype: str) -> _Outcome:
    outcome = _Outcome()
    try:
        answer = await resolver.resolve(name, rdtype, raise_on_no_answer=False, search=False)
    except dns.resolver.NXDOMAIN:
        outcome.nxdomain = True
        return outcome
    except dns.resolver.NoNameservers:
        outcome.error = "SERVFAIL"
        return outcome
    except dns.exception.Timeout:
        outcome.error = "timeout"
        return outcome
    except dns.exception.DNSException as exc:
        outcome.error = type(exc).__name__
        return outcome
    wanted = dns.rdatatype.from_text(rdtype)
    for rrset in answer.response.answer:
        if rrset.rdtype == dns.rdatatype.CNAME:
            outcome.cnames += [rdata.target.to_text(omit_final_dot=True).lower() for rdata in rrset]
        elif rrset.rdtype == wanted:
            outcome.records += list(rrset)
    return outcome


async def lookup(
    resolver: dns.asyncresolver.Resolver, name: str, accepted_cnames: frozenset[str] = frozenset()
) -> Lookup:
    """A, then AAAA unless the A answer settles it, folded into one Lookup."""
    a = await _query(resolver, name, "A")
    settled = a.nxdomain or any(cname in accepted_cnames for cname in a.cnames)
    aaaa = _Outcome() if settled or a.error else await _query(resolver, name, "AAAA")
    error = a.error or aaaa.error
    return Lookup(
        name=name,
        nxdomain=(a.nxdomain or aaaa.nxdomain) and not error,
        cnames=tuple(dict.fromkeys([*a.cnames, *aaaa.cnames])),
        a=tuple(sorted({r.address for r in a.records})),
        aaaa=tuple(sorted({r.address for r in aaaa.records})),
        error=error,
    )


async def lookup_many(
    names: Iterable[str], accepted_cnames: Mapping[str, frozenset[str]] | None = None, concurrency: int = 500
) -> dict[str, Lookup]:
    """Looks up every name with at most `concurrency` names in flight."""
    resolver = make_resolver()
    semaphore = asyncio.Semaphore(concurrency)
    accepted_cnames = accepted_cnames or {}

    async def bounded(name: str) -> Lookup:
        async with semaphore:
            return await lookup(resolver, name, accepted_cnames.get(name, frozenset()))

    results = await asyncio.gather(*(bounded(name) for name in names))
    return {result.name: result for result in results}


def lookup_many_sync(
    names: Iterable[str], accepted_cnames: Mapping[str, frozenset[str]] | None = None
) -> dict[str, Lookup]:
    """lookup_many from synchronous code (a Celery task)."""
    return asyncio.run(lookup_many(list(names), accepted_cnames, settings.DNS_CONCURRENCY))


class CaaLookupFailed(Exception):
    """The resolvers could not say whether a CAA record set exists (the CA would refuse too)."""


async def _caa_at(resolver: dns.asyncresolver.Resolver, name: str) -> list[CaaRecord] | None:
    outcome = await _query(resolver, name, "CAA")
    if outcome.error:
        raise CaaLookupFailed(f"the CAA lookup of {name} failed ({outcome.error})")
    if not outcome.records:
        return None
    return [
        CaaRecord(r.flags, r.tag.decode(errors="replace"), r.value.decode(errors="replace"))
        for r in outcome.records
    ]


async def find_caa_many(
    names: Iterable[str],
) -> dict[str, tuple[str, list[CaaRecord]] | CaaLookupFailed | None]:
    """For each name, the nearest CAA record set while climbing to the TLD (owner, records), None
    when there is none, or the failure. Each owner name is queried once for the whole batch."""
    resolver = make_resolver()
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


def find_caa_many_sync(names: Iterable[str]) -> dict:
    return asyncio.run(find_caa_many(names))
