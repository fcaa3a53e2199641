"""Reads and validates settings from the environment.

Every problem is collected and reported at once, each naming its variable, so that an operator
fixes a bad deployment in one round instead of one variable per restart. Values are never echoed
for secrets.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
from collections.abc import Mapping
from email.utils import getaddresses
from pathlib import Path
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class EnvReader:
    """Typed accessors over a mapping; errors pile up in `.errors` until `raise_if_invalid()`."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self.environ = os.environ if environ is None else environ
        self.errors: list[str] = []

    def _raw(self, name: str) -> str | None:
        value = self.environ.get(name)
        if value is None:
            return None
        value = value.strip()
        return value or None

    def fail(self, name: str, message: str) -> None:
        self.errors.append(f"{name}: {message}")

    def str(self, name: str, default: str | None = None, *, required: bool = False) -> str | None:
        value = self._raw(name)
        if value is None:
            if required:
                self.fail(name, "is required and not set")
            return default
        return value

    def bool(self, name: str, default: bool) -> bool:
        value = self._raw(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        self.fail(name, f"must be true or false, not {value!r}")
        return default

    def int(self, name: str, default: int, *, minimum: int | None = None) -> int:
        value = self._raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            self.fail(name, f"must be a whole number, not {value!r}")
            return default
        if minimum is not None and number < minimum:
            self.fail(name, f"must be at least {minimum}, not {number}")
            return default
        return number

    def float(self, name: str, default: float, *, minimum: float | None = None) -> float:
        value = self._raw(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            self.fail(name, f"must be a number, not {value!r}")
            return default
        if minimum is not None and number < minimum:
            self.fail(name, f"must be at least {minimum}, not {number}")
            return default
        return number

    def list(self, name: str, default: list[str] | None = None) -> list[str]:
        value = self._raw(name)
        if value is None:
            return list(default or [])
        return [item.strip() for item in value.split(",") if item.strip()]

    def url(self, name: str, schemes: tuple[str, ...], default: str | None = None, *, required: bool = False):
        value = self.str(name, default, required=required)
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in schemes or not parts.netloc:
            wanted = " or ".join(f"{scheme}://" for scheme in schemes)
            self.fail(name, f"must be a URL starting with {wanted}, not {_redact_url(value)!r}")
            return None
        return value

    def path(self, name: str, *, must_exist: bool = True) -> str | None:
        value = self.str(name)
        if value is None:
            return None
        if must_exist and not Path(value).is_file():
            self.fail(name, f"names a file that does not exist: {value!r}")
            return None
        return value

    def host_ports(self, name: str, *, required: bool = False) -> list[tuple[str, int]]:
        """A comma-separated list of `host:port` (IPv6 as `[addr]:port`); the port defaults to 53."""
        items = self.list(name)
        if not items:
            if required:
                self.fail(name, "is required and not set (a comma-separated list of host:port)")
            return []
        result = []
        for item in items:
            parsed = _parse_host_port(item)
            if parsed is None:
                self.fail(name, f"{item!r} is not host:port (write IPv6 as [2001:db8::53]:53)")
                continue
            result.append(parsed)
        return result

    def networks(self, name: str) -> tuple:
        """A comma-separated list of IP networks in CIDR form (a bare address is its own network)."""
        result = []
        for item in self.list(name):
            try:
                result.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                self.fail(name, f"{item!r} is not an IP network (write 10.0.0.0/8 or fd00::/8)")
        return tuple(result)

    def mail_pairs(self, name: str) -> list[tuple[str, str]]:
        """Comma-separated mail addresses, each `address` or `Name <address>` (Django's ADMINS)."""
        value = self._raw(name)
        if value is None:
            return []
        result = []
        for display, address in getaddresses([value]):
            if "@" not in address or any(c.isspace() for c in address):
                self.fail(
                    name, f"{address or display!r} is not a mail address (write Name <ops@example.com>)"
                )
                continue
            result.append((display or address, address))
        return result

    def fernet_keys(self, name: str) -> list[str]:
        keys = self.list(name)
        if not keys:
            self.fail(
                name,
                "is required and not set (comma-separated Fernet keys, newest first; make one with "
                "`python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'`)",
            )
            return []
        for position, key in enumerate(keys, start=1):
            try:
                raw = base64.urlsafe_b64decode(key.encode("ascii"))
            except (binascii.Error, UnicodeEncodeError):
                raw = b""
            if len(raw) != 32:
                self.fail(name, f"key number {position} is not a Fernet key (32 url-safe base64 bytes)")
        return keys

    def raise_if_invalid(self) -> None:
        if self.errors:
            lines = "\n  - ".join(self.errors)
            raise ImproperlyConfigured(
                f"Certwright cannot start; fix these environment variables:\n  - {lines}"
            )


def _parse_host_port(item: str) -> tuple[str, int] | None:
    if item.startswith("["):
        host, sep, rest = item[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ("53" if not rest else None)
        if not sep or port_text is None:
            return None
    elif item.count(":") == 1:
        host, port_text = item.split(":")
    elif ":" in item:
        # A bare IPv6 address without a port.
        host, port_text = item, "53"
    else:
        host, port_text = item, "53"
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        return None
    return host, int(port_text)


def _redact_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return value
