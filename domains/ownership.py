"""Takeover protection: proving that whoever adds a domain controls its DNS.

Pointing a name at the platform's shared addresses (or at the region's CNAME target) says nothing
about which app it is meant for: a customer who points DNS first and adds the domain later, or
removes a domain but leaves its records, would let any other app claim it and get a certificate.
A CNAME to the app's own hostname does say it. Otherwise the domain needs a TXT record
`_certwright-challenge.<name>` holding its ownership token before any certificate is ordered.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from django.conf import settings

CHALLENGE_LABEL = "_certwright-challenge"


def challenge_name(name: str) -> str:
    """Where the ownership TXT record of `name` lives (a wildcard's lives at its base name)."""
    return f"{CHALLENGE_LABEL}.{name.removeprefix('*.')}"


def ownership_token(app_id: int, name: str) -> str:
    """The token an app must publish for `name`: the same for the same app and name (so it can be
    shown before the domain is added, and survives removing and adding it again), different for
    every other app, and unguessable without SECRET_KEY. Stored with the domain when it is added,
    so that rotating SECRET_KEY changes no published record."""
    mac = hmac.new(
        settings.SECRET_KEY.encode(), f"certwright-ownership:{app_id}:{name}".encode(), hashlib.sha256
    )
    return "cw-" + base64.b32encode(mac.digest()[:20]).decode().lower()


def ownership_record(name: str, token: str) -> str:
    """The record to add, in zone-file form."""
    return f'{challenge_name(name)}. TXT "{token}"'


def ownership_message(name: str, token: str, app_hostname: str) -> str:
    return (
        f"{name} points at the platform's shared addresses, which any app could claim: prove it is "
        f"yours with the TXT record {ownership_record(name, token)} (or make it a CNAME to "
        f"{app_hostname}). No certificate is ordered until then."
    )
