"""The agent against Certwright's own feed service (gunicorn's ASGI worker on the test database):
snapshot, a change committed in the database reaching the files driver, the custom certificate's
expiry switched by the agent's timer, a restart resuming from the cursor, and a deleted domain removed."""

from __future__ import annotations

import datetime
import hashlib
import json
import uuid

import pytest
from cryptography.hazmat.primitives import serialization

from api.routers import create_router_token
from certificates.models import CertificateSource
from certificates.sealing import seal
from tests.edge.conftest import wait_for
from tests.factories import CertificateFactory, DomainFactory
from tests.pki import key_pem

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]


def real_certificate(pki, domain, *, source=CertificateSource.LETSENCRYPT, not_after=None):
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    not_before = now - datetime.timedelta(days=1)
    not_after = (not_after or now + datetime.timedelta(days=90)).replace(microsecond=0)
    leaf, key = pki.leaf([domain.name], not_before=not_before, not_after=not_after)
    return CertificateFactory(
        domain=domain,
        source=source,
        fullchain_pem=pki.chain_pem(leaf).decode(),
        private_key=seal(key_pem(key)),
        not_before=not_before,
        not_after=not_after,
        serial=f"{leaf.serial_number:x}",
        fingerprint_sha256=hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest(),
    )


def index_of(out):
    try:
        return json.loads((out / "index.json").read_text())
    except FileNotFoundError:
        return {}


def test_the_agent_follows_certwrights_feed_service(feed_server, start_agent, pki, tmp_path):
    token = create_router_token(f"edge-{uuid.uuid4().hex[:6]}")
    domain = DomainFactory(name=f"www.edge-{uuid.uuid4().hex[:8]}.com")
    letsencrypt = real_certificate(pki, domain)
    out = tmp_path / "files"

    agent = start_agent(feed_server.url, "--driver", "files", "--files-dir", str(out), token=token)
    wait_for(
        lambda: index_of(out).get(domain.name, {}).get("fingerprint") == letsencrypt.fingerprint_sha256,
        what="the snapshot's certificate in the files driver",
    )
    pem = (out / index_of(out)[domain.name]["file"]).read_text()
    assert pem.startswith(letsencrypt.fullchain_pem)
    assert "PRIVATE KEY-----" in pem

    # An upload expiring in a few seconds: the feed brings it, the agent's timer takes it away at T.
    expiry = datetime.datetime.now(datetime.UTC).replace(microsecond=0) + datetime.timedelta(seconds=5)
    custom = real_certificate(pki, domain, source=CertificateSource.CUSTOM, not_after=expiry)
    wait_for(
        lambda: index_of(out)[domain.name]["fingerprint"] == custom.fingerprint_sha256,
        what="the custom certificate",
    )
    wait_for(
        lambda: index_of(out)[domain.name]["fingerprint"] == letsencrypt.fingerprint_sha256,
        timeout=10,
        what="the switch back at the custom certificate's expiry",
    )
    # The driver writes the files before the agent logs the switch: the line may follow a moment later.
    switched = f"switched {domain.name} to {letsencrypt.fingerprint_sha256[:16]}"
    wait_for(lambda: switched in agent.log_since_start(), timeout=5, what="the switch's log line")
    assert f"(due {expiry.isoformat()})" in agent.log_since_start()

    agent.stop()
    other = DomainFactory(name=f"shop.edge-{uuid.uuid4().hex[:8]}.com", app=domain.app)
    other_certificate = real_certificate(pki, other)
    agent = start_agent(
        feed_server.url, "--driver", "files", "--files-dir", str(out), token=token, store=agent.store
    )
    wait_for(lambda: other.name in index_of(out), what="a change made while the agent was stopped")
    assert index_of(out)[other.name]["fingerprint"] == other_certificate.fingerprint_sha256
    assert "resuming after cursor" in agent.log_since_start()
    assert "taking a snapshot" not in agent.log_since_start()

    domain.delete()
    wait_for(lambda: domain.name not in index_of(out), what="the deleted domain's removal")
    assert not (out / f"{domain.name}.pem").exists()
    assert token not in agent.log_path.read_text()
