"""The platform's own certificate, end to end with the production DNS-01 provider: a region whose
suffix lies in the platform's zone gets `*.<suffix>` from Pebble over DNS-01, with the TXT record
published by RFC 2136 (TSIG-signed) into a real BIND at `_acme-challenge.<suffix>` itself (no
delegation), Pebble validating by asking that BIND; the routers' endpoint then serves it for an
app's hostname, and a TLS client verifying against Pebble's root completes a handshake through a
router for `my-app.<suffix>`.

The first test runs its own Pebble (resolving through BIND, not challtestsrv) and its own Celery worker
(whose resolvers, ACME directory and DNS-01 provider are this BIND and this Pebble); the session's
worker is stopped meanwhile so that no task lands on a worker configured otherwise. The second is
`make run`'s path: the session's Pebble and challtestsrv, a suffix outside DNS01_ZONE, so the
platform's name takes the one-time CNAME delegation, which the devstack's mock DNS publishes.
"""

from __future__ import annotations

import base64
import os
import shutil
import threading

import dns.message
import dns.query
import dns.rdatatype
import pytest
import requests
from cryptography import x509

from api.routers import create_router_token
from certificates import dns01
from certificates.models import Certificate, CertificateSource, Challenge, ChallengeKind, Order, OrderState
from devstack.pebble import PebbleStack
from devstack.platform_dns import PlatformDns
from devstack.ports import free_port, free_tcp_udp_port
from devstack.processes import ManagedProcess, http_ok, tcp_open
from devstack.router import CertificateCache, make_server
from domains.models import Domain, DomainStatus
from domains.platform import ensure_platform_domains
from domains.services import retry_now
from tests.conftest import RUN_DIR, start_celery_worker
from tests.factories import AppFactory, RegionFactory
from tests.integration.polling import status_of, wait_for
from tests.integration.tls import fingerprint, shown

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

ZONE = "example-paas.io"
SUFFIX = f"plat.{ZONE}"
WILDCARD = f"*.{SUFFIX}"
APP_HOSTNAME = f"my-app.{SUFFIX}"
NAMED = shutil.which("named") or "/usr/sbin/named"


@pytest.fixture
def bind(tmp_path):
    """named, authoritative for the platform's zone (`*.<suffix>` at this machine, updates signed
    with one TSIG key) and for `io` (empty, so that the CAA search up the tree gets answers):
    (port, tsig, process)."""
    assert os.path.exists(NAMED), "named is missing: devstack/bootstrap.sh installs Debian's bind9"
    directory = tmp_path / "bind"
    directory.mkdir()
    port = free_tcp_udp_port()
    secret = base64.b64encode(os.urandom(32)).decode()
    soa = "$TTL 60\n@ IN SOA ns.{0}. hostmaster.{0}. 1 60 60 600 60\n@ IN NS ns.{0}.\n"
    (directory / "platform.db").write_text(soa.format(ZONE) + "ns IN A 127.0.0.1\n*.plat IN A 127.0.0.1\n")
    (directory / "io.db").write_text(soa.format("io") + "ns IN A 127.0.0.1\n")
    (directory / "named.conf").write_text(
        f'options {{\n  directory "{directory}";\n  pid-file "{directory}/named.pid";\n'
        f'  session-keyfile "{directory}/session.key";\n  managed-keys-directory "{directory}";\n'
        f"  listen-on port {port} {{ 127.0.0.1; }};\n  listen-on-v6 {{ none; }};\n"
        "  recursion no;\n  dnssec-validation no;\n};\n"
        f'controls {{ }};\nkey "certwright" {{ algorithm hmac-sha256; secret "{secret}"; }};\n'
        f'zone "{ZONE}" {{ type primary; file "{directory}/platform.db";\n'
        '  allow-update { key "certwright"; }; };\n'
        f'zone "io" {{ type primary; file "{directory}/io.db"; }};\n'
    )
    process = ManagedProcess(
        "named-platform", [NAMED, "-g", "-n", "1", "-c", str(directory / "named.conf")], RUN_DIR / "logs"
    )
    process.start()
    process.wait_until(lambda: tcp_open("127.0.0.1", port), timeout=30, what="listening")
    yield port, f"certwright:hmac-sha256:{secret}", process
    process.stop()


