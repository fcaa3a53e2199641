"""The CA's ACME directory as raw JSON (RFC 8555 section 7.1.1), for the fields the acme library's
`messages.Directory` does not know (RFC 9773's `renewalInfo`), cached per directory URL per process
for a few minutes: a sweep of thousands of certificates reads it once, and a CA that starts or stops
offering a resource is noticed soon.
"""

from __future__ import annotations

import functools
import json
import ssl
import threading
import time

import certifi
import httpx
from django.conf import settings

from certificates.acme_client import USER_AGENT

# How long a directory read is trusted. Failures are not cached: the next caller asks again.
DIRECTORY_TTL_SECONDS = 300.0
# A directory is a few kilobytes; a larger answer is not one.
MAX_DIRECTORY_BYTES = 64 * 1024
TIMEOUT_SECONDS = 10.0

_cache: dict[str, tuple[float, dict]] = {}
_lock = threading.Lock()


class DirectoryUnavailable(Exception):
    """The directory could not be read; the message says why, in plain words."""


@functools.cache
def ca_tls_context() -> ssl.SSLContext:
    """How the CA's certificate is verified, as the ACME client does: ACME_CA_BUNDLE when set
    (Pebble's root in development), else the public roots. Built once per process (loading the
    roots costs milliseconds; a context is safe to share)."""
    return ssl.create_default_context(cafile=settings.ACME_CA_BUNDLE or certifi.where())


def acme_directory(url: str) -> dict:
    """The directory at `url` as a JSON object, from this process's cache when read less than
    DIRECTORY_TTL_SECONDS ago; DirectoryUnavailable when it cannot be read."""
    now = time.monotonic()
    with _lock:
        cached = _cache.get(url)
    if cached is not None and now - cached[0] < DIRECTORY_TTL_SECONDS:
        return cached[1]
    document = _fetch(url)
    with _lock:
        _cache[url] = (now, document)
    return document


def renewal_info_base(url: str) -> str | None:
    """The directory's `renewalInfo` URL (RFC 9773 section 3), or None when the CA offers no ARI."""
    value = acme_directory(url).get("renewalInfo")
    if isinstance(value, str) and value.startswith(("https://", "http://")):
        return value
    return None


def forget_directories() -> None:
    """Empties this process's cache (tests that switch a CA's resources on and off)."""
    with _lock:
        _cache.clear()


def _fetch(url: str) -> dict:
    try:
        with httpx.Client(
            verify=ca_tls_context(), timeout=TIMEOUT_SECONDS, headers={"User-Agent": USER_AGENT}
        ) as client:
            with client.stream("GET", url) as response:
                body = b""
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > MAX_DIRECTORY_BYTES:
                        raise DirectoryUnavailable(
                            f"the ACME directory at {url} is larger than {MAX_DIRECTORY_BYTES // 1024} KiB"
                        )
    except httpx.HTTPError as exc:
        raise DirectoryUnavailable(
            f"the ACME directory at {url} could not be read: {network_problem(exc)}"
        ) from None
    if response.status_code != 200:
        raise DirectoryUnavailable(f"the ACME directory at {url} answered HTTP {response.status_code}")
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise DirectoryUnavailable(f"the ACME directory at {url} is not a JSON object")
    return document


def network_problem(exc: httpx.HTTPError) -> str:
    """What went wrong on the way to the CA, in plain words."""
    if isinstance(exc, httpx.TimeoutException):
        return "no answer in time"
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect ({exc})" if str(exc) else "cannot connect"
    return str(exc) or type(exc).__name__
