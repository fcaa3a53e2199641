"""The failover benchmark's stack: the harness's (Redis, its own database, Pebble and challtestsrv,
web, worker and beat as `make run` starts them) with a second Pebble that requires External Account
Binding, both listed in ACME_ISSUERS as an operator would list them.

The second Pebble has its own ports, state and root, but resolves names through the first stack's
challtestsrv and validates HTTP-01 at the same web port, so a domain pointed at the platform once is
valid at either CA; stopping the primary stops its Pebble only, never the DNS both depend on.
"""

from __future__ import annotations

import base64
import json
import secrets
from pathlib import Path

from _harness import BenchStack, say

from devstack.pebble import ChallTestSrv, PebbleStack
from devstack.ports import free_port

PEBBLE_ENV = {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0", "PEBBLE_AUTHZREUSE": "0"}
PRIMARY = "primary"
SECOND = "second"
SECOND_CAA = "second-ca.example"
EAB_KID = "kid-certwright-bench"


class FailoverStack:
    """Two CAs, the primary first, and Certwright's processes configured with both."""

    def __init__(self, name: str, breaker_cooldown_seconds: int) -> None:
        self.bench = BenchStack(name)
        self.breaker_cooldown_seconds = breaker_cooldown_seconds
        self.eab_hmac_key = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
        self.second: PebbleStack | None = None

    @property
    def primary(self) -> PebbleStack:
        assert self.bench.pebble is not None
        return self.bench.pebble

    @property
    def challtestsrv(self) -> ChallTestSrv:
        return self.primary.challtestsrv

    def issuer_of(self, directory_url: str) -> str:
        """The issuer's name in ACME_ISSUERS for an account's directory URL."""
        assert self.second is not None
        return {self.primary.directory_url: PRIMARY, self.second.directory_url: SECOND}.get(
            directory_url, directory_url
        )

    def start(self) -> None:
        """Both CAs first (ACME_ISSUERS names files they write), then the database and Certwright."""
        self.bench.start_redis()
        self.bench.start_pebble(PEBBLE_ENV)
        self.second = PebbleStack(
            state_dir=self.bench.state_dir / "pebble-second",
            acme_port=free_port(),
            management_port=free_port(),
            dns_port=self.primary.dns_port,
            challtestsrv_port=self.primary.challtestsrv_port,
            http01_port=self.primary.http01_port,
            tls_alpn_port=free_port(),
            env=PEBBLE_ENV,
            eab_keys={EAB_KID: self.eab_hmac_key},
            own_challtestsrv=False,
        ).start()
        second_roots = self.second.state_dir / "roots.pem"
        second_roots.write_bytes(self.second.root_pem())
        self.bench.env.update(
            {
                "ACME_ISSUERS": self.issuers_json(second_roots),
                # The primary's directory, as the settings require when both are set.
                "ACME_DIRECTORY_URL": self.primary.directory_url,
                # Open long enough that the last phase runs entirely with the primary's breaker open.
                "ISSUER_BREAKER_COOLDOWN_SECONDS": str(self.breaker_cooldown_seconds),
            }
        )
        self.bench.prepare_database()
        self.bench.start_web()
        self.bench.start_worker("worker")
        # Retries after a failed order are the sweep's: beat runs as `make run` runs it.
        self.bench.start_beat()

    def issuers_json(self, second_roots: Path) -> str:
        assert self.second is not None
        return json.dumps(
            [
                {
                    "name": PRIMARY,
                    "directory": self.primary.directory_url,
                    "caa": ["letsencrypt.org"],
                    "ca_bundle": str(self.primary.listener_ca_path),
                    "roots": self.bench.env["EXTRA_TRUSTED_ROOTS"],
                },
                {
                    "name": SECOND,
                    "directory": self.second.directory_url,
                    "caa": [SECOND_CAA],
                    "ca_bundle": str(self.second.listener_ca_path),
                    "roots": str(second_roots),
                    "eab_kid": EAB_KID,
                    "eab_hmac_key": self.eab_hmac_key,
                },
            ]
        )

    def stop_primary(self) -> None:
        """Stops the primary's Pebble process; its challtestsrv (the second CA's DNS too) stays."""
        pebble = self.primary.processes.pop()
        pebble.stop()

    def close(self, keep: bool = False) -> None:
        """Stops every process; unless `keep`, drops the database and removes the state directory."""
        steps = [process.stop for process in reversed(self.bench.processes)]
        # Each process is stopped once: the harness's own stop then finds only the primary's DNS.
        steps.append(self.bench.processes.clear)
        if self.second is not None:
            steps.append(self.second.stop)
        steps.append(self.bench.stop if keep else self.bench.close)
        for step in steps:
            try:
                step()
            # A Ctrl-C here must not leave the rest running.
            except BaseException as exc:
                say(f"    while stopping: {exc!r}")
        if keep:
            say(f"    kept: database {self.bench.database}, state and logs in {self.bench.state_dir}")
