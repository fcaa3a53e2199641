"""Pebble (Let's Encrypt's test CA) and pebble-challtestsrv (its mock DNS), from Debian's `pebble` package."""

from __future__ import annotations

import datetime
import itertools
import json
import os
import shutil
import ssl
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from devstack.processes import ManagedProcess, http_ok, tcp_open
from devstack.tls import write_localhost_tls

NINETY_DAYS = 90 * 24 * 3600


def require_binaries() -> None:
    missing = [name for name in ("pebble", "pebble-challtestsrv") if shutil.which(name) is None]
    if missing:
        raise RuntimeError(
            f"{', '.join(missing)} not found: install Debian's package with `apt-get install -y pebble`"
        )


def _fqdn(host: str) -> str:
    return host if host.endswith(".") else f"{host}."


@dataclass
class ChallTestSrv:
    """Client of pebble-challtestsrv's management API: the mock DNS that Pebble (and we) resolve through."""

    management_url: str

    def _post(self, path: str, payload: dict) -> bytes:
        request = urllib.request.Request(
            f"{self.management_url}/{path}", data=json.dumps(payload).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.read()

    def add_a(self, host: str, addresses: list[str]) -> None:
        self._post("add-a", {"host": host, "addresses": addresses})

    def clear_a(self, host: str) -> None:
        self._post("clear-a", {"host": host})

    def add_aaaa(self, host: str, addresses: list[str]) -> None:
        self._post("add-aaaa", {"host": host, "addresses": addresses})

    def clear_aaaa(self, host: str) -> None:
        self._post("clear-aaaa", {"host": host})

    def set_cname(self, host: str, target: str) -> None:
        self._post("set-cname", {"host": host, "target": target})

    def clear_cname(self, host: str) -> None:
        self._post("clear-cname", {"host": host})

    def add_caa(self, host: str, policies: list[dict]) -> None:
        """`policies` as challtestsrv takes them: [{"tag": "issue", "value": "letsencrypt.org"}]."""
        self._post("add-caa", {"host": host, "policies": policies})

    def clear_caa(self, host: str) -> None:
        self._post("clear-caa", {"host": host})

    def set_txt(self, host: str, value: str) -> None:
        # Unlike the other record types, challtestsrv keys TXT records by the fully qualified name.
        self._post("set-txt", {"host": _fqdn(host), "value": value})

    def clear_txt(self, host: str) -> None:
        self._post("clear-txt", {"host": _fqdn(host)})

    def set_servfail(self, host: str) -> None:
        self._post("set-servfail", {"host": host})

    def clear_servfail(self, host: str) -> None:
        self._post("clear-servfail", {"host": host})

    def dns_request_history(self, host: str) -> list[dict]:
        return json.loads(self._post("dns-request-history", {"host": host}) or b"[]")

    def clear_request_history(self, host: str) -> None:
        self._post("clear-request-history", {"host": host, "type": "dns"})

    def clear_all(self, host: str) -> None:
        """Forgets every record of `host`."""
        for path in ("clear-a", "clear-aaaa", "clear-cname", "clear-caa", "clear-servfail"):
            self._post(path, {"host": host})
        self.clear_txt(host)


@dataclass
class PebbleStack:
    """One Pebble and one challtestsrv on the given ports, with state (config, TLS, logs) in `state_dir`."""

    state_dir: Path
    acme_port: int
    management_port: int
    dns_port: int
    challtestsrv_port: int
    http01_port: int
    tls_alpn_port: int
    env: dict[str, str] = field(default_factory=dict)
    validity_seconds: int = NINETY_DAYS
    # Where every listener binds: loopback, or a bridge address that simulated hosts reach.
    host: str = "127.0.0.1"
    # External Account Binding: when given, Pebble requires it, with these key ids and HMAC keys
    # (base64url, as a CA hands them out).
    eab_keys: dict[str, str] = field(default_factory=dict)
    # False: another stack's challtestsrv already serves `dns_port` (a second CA, same DNS).
    own_challtestsrv: bool = True
    processes: list[ManagedProcess] = field(default_factory=list)

    @property
    def directory_url(self) -> str:
        return f"https://{self.host}:{self.acme_port}/dir"

    @property
    def management_url(self) -> str:
        return f"https://{self.host}:{self.management_port}"

    @property
    def listener_ca_path(self) -> Path:
        return self.state_dir / "tls" / "ca.pem"

    @property
    def challtestsrv(self) -> ChallTestSrv:
        return ChallTestSrv(f"http://{self.host}:{self.challtestsrv_port}")

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.listener_ca_path))

    def write_config(self) -> Path:
        _, cert, key = write_localhost_tls(self.state_dir / "tls", [self.host])
        config = {
            "pebble": {
                "listenAddress": f"{self.host}:{self.acme_port}",
                "managementListenAddress": f"{self.host}:{self.management_port}",
                "certificate": str(cert),
                "privateKey": str(key),
                "httpPort": self.http01_port,
                "tlsPort": self.tls_alpn_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": bool(self.eab_keys),
                "externalAccountMACKeys": self.eab_keys,
                "certificateValidityPeriod": self.validity_seconds,
            }
        }
        path = self.state_dir / "pebble-config.json"
        path.write_text(json.dumps(config, indent=2))
        return path

    def start(self) -> PebbleStack:
        require_binaries()
        logs = self.state_dir / "logs"
        config = self.write_config()
        if self.own_challtestsrv:
            challtestsrv = ManagedProcess(
                "challtestsrv",
                [
                    "pebble-challtestsrv",
                    # Without these, every unknown name resolves to 127.0.0.1 and ::1.
                    "-defaultIPv4",
                    "",
                    "-defaultIPv6",
                    "",
                    "-dns01",
                    f"{self.host}:{self.dns_port}",
                    "-management",
                    f"{self.host}:{self.challtestsrv_port}",
                    "-http01",
                    "",
                    "-https01",
                    "",
                    "-tlsalpn01",
                    "",
                ],
                logs,
            ).start()
            self.processes.append(challtestsrv)
            challtestsrv.wait_until(lambda: tcp_open(self.host, self.challtestsrv_port), what="listening")
        pebble_env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", **self.env}
        pebble = ManagedProcess(
            "pebble",
            ["pebble", "-config", str(config), "-dnsserver", f"{self.host}:{self.dns_port}", "-strict=false"],
            logs,
            env=pebble_env,
        ).start()
        self.processes.append(pebble)
        context = self.ssl_context()
        pebble.wait_until(lambda: http_ok(self.directory_url, context), what="serving its directory")
        return self

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()

    def root_pem(self) -> bytes:
        """Pebble's root, regenerated at every start (its management API serves it)."""
        with urllib.request.urlopen(
            f"{self.management_url}/roots/0", timeout=5, context=self.ssl_context()
        ) as response:
            return response.read()


