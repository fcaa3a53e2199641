"""The edge end to end: Certwright (Pebble issuing, the web and worker, the feed service) -> the real
`certwright-edge` agent -> a real HAProxy, each change seen in a verifying TLS handshake and HAProxy
never reloaded: issuance, the renewal switch, an upload, its removal, the domain's deletion; a custom
certificate's expiry applied by the agent's own timer; HAProxy restarted after 200 changes serving the
same set; a region-scoped router; a revoked token (the router keeps serving)."""

from __future__ import annotations

import datetime
import json
import re
import time
import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from django.utils import timezone

from api.models import ApiToken
from api.routers import create_router_token
from api.tokens import revoke_token
from certificates.facts import certificate_facts
from certificates.models import Certificate, CertificateSource
from certificates.serving import served_certificate
from certificates.store import store_certificate
from domains.claims import renew_now
from domains.custom_certificates import install_custom_certificate, remove_custom_certificate
from domains.models import Domain
from domains.services import delete_domain
from tests.edge.conftest import wait_for
from tests.edge.haproxy_process import presented, restart_haproxy
from tests.factories import DomainFactory, RegionFactory
from tests.integration.polling import issued
from tests.pki import key_pem

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def seen(port: int, name: str, cafile: str, fingerprint: str | None, what: str, timeout: float = 10) -> None:
    wait_for(lambda: presented(port, name, cafile) == fingerprint, timeout=timeout, what=what)


def _store_real(domain, pki, source: str, not_before=None, not_after=None) -> Certificate:
    """A real certificate of the test PKI stored for the domain as the given source, directly (the
    upload checks refuse a certificate about to expire, which the expiry test needs)."""
    leaf, key = pki.leaf([domain.name], not_before=not_before, not_after=not_after)
    facts = certificate_facts([leaf, pki.intermediate])
    return store_certificate(domain.pk, source, facts, key_pem(key), timezone.now())


def test_issue_renewal_upload_removal_and_deletion_each_reach_haproxy_without_reload(
    issuance_stack, challtestsrv, app, feed_server, start_agent, haproxy, trusted, tmp_path
):
    process, port, options = haproxy
    pid = process.pid
    pebble_root = tmp_path / "pebble-root.pem"
    pebble_root.write_bytes(issuance_stack.root_pem())
    test_root = tmp_path / "test-root.pem"
    test_root.write_bytes(trusted.root.public_bytes(serialization.Encoding.PEM))
    agent = start_agent(feed_server.url, *options, token=create_router_token("edge-e2e"))
    name = f"www.edge-{uuid.uuid4().hex[:10]}.com"

    domain, first = issued(challtestsrv, app, name)
    seen(port, name, pebble_root, first.fingerprint_sha256, "the issued certificate served")

    assert renew_now(domain.pk)
    renewed = wait_for(
        lambda: Certificate.objects.filter(domain=domain).exclude(pk=first.pk).first(),
        timeout=60,
        what="the renewal",
    )
    seen(port, name, pebble_root, renewed.fingerprint_sha256, "the renewed certificate served")

    leaf, key = trusted.leaf([name])
    custom = install_custom_certificate(domain, trusted.chain_pem(leaf), key=key_pem(key))
    seen(port, name, test_root, custom.fingerprint_sha256, "the upload served")

    remove_custom_certificate(domain)
    seen(port, name, pebble_root, renewed.fingerprint_sha256, "Let's Encrypt's again after the removal")

    delete_domain(domain)
    seen(port, name, pebble_root, None, "nothing served after the deletion (strict-sni refuses)")
    assert process.pid == pid and process.alive(), "HAProxy was restarted or reloaded"
    assert "PRIVATE KEY" not in agent.log_since_start()


