"""Where a webhook may be sent: the URL's form and the address rule against server-side request
forgery (issue 16). Pure: no lookup, no connection; workers/webhook_delivery.py resolves the name
through DNS_RESOLVERS at each send and connects only to the addresses this module passed.

An address passes when it is global (`ipaddress`'s `is_global`, not multicast) and so is every
IPv4 address it carries: IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d), 6to4
(2002:aabb:ccdd::/16), NAT64 (64:ff9b::/96 and the local-use 64:ff9b:1::/48) and Teredo. That
refuses loopback, private, shared (100.64/10), link-local (169.254.169.254, a cloud's metadata
service), unique-local, documentation and reserved ranges, 0.0.0.0 and ::. An operator may allow
networks that would otherwise be refused (WEBHOOK_ALLOWED_NETWORKS: an internal receiver, the
test suite's receivers); nothing else opens the rule.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import SplitResult, urlsplit

from domains.webhook_models import MAX_URL_LENGTH

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")


class RefusedDestination(ValueError):
    """A webhook URL or address that is not sent to; the message says why, for the customer."""


def embedded_ipv4(address: Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries in one of the forms that reach them."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    found = []
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    if any(address in network for network in _NAT64) or (address in _IPV4_COMPATIBLE and int(address) > 1):
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def address_problem(address: Address | str, allowed: tuple[Network, ...] = ()) -> str | None:
    """Why `address` is not sent to, or None when it may be."""
    if isinstance(address, str):
        try:
            address = ipaddress.ip_address(address)
        except ValueError:
            return f"{address!r} is not an IP address"
    if any(address.version == network.version and address in network for network in allowed):
        return None
    # The IPv4 address carried first: what the connection would reach, and the clearer reason.
    for candidate in [*embedded_ipv4(address), address]:
        if candidate.is_multicast or not candidate.is_global:
            shown = f"{address} (which carries {candidate})" if candidate != address else str(address)
            return f"{shown} is not a public address ({_kind(candidate)})"
    return None


def _kind(address: Address) -> str:
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if isinstance(address, ipaddress.IPv4Address) and address in ipaddress.IPv4Network("100.64.0.0/10"):
        return "shared address space"
    if address.is_reserved:
        return "reserved"
    return "private"


def check_url(url: str, allow_http: bool) -> SplitResult:
    """The parts of a webhook URL of an acceptable form; RefusedDestination says what is wrong."""
    if not isinstance(url, str) or not url.strip():
        raise RefusedDestination("the URL is empty")
    if len(url) > MAX_URL_LENGTH:
        raise RefusedDestination(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if url != url.strip() or any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise RefusedDestination("the URL contains spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise RefusedDestination(f"the URL cannot be read ({exc})") from None
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes:
        raise RefusedDestination("the URL must start with https://" + (" or http://" if allow_http else ""))
    if not parts.hostname:
        raise RefusedDestination("the URL names no host")
    if parts.username is not None or parts.password is not None:
        raise RefusedDestination(
            "the URL carries credentials (user:password@); verify the webhook's signature instead"
        )
    if parts.fragment:
        raise RefusedDestination("the URL has a fragment (#...), which is never sent")
    if port == 0:
        raise RefusedDestination("the URL's port is 0")
    host = parts.hostname
    if not _is_ip_literal(host):
        try:
            host.encode("ascii")
        except UnicodeEncodeError:
            raise RefusedDestination(
                "the URL's host is not ASCII: write an internationalized name in its xn-- form"
            ) from None
        labels = host.rstrip(".").split(".")
        if len(host) > 253 or any(not label or len(label) > 63 for label in labels):
            raise RefusedDestination(f"{host!r} is not a valid host name")
    return parts


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def host_problem(host: str, allowed: tuple[Network, ...] = ()) -> str | None:
    """Why a URL's host is refused when it is an address, or None (a name is judged once
    resolved, at each send)."""
    literal = literal_address(host)
    return None if literal is None else address_problem(literal, allowed)


def literal_address(host: str) -> Address | None:
    """The host as an address when the URL names one, else None (a name, to resolve)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None
