"""DNS lookups for the targeting check, through DNS_RESOLVERS only (never the system resolver).

Many names are resolved concurrently in one event loop (dnspython's async resolver): at most one
A and one AAAA query per name, since a CNAME chain comes back inside those answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.rdatatype
import dns.resolver
from django.conf import settings

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
    __slots__ = ("addresses", "cnames", "error", "nxdomain")

    def __init__(self) -> None:
        self.nxdomain = False
        self.cnames: list[str] = []
        self.addresses: list[str] = []
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
            outcome.addresses += [rdata.address for rdata in rrset]
    return outcome


async def lookup(resolver: dns.asyncresolver.Resolver, name: str) -> Lookup:
    """A and AAAA of `name`, concurrently, folded into one Lookup."""
    a, aaaa = await asyncio.gather(_query(resolver, name, "A"), _query(resolver, name, "AAAA"))
    error = a.error or aaaa.error
    cnames = tuple(dict.fromkeys([*a.cnames, *aaaa.cnames]))
    return Lookup(
        name=name,
        nxdomain=(a.nxdomain or aaaa.nxdomain) and not error,
        cnames=cnames,
        a=tuple(sorted(set(a.addresses))),
        aaaa=tuple(sorted(set(aaaa.addresses))),
        error=error,
    )


async def lookup_many(names: Iterable[str], concurrency: int = 200) -> dict[str, Lookup]:
    """Looks up every name with at most `concurrency` names in flight."""
    resolver = make_resolver()
    semaphore = asyncio.Semaphore(concurrency)

    async def bounded(name: str) -> Lookup:
        async with semaphore:
            return await lookup(resolver, name)

    results = await asyncio.gather(*(bounded(name) for name in names))
    return {result.name: result for result in results}


def lookup_many_sync(names: Iterable[str], concurrency: int = 200) -> dict[str, Lookup]:
    """lookup_many from synchronous code (a Celery task)."""
    return asyncio.run(lookup_many(list(names), concurrency))
