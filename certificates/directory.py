"""What an ACME CA's directory says beyond the URLs the `acme` library uses: the profiles it offers
(`meta.profiles`) and whether it answers ACME Renewal Information (`renewalInfo`, RFC 9773).

The directory is read as raw JSON (the library's Directory drops fields it does not know) and kept
per directory URL per process for DIRECTORY_CACHE_SECONDS: the API checks a profile on every
domain creation, and the renewal sweep asks about renewalInfo on every chunk, while a CA changes
its directory rarely. A failed fetch is not cached, so the next caller tries again.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass

import requests
from django.conf import settings

DIRECTORY_CACHE_SECONDS = 600
FETCH_TIMEOUT_SECONDS = 10
# A directory is a few hundred bytes; a CA answering megabytes is refused before it is parsed.
MAX_DIRECTORY_BYTES = 64 * 1024
USER_AGENT = "certwright/0.1 (directory)"


class DirectoryUnavailable(Exception):
    """The CA's directory could not be read (network, HTTP error, not a JSON directory)."""


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


def parse_directory(url: str, document: object) -> Directory:
    """The Directory of a parsed directory JSON document; DirectoryUnavailable when it is not one."""
    if not isinstance(document, dict) or not isinstance(document.get("newOrder"), str):
        raise DirectoryUnavailable(f"{url} is not an ACME directory (no newOrder URL)")
    meta = document.get("meta")
    offered = meta.get("profiles") if isinstance(meta, dict) else None
    profiles = {str(name): str(text) for name, text in offered.items()} if isinstance(offered, dict) else {}
    renewal_info = document.get("renewalInfo")
    return Directory(url, profiles, renewal_info if isinstance(renewal_info, str) else "")


def _fetch(url: str, timeout: float) -> Directory:
    try:
        with requests.get(
            url,
            timeout=timeout,
            verify=settings.ACME_CA_BUNDLE or True,
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            stream=True,
        ) as response:
            if response.status_code != 200:
                raise DirectoryUnavailable(f"{url} answered HTTP {response.status_code}")
            body = response.raw.read(MAX_DIRECTORY_BYTES + 1, decode_content=True)
    except requests.RequestException as exc:
        raise DirectoryUnavailable(f"{url} could not be reached ({type(exc).__name__})") from None
    if len(body) > MAX_DIRECTORY_BYTES:
        raise DirectoryUnavailable(f"{url} answered more than {MAX_DIRECTORY_BYTES} bytes")
    try:
        document = json.loads(body)
    except ValueError:
        raise DirectoryUnavailable(f"{url} did not answer JSON") from None
    return parse_directory(url, document)


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
    found = _fetch(url, timeout)
    with _lock:
        _cache[url] = (now, found)
    return found


def forget_directories() -> None:
    """Empties this process' cache (tests that change what the CA offers)."""
    with _lock:
        _cache.clear()