@pytest.fixture
def pebble_on_bind(bind, tmp_path):
    """A Pebble of its own whose DNS is the BIND above (the session's asks challtestsrv)."""
    dns_port = bind[0]
    stack = PebbleStack(
        state_dir=tmp_path / "pebble",
        acme_port=free_port(),
        management_port=free_port(),
        dns_port=dns_port,
        challtestsrv_port=free_port(),
        http01_port=free_port(),
        tls_alpn_port=free_port(),
    )
    config = stack.write_config()
    process = ManagedProcess(
        "pebble-platform",
        ["pebble", "-config", str(config), "-dnsserver", f"127.0.0.1:{dns_port}", "-strict=false"],
        RUN_DIR / "logs",
        env={**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0", "PEBBLE_AUTHZREUSE": "0"},
    ).start()
    process.wait_until(
        lambda: http_ok(stack.directory_url, stack.ssl_context()), what="serving its directory"
    )
    yield stack
    process.stop()


@pytest.fixture
def platform_worker(bind, pebble_on_bind, without_session_worker, web_server, settings, tmp_path):
    """A worker whose ACME CA is the Pebble above and whose DNS (resolvers and RFC 2136 updates)
    is the BIND above, with the platform's zone as DNS01_ZONE."""
    port, tsig, _ = bind
    roots = tmp_path / "roots.pem"
    roots.write_bytes(pebble_on_bind.root_pem())
    env = {
        "ACME_DIRECTORY_URL": pebble_on_bind.directory_url,
        "ACME_CA_BUNDLE": str(pebble_on_bind.listener_ca_path),
        "EXTRA_TRUSTED_ROOTS": str(roots),
        "DNS_RESOLVERS": f"127.0.0.1:{port}",
        "DNS01_ZONE": ZONE,
        "DNS01_PROVIDER": "rfc2136",
        "DNS01_RFC2136_SERVER": f"127.0.0.1:{port}",
        "DNS01_RFC2136_TSIG": tsig,
    }
    # This process decides what a new domain waits for (and what customers may add) the same way.
    settings.DNS01_ZONE = ZONE
    worker = start_celery_worker("worker-platform", extra_env=env)
    yield worker
    worker.stop()


def _txt(port: int, owner: str) -> list[str]:
    response = dns.query.udp(dns.message.make_query(owner + ".", dns.rdatatype.TXT), "127.0.0.1", port=port)
    return [b"".join(r.strings).decode() for rrset in response.answer for r in rrset]


@pytest.fixture
def router():
    """The demo router on a free port, asking the web app's routers' endpoint for each name."""
    endpoint = f"http://127.0.0.1:{os.environ['CERTWRIGHT_TEST_HTTP01_PORT']}/routers/v1/certificate"
    cache = CertificateCache(endpoint, create_router_token("platform-test"), max_cache_seconds=0)
    server = make_server(("127.0.0.1", 0), cache)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], cache
    server.shutdown()
    server.server_close()