def trust_root(
    path: Path,
    root_pem: bytes,
    certificate_validity: datetime.timedelta,
    now: datetime.datetime | None = None,
) -> int:
    """Adds this Pebble's root to the roots file, after the earlier Pebbles' roots: what they issued
    stays verifiable (Pebble makes a new root at every start, and a restarted stack keeps serving
    their certificates). A root is dropped once no certificate it issued can still be valid: its
    Pebble stopped before the next one started, so at most `certificate_validity` after the next
    root was made. Returns how many roots the file holds; an unreadable file starts afresh."""
    now = now or datetime.datetime.now(datetime.UTC)
    try:
        roots = x509.load_pem_x509_certificates(path.read_bytes())
    except (FileNotFoundError, ValueError):
        roots = []
    new = x509.load_pem_x509_certificate(root_pem)
    roots = [root for root in roots if root != new] + [new]
    kept = [
        root
        for root, successor in itertools.pairwise(roots)
        if successor.not_valid_before_utc + certificate_validity > now
    ] + [new]
    path.parent.mkdir(parents=True, exist_ok=True)
    # The web and worker processes re-read the file when it changes: never let them see half of it.
    partial = path.with_name(path.name + ".new")
    partial.write_bytes(b"".join(root.public_bytes(serialization.Encoding.PEM) for root in kept))
    partial.replace(path)
    return len(kept)