def test_a_custom_certificate_expiring_at_t_gives_way_to_lets_encrypt_at_t_by_the_agents_timer(
    feed_server, start_agent, haproxy, pki, tmp_path
):
    _process, port, options = haproxy
    root = pki.write_root(tmp_path / "root.pem")
    domain = DomainFactory(name=f"expiry-{uuid.uuid4().hex[:8]}.example.com")
    lets_encrypt = _store_real(domain, pki, CertificateSource.LETSENCRYPT)
    # Whole seconds: a certificate's validity has a resolution of one second.
    t = (timezone.now() + datetime.timedelta(seconds=8)).replace(microsecond=0)
    custom = _store_real(domain, pki, CertificateSource.CUSTOM, not_after=t)
    agent = start_agent(feed_server.url, *options, token=create_router_token("edge-expiry"))
    seen(port, domain.name, root, custom.fingerprint_sha256, "the custom certificate served")

    def sleep_until(moment: datetime.datetime) -> None:
        time.sleep(max(0.0, (moment - timezone.now()).total_seconds()))

    sleep_until(t - datetime.timedelta(seconds=1))
    assert presented(port, domain.name, root) == custom.fingerprint_sha256, "switched before T"
    sleep_until(t + datetime.timedelta(seconds=2))
    assert presented(port, domain.name, root) == lets_encrypt.fingerprint_sha256, "not switched at T+2 s"
    line = next(
        line for line in agent.log_since_start().splitlines() if "switched" in line and domain.name in line
    )
    applied = datetime.datetime.fromisoformat(re.search(r" at (\S+)", line).group(1))
    assert abs((applied - t).total_seconds()) <= 1.0, line


def test_haproxy_restarted_after_200_changes_serves_exactly_the_same_set(
    feed_server, start_agent, haproxy, pki, tmp_path
):
    process, port, options = haproxy
    root = pki.write_root(tmp_path / "root.pem")
    start_agent(feed_server.url, *options, token=create_router_token("edge-200"))
    prefix = uuid.uuid4().hex[:8]
    domains = [DomainFactory(name=f"n{i}-{prefix}.example.com") for i in range(40)]
    changes = 0
    for round_ in range(5):  # 40 issues, then 4 rounds of 40 replacements, removals and re-issues
        for i, domain in enumerate(domains):
            if round_ and i % 4 == round_ - 1:
                Certificate.objects.filter(domain=domain).delete()
            else:
                _store_real(domain, pki, CertificateSource.LETSENCRYPT)
            changes += 1
    assert changes == 200
    expected = {}
    for domain in domains:
        certificate = served_certificate(domain.name)
        expected[domain.name] = certificate.fingerprint_sha256 if certificate else None
    # The last name's final state is "not served", which is also what HAProxy says before the agent
    # has applied anything, so the wait is for the whole set, not for one name.
    wait_for(
        lambda: {name: presented(port, name, root) for name in expected} == expected,
        timeout=60,
        what="all 200 changes served",
    )

    process = restart_haproxy(process)
    try:
        assert {name: presented(port, name, root) for name in expected} == expected
    finally:
        process.stop()


def test_a_router_scoped_to_a_region_never_holds_another_regions_certificate(
    feed_server, start_agent, haproxy, pki, tmp_path
):
    _process, port, options = haproxy
    root = pki.write_root(tmp_path / "root.pem")
    here = RegionFactory(name="edge-here", domain_suffix="edge-here.example-paas.io")
    there = RegionFactory(name="edge-there", domain_suffix="edge-there.example-paas.io")
    mine = DomainFactory(name=f"mine-{uuid.uuid4().hex[:8]}.example.com", app__region=here)
    theirs = DomainFactory(name=f"theirs-{uuid.uuid4().hex[:8]}.example.com", app__region=there)
    _store_real(theirs, pki, CertificateSource.LETSENCRYPT)
    store = tmp_path / "scoped-store"
    start_agent(feed_server.url, *options, store=store, token=create_router_token("edge-here", [here.id]))
    mine_certificate = _store_real(mine, pki, CertificateSource.LETSENCRYPT)
    seen(port, mine.name, root, mine_certificate.fingerprint_sha256, "the region's certificate served")
    _store_real(theirs, pki, CertificateSource.CUSTOM)
    assert presented(port, theirs.name, root) is None
    held = "".join(path.read_text(errors="replace") for path in Path(store).rglob("*") if path.is_file())
    assert mine.name in held and theirs.name not in held


