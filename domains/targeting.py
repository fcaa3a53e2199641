"""Does a domain point at the platform? A pure diagnosis of a DNS lookup, in the customer's words.

The domain points at the platform when its CNAME chain reaches the app's own hostname or the
region's CNAME target and ends at an address, or when all of its A and AAAA records are ingress
addresses. Any address elsewhere fails the check, named: the CA would validate over it and fail.
A chain that reaches the platform's name but ends without an address is the platform's DNS at
fault, not the customer's record: transient, like a resolver failure.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass
from typing import TYPE_CHECKING

from domains.names import registered_domain

if TYPE_CHECKING:
    # For the annotation only: the diagnosis stays pure, importable without Django's app registry.
    from domains.models import Region


@dataclass(frozen=True)
class Lookup:
    """What the resolvers said about one name."""

    name: str
    nxdomain: bool = False
    cnames: tuple[str, ...] = ()
    a: tuple[str, ...] = ()
    aaaa: tuple[str, ...] = ()
    # A resolver-side problem (timeout, SERVFAIL): not the customer's doing.
    error: str | None = None


@dataclass(frozen=True)
class Target:
    """Where a domain of one app must point."""

    app_hostname: str
    cname_target: str
    ingress_ipv4: frozenset[str]
    ingress_ipv6: frozenset[str]
    platform_suffixes: tuple[str, ...] = ()


def target_in(region: Region, app_name: str, platform_suffixes: tuple[str, ...]) -> Target:
    """Where the domains of the app `app_name` of `region` must point."""
    return Target(
        app_hostname=f"{app_name}.{region.domain_suffix}",
        cname_target=region.cname_target,
        ingress_ipv4=frozenset(region.ingress_ipv4),
        ingress_ipv6=frozenset(region.ingress_ipv6),
        platform_suffixes=platform_suffixes,
    )


@dataclass(frozen=True)
class Diagnosis:
    ok: bool
    code: str
    message: str
    # A resolver problem: retried soon, not counted as the customer's failure.
    transient: bool = False


def is_apex(name: str) -> bool:
    """True for a registered domain itself (`example.com`), where a CNAME is not allowed."""
    return registered_domain(name) == name


def _by_address(name: str, target: Target) -> bool:
    """An apex, where a CNAME is not allowed, and the platform's own `*.<suffix>` (domains/platform.py),
    which is the record that makes every app hostname resolve: both point by A/AAAA records."""
    return is_apex(name) or name == "*." + target.app_hostname.split(".", 1)[-1].strip(".").lower()


def records_to_add(name: str, target: Target) -> list[str]:
    """The DNS records that make `name` point at the platform, in zone-file form."""
    if _by_address(name, target):
        records = [f"{name}. A {address}" for address in sorted(target.ingress_ipv4)]
        records += [f"{name}. AAAA {address}" for address in sorted(target.ingress_ipv6)]
        return records
    return [f"{name}. CNAME {target.app_hostname}."]


def _advice(name: str, target: Target) -> str:
    records = "; ".join(records_to_add(name, target))
    if _by_address(name, target) and not is_apex(name):
        return f"Add {records} in the platform's zone."
    if is_apex(name):
        return (
            f"A CNAME is not allowed at a zone apex: add {records} "
            "(or an ALIAS/ANAME record to the app's hostname, if your DNS provider offers one)."
        )
    return f"Add {records}"


def _under(name: str, suffix: str) -> bool:
    return name == suffix or name.endswith("." + suffix)


def platform_name_reached(lookup: Lookup, ours: Container[str]) -> str | None:
    """The first of the platform's names (`ours`) that the CNAME chain of `lookup` reaches, if any."""
    return next((cname for cname in lookup.cnames if cname in ours), None)


def _no_address(lookup: Lookup) -> str:
    # A resolver answers NXDOMAIN for a chain whose last name does not exist, NOERROR with no
    # record for a name that exists without an address.
    return "which does not exist (NXDOMAIN)" if lookup.nxdomain else "which has no address"


