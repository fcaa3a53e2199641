"""What an ACME CA's directory says beyond the URLs the `acme` library uses: the profiles it offers
(`meta.profiles`) and where it answers ACME Renewal Information (`renewalInfo`, RFC 9773).

The directory is read as raw JSON (the library's Directory drops fields it does not know) and kept
per directory URL per process for DIRECTORY_CACHE_SECONDS: the API checks a profile on every domain
creation, and the renewal and ARI sweeps ask about renewalInfo on every chunk, while a CA changes
its directory rarely (and a CA that starts or stops offering a resource is noticed within minutes).
A failed read is not cached, so the next caller tries again.
"""

from __future__ import annotations

import functools
import json
import ssl
import threading
import time
from dataclasses import dataclass

import certifi
import requests
from django.conf import settings

from certificates.acme_client import USER_AGENT
from certificates.histograms import ACME_REQUEST, observe
from certificates.issuers import issuer_of_url, tls_bundles, tls_verify

DIRECTORY_CACHE_SECONDS = 600.0
FETCH_TIMEOUT_SECONDS = 10.0
# A directory is a few hundred bytes; a CA answering more is refused before it is parsed.
MAX_DIRECTORY_BYTES = 64 * 1024


class DirectoryUnavailable(Exception):
    """The CA's directory could not be read (network, HTTP error, not a JSON directory); the
    message says why, in plain words."""


@dataclass(frozen=True)
class Directory:
    """The parts of a CA's directory Certwright reads beyond the library's."""

    url: str
    # Profile name -> the CA's description of it; empty when the CA offers no profiles.
    profiles: dict[str, str]
    # The renewalInfo base URL (RFC 9773 section 4.1); empty when the CA has no ARI.
    renewal_info: str


_cache: dict[str, tuple[float, Directory]] = {}
_lock = threading.Lock()


def ca_tls_context() -> ssl.SSLContext:
    """How the CAs' certificates are verified, as the ACME client does: the public roots plus every
    issuer's CA bundle (ACME_CA_BUNDLE, or Pebble's root in development). Built once per process
    and set of bundles (loading the roots costs milliseconds; a context is safe to share)."""
    return _tls_context(tuple(tls_bundles()))


@functools.cache
def _tls_context(bundles: tuple[str, ...]) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=certifi.where())
    for bundle in bundles:
        context.load_verify_locations(cafile=bundle)
    return context


def parse_directory(url: str, document: object) -> Directory:
    """The Directory of a parsed directory JSON document; DirectoryUnavailable when it is not one."""
    if not isinstance(document, dict):
        raise DirectoryUnavailable(f"{url} is not an ACME directory (not a JSON object)")
    if not isinstance(document.get("newOrder"), str):
        raise DirectoryUnavailable(f"{url} is not an ACME directory (no newOrder URL)")
    meta = document.get("meta")
    offered = meta.get("profiles") if isinstance(meta, dict) else None
    profiles = {str(name): str(text) for name, text in offered.items()} if isinstance(offered, dict) else {}
    renewal_info = document.get("renewalInfo")
    if not (isinstance(renewal_info, str) and renewal_info.startswith(("https://", "http://"))):
        # Anything but a web URL (javascript:, a number) is no ARI to follow.
        renewal_info = ""
    return Directory(url, profiles, renewal_info)


def directory(
    url: str | None = None, now: float | None = None, timeout: float = FETCH_TIMEOUT_SECONDS
) -> Directory:
    """The directory at `url` (default ACME_DIRECTORY_URL), from this process' cache when read in
    the last DIRECTORY_CACHE_SECONDS; raises DirectoryUnavailable."""
    url = url or settings.ACME_DIRECTORY_URL
    now = time.monotonic() if now is None else now
    with _lock:
        cached = _cache.get(url)
    if cached is not None and now - cached[0] < DIRECTORY_CACHE_SECONDS:
        return cached[1]
    found = parse_directory(url, _fetch(url, timeout))
    with _lock:
        _cache[url] = (now, found)
    return found


def renewal_info_base(url: str | None = None) -> str | None:
    """The directory's `renewalInfo` URL (RFC 9773 section 3), or None when the CA offers no ARI."""
    return directory(url).renewal_info or None


def forget_directories() -> None:
    """Empties this process' cache (tests that change what the CA offers)."""
    with _lock:
        _cache.clear()


def _fetch(url: str, timeout: float) -> object:
    started = time.monotonic()
    status: int | str = "error"
    try:
        with requests.get(
            url,
            timeout=timeout,
            verify=tls_verify(url),
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            stream=True,
        ) as response:
            status = response.status_code
            body = response.raw.read(MAX_DIRECTORY_BYTES + 1, decode_content=True)
    except requests.RequestException as exc:
        raise DirectoryUnavailable(
            f"the ACME directory at {url} could not be read: {network_problem(exc)}"
        ) from None
    finally:
        observe(ACME_REQUEST, time.monotonic() - started, (issuer_of_url(url), "directory", str(status)))
    if len(body) > MAX_DIRECTORY_BYTES:
        raise DirectoryUnavailable(
            f"the ACME directory at {url} is larger than {MAX_DIRECTORY_BYTES // 1024} KiB"
        )
    if status != 200:
        raise DirectoryUnavailable(f"the ACME directory at {url} answered HTTP {status}")
    try:
        return json.loads(body)
    except ValueError:
        raise DirectoryUnavailable(f"the ACME directory at {url} is not a JSON object") from None


def network_problem(exc: requests.RequestException) -> str:
    """What went wrong on the way to the CA, in plain words."""
    if isinstance(exc, requests.Timeout):
        return "no answer in time"
    if isinstance(exc, requests.exceptions.SSLError):
        return "its certificate is not trusted"
    if isinstance(exc, requests.ConnectionError):
        return "cannot connect"
    return type(exc).__name__
