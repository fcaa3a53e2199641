"""Two real certificate authorities for the issuer tests: the session's Pebble as the primary, and a
second Pebble, with a root of its own, that requires External Account Binding; both resolve names
through the session's challtestsrv and validate HTTP-01 at the session's web server.

`two_issuers(hmac_key=...)` points the test process (pytest-django's `settings`) and a Celery
worker of its own at both, through ACME_ISSUERS, as an operator would configure them."""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import dataclass

import pytest
from django.conf import settings as django_settings

from certificates.directory import forget_directories
from certificates.issuers import forget_sync
from config.issuers import parse_issuers
from devstack.pebble import PebbleStack
from devstack.ports import free_port
from devstack.processes import ManagedProcess
from tests.conftest import RUN_DIR, start_celery_worker

EAB_KID = "kid-certwright"
EAB_HMAC_KEY = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
SECOND_CAA = "second-ca.example"


@dataclass
class TwoIssuers:
    primary: PebbleStack
    second: PebbleStack
    worker: ManagedProcess
    text: str


@pytest.fixture(scope="session")
def second_pebble(pebble_stack):
    """The second CA: its own ports, state and root, the session's DNS, EAB required."""
    stack = PebbleStack(
        state_dir=RUN_DIR / "pebble-second",
        acme_port=free_port(),
        management_port=free_port(),
        dns_port=pebble_stack.dns_port,
        challtestsrv_port=pebble_stack.challtestsrv_port,
        http01_port=pebble_stack.http01_port,
        tls_alpn_port=free_port(),
        env={"PEBBLE_WFE_NONCEREJECT": "0", "PEBBLE_AUTHZREUSE": "0"},
        eab_keys={EAB_KID: EAB_HMAC_KEY},
        own_challtestsrv=False,
    ).start()
    (stack.state_dir / "roots.pem").write_bytes(stack.root_pem())
    yield stack
    stack.stop()


def issuers_text(
    primary: PebbleStack, second: PebbleStack, hmac_key: str = EAB_HMAC_KEY, primary_directory: str = ""
) -> str:
    return json.dumps(
        [
            {
                "name": "primary",
                "directory": primary_directory or primary.directory_url,
                "caa": ["letsencrypt.org"],
                "ca_bundle": str(primary.listener_ca_path),
                "roots": django_settings.EXTRA_TRUSTED_ROOTS,
            },
            {
                "name": "second",
                "directory": second.directory_url,
                "caa": [SECOND_CAA],
                "ca_bundle": str(second.listener_ca_path),
                "roots": str(second.state_dir / "roots.pem"),
                "eab_kid": EAB_KID,
                "eab_hmac_key": hmac_key,
            },
        ]
    )


@pytest.fixture
def two_issuers(pebble_stack, second_pebble, web_server, without_session_worker, settings):
    """A factory: `two_issuers()` (or with another `hmac_key`) configures both issuers in this
    process and starts a worker with the same ACME_ISSUERS; stopped afterwards."""
    started: list[ManagedProcess] = []

    def configure(
        hmac_key: str = EAB_HMAC_KEY, primary_directory: str = "", extra_env: dict[str, str] | None = None
    ) -> TwoIssuers:
        """`primary_directory`: the primary's directory when not the session Pebble's own (the
        test ACME proxy in front of it)."""
        text = issuers_text(pebble_stack, second_pebble, hmac_key, primary_directory)
        issuers, problems = parse_issuers(text)
        assert not problems, problems
        settings.ACME_ISSUERS = issuers
        settings.ACME_ISSUERS_SET = True
        settings.ACME_DIRECTORY_URL = issuers[0].directory_url
        forget_sync()
        forget_directories()
        env = {"ACME_ISSUERS": text, "ACME_DIRECTORY_URL": issuers[0].directory_url, **(extra_env or {})}
        worker = start_celery_worker(f"worker-issuers-{len(started)}", extra_env=env)
        started.append(worker)
        return TwoIssuers(pebble_stack, second_pebble, worker, text)

    yield configure
    for worker in started:
        worker.stop()
    forget_sync()
    forget_directories()