def test_the_regions_wildcard_is_issued_over_dns01_in_the_platforms_zone_and_served_for_app_hostnames(
    bind, pebble_on_bind, platform_worker, router
):
    port, _, named = bind
    region = RegionFactory(
        name="plat",
        domain_suffix=SUFFIX,
        cname_target=f"ingress.{SUFFIX}",
        ingress_ipv4=["127.0.0.1"],
        ingress_ipv6=[],
    )
    AppFactory(region=region, name="my-app")
    assert [change.what for change in ensure_platform_domains()] == ["created"]
    domain = Domain.objects.get(name=WILDCARD)

    def status():
        return Domain.objects.filter(pk=domain.pk).values("status", "last_error").first()

    wait_for(lambda: status()["status"] == DomainStatus.IN_USE, timeout=60, what="in use", describe=status)

    certificate = Certificate.objects.get(domain=domain, source=CertificateSource.LETSENCRYPT)
    assert certificate.sans == [WILDCARD]
    challenge = Challenge.objects.get(order__domain=domain)
    assert (challenge.kind, challenge.identifier) == (ChallengeKind.DNS_01, WILDCARD)
    assert Order.objects.get(domain=domain).state == OrderState.VALID
    # Published by a signed dynamic update at the challenge record itself, then removed.
    log = named.log_since_start()
    assert f"adding an RR at '_acme-challenge.{SUFFIX}' TXT" in log, named.log_tail()
    assert f"deleting rrset at '_acme-challenge.{SUFFIX}' TXT" in log, named.log_tail()
    assert _txt(port, f"_acme-challenge.{SUFFIX}") == []

    # The routers' endpoint hands it out for an app's hostname.
    endpoint = f"http://127.0.0.1:{os.environ['CERTWRIGHT_TEST_HTTP01_PORT']}/routers/v1/certificate"
    token = create_router_token("platform-endpoint")
    answer = requests.get(
        endpoint,
        params={"server_name": APP_HOSTNAME},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert answer.status_code == 200
    assert answer.headers["X-Certificate-Domain"] == WILDCARD
    assert answer.headers["X-Certificate-Fingerprint"] == certificate.fingerprint_sha256
    leaf = x509.load_pem_x509_certificates(answer.content)[0]
    assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    ) == [WILDCARD]

    # A real handshake through a router, verifying the chain and the name against Pebble's root.
    router_port, _ = router
    pebble_root = pebble_on_bind.root_pem().decode()
    seen, response = shown(router_port, APP_HOSTNAME, pebble_root)
    assert fingerprint(seen) == certificate.fingerprint_sha256
    assert response.startswith(b"HTTP/1.1 200 OK")
    # The suffix itself is not covered by the wildcard: nothing is served for it.
    assert (
        requests.get(
            endpoint, params={"server_name": SUFFIX}, headers={"Authorization": f"Bearer {token}"}, timeout=10
        ).status_code
        == 204
    )


def test_make_runs_mock_dns_gets_the_platform_certificate_through_the_delegation_outside_the_zone(
    issuance_stack, challtestsrv, quota_redis
):
    suffix = "devplat.example-paas.io"
    region = RegionFactory(
        name="devplat",
        domain_suffix=suffix,
        cname_target=f"ingress.{suffix}",
        ingress_ipv4=["127.0.0.1"],
        ingress_ipv6=[],
    )
    app = AppFactory(region=region, name="my-app")
    platform_dns = PlatformDns(challtestsrv)
    # Before the platform's domain exists, the mock DNS holds no wildcard or delegation for it.
    platform_dns.sync()
    assert f"*.{suffix}" not in platform_dns.published and not platform_dns.delegations
    ensure_platform_domains()
    domain = Domain.objects.get(name=f"*.{suffix}")
    assert dns01.delegated(domain.name)
    platform_dns.sync()
    assert platform_dns.published[f"*.{suffix}"] == (("127.0.0.1",), ())
    assert platform_dns.delegations == {f"_acme-challenge.{suffix}": dns01.delegation_target(domain.name)}
    # The platform's app has no hostname of its own in DNS; customers' apps do.
    assert set(platform_dns.published) == {f"*.{suffix}", f"ingress.{suffix}", app.default_hostname}
    # The first check may have run before the records were there: as beat's tick would, later.
    retry_now(domain)
    wait_for(
        lambda: status_of(domain) == DomainStatus.IN_USE,
        timeout=60,
        what="the platform certificate in use",
        describe=lambda: Domain.objects.filter(pk=domain.pk).values("status", "last_error").first(),
    )
    certificate = Certificate.objects.get(domain=domain, source=CertificateSource.LETSENCRYPT)
    assert certificate.sans == [f"*.{suffix}"]
