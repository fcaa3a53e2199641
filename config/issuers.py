"""The ACME issuers, in order, as the settings read them (`ACME_ISSUERS`, or the single issuer the
ACME_* variables describe). Pure parsing: no Django, no database; `certificates/issuers.py` is what
the product uses.

ACME_ISSUERS is a JSON list, first issuer first; each entry::

    {"name": "letsencrypt",                          # [a-z0-9-], at most 32, unique
     "directory": "https://acme-v02.api.letsencrypt.org/directory",
     "caa": ["letsencrypt.org"],                     # the CAA issuer domain names it answers to
     "ca_bundle": "/etc/certwright/ca.pem",          # optional: how its API's TLS is verified
     "roots": "/etc/certwright/roots.pem",           # optional: roots its chains lead to, beyond certifi's
     "eab_kid": "kid-1", "eab_hmac_key": "...",      # optional: External Account Binding (RFC 8555 7.3.4)
     "limits": "letsencrypt"}                        # optional: "letsencrypt" (default when caa names
                                                     # letsencrypt.org), "none", or its own:
                                                     # {"orders": 300, "period_seconds": 10800}

The HMAC key is a secret: no message here quotes it (nor the JSON around it).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

VARIABLE = "ACME_ISSUERS"
# Beyond this the variable is not an operator's list of CAs: refused before it is parsed.
MAX_LENGTH = 64 * 1024
MAX_ISSUERS = 8
NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$")
# An RFC 8659 issuer domain name: a domain, lower case.
CAA_IDENTITY = re.compile(
    r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"
)
FIELDS = {"name", "directory", "caa", "ca_bundle", "roots", "eab_kid", "eab_hmac_key", "limits"}
# Whose rate limits an issuer's orders spend (domains/quota_policy.py): Let's Encrypt's buckets,
# none (the CA enforces its own; its 429s are still honoured), or its own: at most `orders` new
# orders per `period_seconds` at that issuer, all domains together ("own").
LIMITS = ("letsencrypt", "none")
MAX_LIMIT_PERIOD_SECONDS = 366 * 86400
LETSENCRYPT_CAA = "letsencrypt.org"
# Where the single issuer of a deployment without ACME_ISSUERS is named.
DEFAULT_NAME = "letsencrypt"


@dataclass(frozen=True)
class IssuerSetting:
    """One issuer as configured."""

    name: str
    directory_url: str
    caa_identities: tuple[str, ...]
    ca_bundle: str = ""
    roots: str = ""
    eab_kid: str = ""
    eab_hmac_key: str = ""
    limits: str = "letsencrypt"
    # For limits "own": new orders allowed per period at this issuer.
    orders_limit: int = 0
    orders_period_seconds: int = 0

    @property
    def has_eab(self) -> bool:
        return bool(self.eab_kid)

    def __repr__(self) -> str:
        # Never the HMAC key.
        return f"IssuerSetting(name={self.name!r}, directory_url={self.directory_url!r})"


def parse_issuers(text: str) -> tuple[list[IssuerSetting], list[str]]:
    """The issuers of ACME_ISSUERS' `text`, and the problems found (each naming the entry and the
    field, never quoting a secret); an issuer with a problem is left out."""
    if len(text) > MAX_LENGTH:
        return [], [f"is longer than {MAX_LENGTH // 1024} KiB"]
    try:
        document = json.loads(text)
    except ValueError as exc:
        # The position only: the text may hold an HMAC key.
        return [], [f"is not JSON (line {exc.lineno}, column {exc.colno}); write a list of issuers"]
    if not isinstance(document, list) or not document:
        return [], ["must be a JSON list of issuers, first issuer first, with at least one"]
    if len(document) > MAX_ISSUERS:
        return [], [f"lists {len(document)} issuers; at most {MAX_ISSUERS}"]
    issuers: list[IssuerSetting] = []
    problems: list[str] = []
    for position, entry in enumerate(document, start=1):
        found, entry_problems = _issuer(position, entry)
        problems += entry_problems
        if found is not None:
            issuers.append(found)
    for attribute, what in (("name", "name"), ("directory_url", "directory")):
        seen: set[str] = set()
        for issuer in issuers:
            value = getattr(issuer, attribute)
            if value in seen:
                problems.append(f"two issuers have the {what} {value!r}; each must be different")
            seen.add(value)
    return issuers, problems


def _issuer(position: int, entry: object) -> tuple[IssuerSetting | None, list[str]]:
    where = f"issuer {position}"
    if not isinstance(entry, dict):
        return None, [f"{where} must be a JSON object"]
    problems: list[str] = []
    unknown = sorted(str(key) for key in entry if key not in FIELDS)
    if unknown:
        problems.append(
            f"{where} has unknown field(s) {', '.join(unknown)} (known: {', '.join(sorted(FIELDS))})"
        )
    name = entry.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        problems.append(f"{where} needs a name of lower-case letters, digits and dashes (at most 32)")
        name = None
    else:
        where = f"issuer {position} ({name})"
    directory = entry.get("directory")
    if (
        not isinstance(directory, str)
        or urlsplit(directory).scheme not in ("https", "http")
        or not urlsplit(directory).netloc
    ):
        problems.append(f"{where} needs a directory: the https URL of its ACME directory")
        directory = None
    caa = entry.get("caa")
    if isinstance(caa, str):
        caa = [caa]
    if not isinstance(caa, list) or not caa or not all(isinstance(item, str) for item in caa):
        problems.append(
            f'{where} needs caa: the CAA issuer domain names it answers to, as ["letsencrypt.org"]'
        )
        caa = None
    else:
        caa = [item.strip().lower() for item in caa]
        bad = [item for item in caa if not CAA_IDENTITY.match(item)]
        if bad:
            problems.append(f"{where}: caa {', '.join(repr(item) for item in bad)} is not a domain name")
    paths = {}
    for field in ("ca_bundle", "roots"):
        value = entry.get(field, "")
        if not isinstance(value, str):
            problems.append(f"{where}: {field} must be a file path")
            value = ""
        if field == "ca_bundle" and value and not os.path.isfile(value):
            problems.append(f"{where}: ca_bundle names a file that does not exist: {value}")
        paths[field] = value
    kid, hmac_key = entry.get("eab_kid", ""), entry.get("eab_hmac_key", "")
    if not isinstance(kid, str) or not isinstance(hmac_key, str) or bool(kid) != bool(hmac_key):
        problems.append(f"{where}: External Account Binding needs both eab_kid and eab_hmac_key (strings)")
        kid = hmac_key = ""
    elif hmac_key and not _hmac_key_ok(hmac_key):
        problems.append(f"{where}: eab_hmac_key is not base64url (as the CA gives it), or is empty")
    default_limits = "letsencrypt" if caa and LETSENCRYPT_CAA in caa else "none"
    limits = entry.get("limits", default_limits)
    orders = period = 0
    if isinstance(limits, dict):
        orders, period = limits.get("orders"), limits.get("period_seconds", 3600)
        valid = (
            set(limits) <= {"orders", "period_seconds"}
            and all(type(value) is int for value in (orders, period))
            and 0 < orders <= 1_000_000
            and 0 < period <= MAX_LIMIT_PERIOD_SECONDS
        )
        if not valid:
            problems.append(
                f'{where}: limits of its own are {{"orders": N, "period_seconds": S}} (N from 1 to '
                f"1000000, S from 1 to {MAX_LIMIT_PERIOD_SECONDS})"
            )
        limits = "own"
    elif limits not in LIMITS:
        problems.append(
            f'{where}: limits must be {" or ".join(LIMITS)}, or {{"orders": N, "period_seconds": S}}'
        )
    if problems or name is None or directory is None or caa is None:
        return None, problems
    return IssuerSetting(
        name, directory, tuple(caa), paths["ca_bundle"], paths["roots"], kid, hmac_key, limits, orders, period
    ), []


def _hmac_key_ok(key: str) -> bool:
    try:
        raw = base64.urlsafe_b64decode(key.encode("ascii") + b"=" * (-len(key) % 4))
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return False
    return bool(raw)