def diagnose(lookup: Lookup, target: Target) -> Diagnosis:
    """Whether `lookup` shows the name pointing at `target`, and what to change if not."""
    name = lookup.name
    if lookup.error:
        return Diagnosis(
            False,
            "resolver_error",
            f"The DNS lookup of {name} failed at the platform's resolvers ({lookup.error}). "
            "This is not counted against the domain and is retried in a minute.",
            transient=True,
        )
    ours = {target.app_hostname, target.cname_target}
    reached = platform_name_reached(lookup, ours)
    if reached and not lookup.a and not lookup.aaaa:
        # The customer's record is right; the CA would fail to resolve the platform's own name.
        beyond = f" (the chain ends at {lookup.cnames[-1]})" if lookup.cnames[-1] != reached else ""
        return Diagnosis(
            False,
            "platform_name_unresolved",
            f"{name} is a CNAME to {reached}, {_no_address(lookup)}{beyond}: your record is right, the "
            "platform's own name is broken in DNS, which is the platform's to fix. This is not counted "
            "against the domain and is retried in a minute.",
            transient=True,
        )
    if reached:
        # Only the app's own hostname says which app the name is meant for (domains/ownership.py).
        code = "ok_app_cname" if reached == target.app_hostname else "ok_cname"
        return Diagnosis(True, code, f"{name} is a CNAME to {reached}.")
    for cname in lookup.cnames:
        if cname not in ours and any(_under(cname, suffix) for suffix in target.platform_suffixes):
            return Diagnosis(
                False,
                "cname_other_app",
                f"{name} is a CNAME to {cname}, which is another app of the platform, not this one. "
                f"Point it at {target.app_hostname} instead.",
            )
    if lookup.nxdomain and not lookup.cnames:
        return Diagnosis(
            False, "nxdomain", f"{name} does not exist in DNS (NXDOMAIN). {_advice(name, target)}"
        )
    if not lookup.a and not lookup.aaaa:
        if lookup.cnames:
            return Diagnosis(
                False,
                "cname_dangling",
                f"{name} is a CNAME to {lookup.cnames[-1]}, {_no_address(lookup)}. {_advice(name, target)}",
            )
        return Diagnosis(
            False, "no_records", f"{name} has no A, AAAA or CNAME record. {_advice(name, target)}"
        )
    wrong_a = [a for a in lookup.a if a not in target.ingress_ipv4]
    wrong_aaaa = [a for a in lookup.aaaa if a not in target.ingress_ipv6]
    via = f" (through the CNAME {lookup.cnames[-1]})" if lookup.cnames else ""
    if not wrong_a and wrong_aaaa and lookup.a:
        listed = ", ".join(wrong_aaaa)
        fix = (
            f"point it at {', '.join(sorted(target.ingress_ipv6))}"
            if target.ingress_ipv6
            else "the platform has no IPv6 address"
        )
        return Diagnosis(
            False,
            "stray_aaaa",
            f"{name} has the right A record but also an AAAA record {listed}{via} that is not the "
            f"platform's. Let's Encrypt prefers IPv6 and would validate over it and fail: remove the "
            f"AAAA record ({fix}).",
        )
    if wrong_a or wrong_aaaa:
        parts = [f"A record {a}" for a in wrong_a] + [f"AAAA record {a}" for a in wrong_aaaa]
        expected = sorted(target.ingress_ipv4) + sorted(target.ingress_ipv6)
        return Diagnosis(
            False,
            "wrong_address",
            f"{name} has {', '.join(parts)}{via}, not an address of the platform "
            f"({', '.join(expected) or 'none configured'}); the CA would validate over it and fail. "
            f"{_advice(name, target)}",
        )
    if lookup.cnames:
        return Diagnosis(
            True, "ok_addresses", f"{name} resolves through {lookup.cnames[-1]} to the platform's addresses."
        )
    return Diagnosis(True, "ok_addresses", f"{name} resolves to the platform's addresses.")
