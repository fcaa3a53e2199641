"""DNS-01 for wildcard domains, through a delegated record in a zone the platform controls.

A wildcard certificate can only be validated over DNS (RFC 8555 8.4: a TXT record at
`_acme-challenge.<base name>`), and that record changes with every order. So the customer adds,
once, a CNAME from it into the platform's zone (DNS01_ZONE):

    _acme-challenge.example.com.  CNAME  <label>.<DNS01_ZONE>.

and Certwright publishes each order's TXT value at the target, as cert-manager's and acme-dns's
CNAME delegation do. The label is derived from the domain's name, so the record never changes,
even across renewals and app moves. Let's Encrypt follows the CNAME (as Pebble does through
pebble-challtestsrv, which follows one level).

A name whose challenge record itself lies inside DNS01_ZONE (the platform's own `*.<region
suffix>`, when the suffix is in the platform's zone) needs no delegation: its TXT is published
at `_acme-challenge.<base>` directly. `txt_owner` is that one rule; publishing, cleaning up, the
pre-flight and the records shown all ask it. Customers cannot add names under DNS01_ZONE
(domains/services.py reserves it), so only the platform's names are published directly.

Where the TXT records are written (DNS01_PROVIDER):
- `rfc2136`: dynamic updates (RFC 2136), signed with TSIG (RFC 8945), to the zone's primary
  (DNS01_RFC2136_SERVER): BIND, Knot, PowerDNS and most DNS servers take them.
- `challtestsrv`: pebble-challtestsrv's management API (development and tests).
"""

from __future__ import annotations

import base64
import hashlib
import logging

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.tsig
import dns.tsigkeyring
import dns.update
import requests
from django.conf import settings

logger = logging.getLogger(__name__)

TTL = 60


class PublishFailed(Exception):
    """The platform's DNS did not take a challenge record."""


def enabled() -> bool:
    """Whether wildcards can be validated: the operator named the platform's challenge zone."""
    return bool(settings.DNS01_ZONE)


WILDCARD_MESSAGE = (
    "Wildcard certificates need DNS validation (a TXT record at _acme-challenge), which this platform "
    "has not enabled (its operator sets DNS01_ZONE); this domain waits until it is."
)


def parked_wildcard(name: str) -> bool:
    """A wildcard waits in action_required while the platform cannot validate it over DNS."""
    return name.startswith("*.") and not enabled()


def challenge_owner(name: str) -> str:
    """Where the CA looks for the TXT record of `name` (a wildcard's lives at its base name)."""
    return "_acme-challenge." + name.removeprefix("*.")


def in_zone(owner: str) -> bool:
    """Whether `owner` lies inside DNS01_ZONE (the zone itself included)."""
    zone = settings.DNS01_ZONE.strip(".").lower()
    owner = owner.strip(".").lower()
    return bool(zone) and (owner == zone or owner.endswith("." + zone))


def delegated(name: str) -> bool:
    """Whether `name`'s challenge record must be delegated by a CNAME into DNS01_ZONE (it lies
    outside the zone), rather than published where the CA looks."""
    return not in_zone(challenge_owner(name))


def txt_owner(name: str) -> str:
    """Where Certwright publishes the TXT record of `name`'s DNS-01 challenge: the challenge
    record itself when it lies inside DNS01_ZONE, else the target of its delegation."""
    return delegation_target(name) if delegated(name) else challenge_owner(name)


def delegation_target(name: str) -> str:
    """The name in DNS01_ZONE that `_acme-challenge.<base>` must be a CNAME to."""
    base = name.removeprefix("*.")
    digest = hashlib.sha256(f"certwright-dns01:{base}".encode()).digest()
    label = base64.b32encode(digest[:20]).decode().lower()
    return f"{label}.{settings.DNS01_ZONE.strip('.')}"


def txt_value(key_authorization: str) -> str:
    """The TXT record's value for a DNS-01 key authorization (RFC 8555 8.4)."""
    digest = hashlib.sha256(key_authorization.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def delegation_record(name: str) -> str:
    return f"{challenge_owner(name)}. CNAME {delegation_target(name)}."


class ChallTestSrv:
    """pebble-challtestsrv's mock DNS (its /set-txt and /clear-txt)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def _post(self, path: str, body: dict) -> None:
        try:
            response = requests.post(f"{self.url}{path}", json=body, timeout=5)
        except requests.RequestException as exc:
            problem = f"challtestsrv at {self.url} could not be reached ({type(exc).__name__})"
            raise PublishFailed(problem) from None
        if response.status_code != 200:
            raise PublishFailed(f"challtestsrv answered {response.status_code} to {path}")

    def publish(self, owner: str, value: str) -> None:
        # set-txt adds to what is there: start from nothing, so one value is published.
        self._post("/clear-txt", {"host": owner + "."})
        self._post("/set-txt", {"host": owner + ".", "value": value})

    def remove(self, owner: str) -> None:
        self._post("/clear-txt", {"host": owner + "."})


class Rfc2136:
    """Dynamic updates to the zone's primary server, TSIG-signed."""

    def __init__(self, server: str, zone: str, tsig: str) -> None:
        host, _, port = server.rpartition(":")
        self.host, self.port = host.strip("[]"), int(port)
        self.zone = dns.name.from_text(zone)
        self.keyring = self.keyname = self.algorithm = None
        if tsig:
            # "name:algorithm:base64 secret", as BIND's tsig-keygen prints them.
            keyname, algorithm, secret = tsig.split(":", 2)
            self.keyring = dns.tsigkeyring.from_text({keyname: (algorithm, secret)})
            self.keyname, self.algorithm = keyname, dns.name.from_text(algorithm)

    def _send(self, update: dns.update.UpdateMessage, what: str) -> None:
        try:
            response = dns.query.tcp(update, self.host, port=self.port, timeout=10)
        except dns.tsig.PeerError as exc:
            reason = {"PeerBadKey": "does not know the key", "PeerBadSignature": "rejects its signature"}
            problem = (
                f"{what}: the DNS server {reason.get(type(exc).__name__, 'refused the signature')} "
                f"({type(exc).__name__}): check DNS01_RFC2136_TSIG"
            )
            raise PublishFailed(problem) from None
        except (OSError, dns.exception.DNSException) as exc:
            problem = f"{what}: {self.host}:{self.port} did not answer ({type(exc).__name__})"
            raise PublishFailed(problem) from None
        if response.rcode() != dns.rcode.NOERROR:
            raise PublishFailed(f"{what}: the DNS server answered {dns.rcode.to_text(response.rcode())}")

    def _update(self) -> dns.update.UpdateMessage:
        return dns.update.UpdateMessage(
            self.zone, keyring=self.keyring, keyname=self.keyname, keyalgorithm=self.algorithm
        )

    def publish(self, owner: str, value: str) -> None:
        update = self._update()
        update.replace(dns.name.from_text(owner), TTL, "TXT", f'"{value}"')
        self._send(update, f"publishing the TXT record of {owner}")

    def remove(self, owner: str) -> None:
        update = self._update()
        update.delete(dns.name.from_text(owner), "TXT")
        self._send(update, f"removing the TXT record of {owner}")


def provider() -> ChallTestSrv | Rfc2136:
    if settings.DNS01_PROVIDER == "challtestsrv":
        return ChallTestSrv(settings.DNS01_CHALLTESTSRV_URL)
    return Rfc2136(settings.DNS01_RFC2136_SERVER, settings.DNS01_ZONE, settings.DNS01_RFC2136_TSIG)