def test_a_revoked_token_stops_the_feed_at_once_while_the_router_keeps_serving(
    feed_server, start_agent, haproxy, pki, tmp_path
):
    _process, port, options = haproxy
    root = pki.write_root(tmp_path / "root.pem")
    domain = DomainFactory(name=f"revoked-{uuid.uuid4().hex[:8]}.example.com")
    certificate = _store_real(domain, pki, CertificateSource.LETSENCRYPT)
    agent = start_agent(feed_server.url, *options, token=create_router_token("edge-to-revoke"))
    seen(port, domain.name, root, certificate.fingerprint_sha256, "served before the revocation")
    time.sleep(0.5)  # the agent is in its long-poll
    revoke_token(ApiToken.objects.get(name="edge-to-revoke"))
    wait_for(lambda: "401" in agent.log_since_start(), timeout=5, what="the agent told of the revocation")
    _store_real(DomainFactory(name=f"later-{uuid.uuid4().hex[:8]}.example.com"), pki, "letsencrypt")
    assert presented(port, domain.name, root) == certificate.fingerprint_sha256


def test_app_hostnames_get_the_regions_platform_wildcard_certificate_through_haproxy(
    feed_server, start_agent, haproxy, pki, tmp_path
):
    from domains.platform import ensure_platform_domain

    _process, port, options = haproxy
    root = pki.write_root(tmp_path / "root.pem")
    region = RegionFactory(name="edge-apps", domain_suffix="edge-apps.example-paas.io")
    ensure_platform_domain(region)
    platform = Domain.objects.get(name="*.edge-apps.example-paas.io")
    wildcard = _store_real(platform, pki, CertificateSource.LETSENCRYPT)
    customer = DomainFactory(name=f"shop-{uuid.uuid4().hex[:8]}.example.com", app__region=region)
    own = _store_real(customer, pki, CertificateSource.LETSENCRYPT)
    start_agent(feed_server.url, *options, token=create_router_token("edge-apps"))
    seen(port, "my-app.edge-apps.example-paas.io", root, wildcard.fingerprint_sha256, "the app hostname")
    assert presented(port, "other-app.edge-apps.example-paas.io", root) == wildcard.fingerprint_sha256
    assert presented(port, customer.name, root) == own.fingerprint_sha256
    # One label only, and not the suffix itself: those names get no certificate at all.
    assert presented(port, "a.b.edge-apps.example-paas.io", root) is None
    assert presented(port, "edge-apps.example-paas.io", root) is None


def test_the_files_driver_holds_exactly_what_certwright_serves_each_pem_and_the_index(
    feed_server, start_agent, pki, tmp_path
):
    prefix = uuid.uuid4().hex[:8]
    domains = [DomainFactory(name=f"f{i}-{prefix}.example.com") for i in range(6)]
    for domain in domains[:5]:
        _store_real(domain, pki, CertificateSource.LETSENCRYPT)
    leaf, key = pki.leaf([domains[0].name])
    custom = store_certificate(
        domains[0].pk,
        CertificateSource.CUSTOM,
        certificate_facts([leaf, pki.intermediate]),
        key_pem(key),
        timezone.now(),
    )
    Domain.objects.filter(pk=domains[1].pk).update(letsencrypt_enabled=False)  # serves nothing now
    files = tmp_path / "files"
    agent = start_agent(
        feed_server.url,
        "--driver",
        "files",
        "--files-dir",
        str(files),
        token=create_router_token("edge-files"),
    )
    wanted = {d.name: c.fingerprint_sha256 for d in domains if (c := served_certificate(d.name)) is not None}
    assert wanted[domains[0].name] == custom.fingerprint_sha256 and domains[1].name not in wanted

    def index() -> dict:
        try:
            return json.loads((files / "index.json").read_text())
        except (FileNotFoundError, ValueError):
            return {}

    wait_for(
        lambda: {n: e["fingerprint"] for n, e in index().items() if prefix in n} == wanted,
        what="the index to match what is served",
    )
    for name, entry in index().items():
        if prefix not in name:
            continue
        path = files / entry["file"]
        assert path.stat().st_mode & 0o777 == 0o600
        certificate = Certificate.objects.get(fingerprint_sha256=entry["fingerprint"])
        body = path.read_text()
        assert body.startswith(certificate.fullchain_pem.strip())
        assert body.rstrip().endswith(certificate.private_key.reveal().decode().strip())
    assert "PRIVATE KEY" not in agent.log_since_start()
