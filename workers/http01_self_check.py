"""The HTTP-01 self check: before the CA is told to validate a challenge, the worker fetches it as
the CA will (cert-manager does the same), so a challenge the platform cannot serve yet is not
answered.

Answering while the platform's web processes are down, or before the routers send the name to
them, burns a failed validation: Let's Encrypt counts it against the failed-authorization limit
(and pauses a name that keeps failing), and Certwright counts it in the domain's backoff, so the
domain waits a minute or more after the platform is back. Instead the step checks again after a
short wait, for at most HTTP01_SELF_CHECK_SECONDS of the order's life; after that the CA is told
anyway and decides (a platform whose workers cannot reach its own ingress loses only that wait).
"""

from __future__ import annotations

import asyncio
import datetime

import requests
import urllib3
from django.conf import settings

from domains.targeting import Lookup
from workers.resolver import Resolvers, lookup

# One request of the check may take this long (connect, then the answer).
REQUEST_TIMEOUT_SECONDS = 3.0
# A key authorization is a token, a dot and a thumbprint: 87 characters; more is not one.
MAX_BODY_BYTES = 1024


def _lookup(name: str) -> Lookup:
    async def run() -> Lookup:
        async with Resolvers() as resolver:
            return await lookup(resolver, name)

    return asyncio.run(run())


def applies(order_created: datetime.datetime, now: datetime.datetime) -> bool:
    """Whether an order this old still checks before answering (HTTP01_SELF_CHECK_SECONDS; 0: never)."""
    return (now - order_created).total_seconds() < settings.HTTP01_SELF_CHECK_SECONDS


def wait_before_next_check(order_created: datetime.datetime, now: datetime.datetime) -> float:
    """A quarter of the order's age, from 1 s up to 10 s: quick while a restart is likely, then calmer."""
    return min(max((now - order_created).total_seconds() / 4, 1.0), 10.0)


def challenge_not_served(name: str, token: str, key_authorization: str) -> str | None:
    """None when every address of `name` (through DNS_RESOLVERS) answers the challenge URL on
    HTTP01_SELF_CHECK_PORT with the key authorization, or redirects (the CA follows redirects, the
    check does not); otherwise what is wrong, in plain words."""
    try:
        found = _lookup(name)
    except OSError as exc:
        return f"the lookup of {name} failed ({type(exc).__name__})"
    if found.error:
        return f"the lookup of {name} failed ({found.error})"
    addresses = [*found.a, *found.aaaa]
    if not addresses:
        return f"{name} has no address"
    path = f"/.well-known/acme-challenge/{token}"
    with requests.Session() as session:
        # Straight to the address, as the CA goes: never through a proxy from the environment.
        session.trust_env = False
        return _first_wrong(session, name, addresses, path, key_authorization)


def _first_wrong(
    session: requests.Session, name: str, addresses: list[str], path: str, key_authorization: str
) -> str | None:
    for address in addresses:
        host = f"[{address}]" if ":" in address else address
        url = f"http://{host}:{settings.HTTP01_SELF_CHECK_PORT}{path}"
        try:
            with session.get(
                url,
                headers={"Host": name},
                timeout=REQUEST_TIMEOUT_SECONDS,
                allow_redirects=False,
                stream=True,
            ) as response:
                body = response.raw.read(MAX_BODY_BYTES + 1, decode_content=True)
                status = response.status_code
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            # Reading the raw body raises urllib3's own errors, not requests' wrappers.
            return f"{address} did not answer {path} ({type(exc).__name__})"
        if 300 <= status < 400:
            continue
        if status != 200 or body.strip() != key_authorization.encode("ascii"):
            return f"{address} answered {path} with HTTP {status}, not the key authorization"
    return None
