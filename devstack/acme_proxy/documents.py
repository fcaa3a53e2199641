"""What the proxy speaks: constants, ACME problem documents, requests and responses, and the
small parsers the proxy, its connections and its control API share."""

from __future__ import annotations

import base64
import datetime
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import josepy as jose

ERROR = "urn:ietf:params:acme:error:"
DEFAULT_PROFILES: dict[str, datetime.timedelta] = {
    "classic": datetime.timedelta(days=90),
    "tlsserver": datetime.timedelta(days=45),
    "shortlived": datetime.timedelta(hours=160),
}
# Boulder's Retry-After on renewalInfo: six hours.
DEFAULT_RENEWAL_INFO_RETRY_AFTER = 21600
RENEWAL_INFO_PATH = "/renewal-info"
CONTROL_PATH = "/_proxy/"
# Pebble 2.4's paths.
DIRECTORY_PATH = "/dir"
NEW_ORDER_PATH = "/order-plz"
NEW_NONCE_PATH = "/nonce-plz"
CERTIFICATE_PATH = "/certZ/"
FINALIZE_PATH = "/finalize-order/"
ORDER_PATH = "/my-order/"

# Caps on what a request may make the proxy hold: a request head, a body (ACME bodies are a few KiB),
# a renewalInfo certID (an AKI of at most 64 octets and a serial of at most 21).
MAX_HEAD_BYTES = 16 * 1024
MAX_BODY_BYTES = 1024 * 1024
MAX_CERT_ID_CHARS = 200
UPSTREAM_TIMEOUT_SECONDS = 30.0
UPSTREAM_CLIENTS = 16
UPSTREAM_CONNECTIONS_PER_CLIENT = 4

_B64URL = re.compile(r"[A-Za-z0-9_-]+")
# Headers that belong to one hop, never forwarded; and the ones the proxy writes itself.
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"}
)
_OWN_RESPONSE_HEADERS = _HOP_BY_HOP | {"content-length", "date", "server", "content-encoding"}

AccountKey = Callable[[str], jose.JWK]


def rfc3339(moment: datetime.datetime) -> str:
    """`moment` in UTC, to the second, as RFC 3339 with a Z."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> datetime.datetime:
    """An RFC 3339 timestamp with its offset (or Z); ValueError otherwise."""
    moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset")
    return moment


def default_window(
    not_before: datetime.datetime, not_after: datetime.datetime
) -> tuple[datetime.datetime, datetime.datetime]:
    """The window Let's Encrypt suggests for a certificate nobody moved: from two thirds of its
    lifetime (half under 10 days), for a ninth of its lifetime."""
    lifetime = not_after - not_before
    start = not_before + (lifetime / 2 if lifetime < datetime.timedelta(days=10) else lifetime * 2 / 3)
    return start, start + lifetime / 9


def well_formed_cert_id(cert_id: str) -> bool:
    """Whether `cert_id` has RFC 9773's shape: two unpadded base64url parts, a dot between."""
    if len(cert_id) > MAX_CERT_ID_CHARS:
        return False
    key_id, dot, serial = cert_id.partition(".")
    if not dot:
        return False
    for part in (key_id, serial):
        # A length of 1 mod 4 is no whole number of octets.
        if not _B64URL.fullmatch(part) or len(part) % 4 == 1:
            return False
    return True


def cert_id_serial(cert_id: str) -> str:
    """The serial a well-formed certID names, as Boulder prints serials (36 hexadecimal digits)."""
    octets = _b64decode(cert_id.partition(".")[2])
    return format(int.from_bytes(octets, "big"), "036x")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class SeenCertificate:
    """A certificate the proxy saw a client download."""

    cert_id: str
    account: str  # the kid of the account that downloaded it
    not_before: datetime.datetime
    not_after: datetime.datetime
    serial: str  # hexadecimal
    names: list[str]
    replaced_by: str = ""  # the URL of the finalized order that named it in `replaces`
    revoked: bool = False
    seen_at: float = 0.0  # time.time() when the proxy saw it downloaded


@dataclass
class Window:
    start: datetime.datetime
    end: datetime.datetime
    explanation_url: str | None = None


@dataclass
class RateLimit:
    """The 429 to send instead of Pebble's answer to the next `times` newOrder requests."""

    detail: str
    retry_after: str
    times: int = 1
    exempts_renewals: bool = True


@dataclass
class _Failure:
    status: int
    times: int
    retry_after: int | None = None


@dataclass
class Request:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes
    keep_alive: bool

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


class _Refusal(Exception):
    """A problem document the proxy answers a newOrder with instead of forwarding it."""

    def __init__(self, status: int, kind: str, detail: str, headers: list[tuple[str, str]] | None = None):
        super().__init__(detail)
        self.status, self.kind, self.detail, self.headers = status, kind, detail, headers or []


def _json(status: int, document: Any, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(
        status, [("Content-Type", "application/json"), *(headers or [])], json.dumps(document).encode()
    )


def problem(status: int, kind: str, detail: str, headers: list[tuple[str, str]] | None = None) -> Response:
    """An ACME problem document (RFC 8555 section 6.7) of `kind` (e.g. "malformed")."""
    document = {"type": ERROR + kind, "detail": detail, "status": status}
    return Response(
        status,
        [("Content-Type", "application/problem+json"), *(headers or [])],
        json.dumps(document).encode(),
    )


def _describe(lifetime: datetime.timedelta) -> str:
    hours = lifetime.total_seconds() / 3600
    if hours % 24 == 0:
        return f"certificates valid for {int(hours // 24)} days"
    return f"certificates valid for {hours:g} hours"


def _covers(names: list[str], name: str) -> bool:
    """Whether a certificate for `names` covers `name` (a wildcard covers one label)."""
    if name in names:
        return True
    _, dot, rest = name.partition(".")
    return bool(dot) and f"*.{rest}" in names


def _jws_parts(body: bytes) -> tuple[dict, dict]:
    """The protected header and the payload of a flattened JWS (the payload {} when empty, as in a
    POST-as-GET)."""
    document = json.loads(body)
    protected = json.loads(_b64decode(document["protected"]))
    payload = json.loads(_b64decode(document["payload"])) if document["payload"] else {}
    if not isinstance(protected, dict) or not isinstance(payload, dict):
        raise TypeError("the protected header and the payload are JSON objects")
    return protected, payload


def _json_field(body: bytes, name: str) -> str:
    """A string field of a JSON object body; empty when there is none."""
    try:
        document = json.loads(body)
    except ValueError:
        return ""
    value = document.get(name) if isinstance(document, dict) else None
    return value if isinstance(value, str) else ""


def _with_order_fields(response: Response, order: dict[str, Any]) -> Response:
    try:
        document = json.loads(response.body)
    except ValueError:
        return response
    if not isinstance(document, dict):
        return response
    if order["replaces"]:
        document["replaces"] = order["replaces"]
    if order["profile"]:
        document["profile"] = order["profile"]
    return Response(response.status, response.headers, json.dumps(document).encode())


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"
