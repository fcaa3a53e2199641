"""A test ACME proxy in front of Pebble 2.4 that adds what Pebble lacks and Let's Encrypt has: ACME
Renewal Information (RFC 9773: the directory's `renewalInfo`, windows set by the test, `replaces`
checked as Boulder checks it), certificate profiles (`meta.profiles`, each mapped to the
`notBefore`/`notAfter` Pebble honours), paused identifiers and rate-limited newOrders, with Let's
Encrypt's problem documents.

Everything else is Pebble's: the proxy listens on HTTPS with Pebble's listener certificate and
forwards with the client's Host header, so Pebble writes the proxy's URLs everywhere and a client
cannot tell the two apart. renewalInfo is answered by the proxy itself, on an asyncio loop in a
thread with HTTP/1.1 keep-alive (bench/ari.py sends it 100,000 GETs); the rest goes to Pebble over
keep-alive httpx clients on the same loop.

In process (the tests): `with AcmeProxy.in_front_of(pebble_stack) as proxy:` and the attributes and
methods below. Out of process (the benchmark): `python -m devstack.acme_proxy --upstream HOST:PORT
--ca-file F --cert F --key F` prints its directory URL and serves a JSON control API under
`/_proxy/` (see `_Control`); `ProxyControl` is its client.
"""

from devstack.acme_proxy.control import ProxyControl, proxy_command
from devstack.acme_proxy.documents import (
    DEFAULT_PROFILES,
    MAX_HEAD_BYTES,
    RateLimit,
    SeenCertificate,
    Window,
    default_window,
    parse_rfc3339,
    problem,
    rfc3339,
)
from devstack.acme_proxy.proxy import AcmeProxy

__all__ = [
    "DEFAULT_PROFILES",
    "MAX_HEAD_BYTES",
    "AcmeProxy",
    "ProxyControl",
    "RateLimit",
    "SeenCertificate",
    "Window",
    "default_window",
    "parse_rfc3339",
    "problem",
    "proxy_command",
    "rfc3339",
]
