"""Failing over between two real CAs (tests/issuers/two_cas.py): with the primary stopped, a new
domain is issued by the second CA and served through a real router; with the primary back (a
restarted Pebble: a new root, the platform's account forgotten) the next renewal comes from the
primary again. A 429 from the primary whose Retry-After is two days away (the test ACME proxy in
front of it) sends the domain to the second CA at once, and leaves the primary's registered-domain
bucket as the 429 set it."""

from __future__ import annotations

import datetime
import os
import threading
import uuid
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from api.routers import create_router_token
from certificates.acme_client import get_account
from certificates.models import ACTIVE_ORDER_STATES, Certificate, Order
from devstack.acme_proxy import AcmeProxy
from devstack.pebble import trust_root
from devstack.processes import http_ok
from devstack.router import CertificateCache, make_server
from domains import quota_policy
from domains.claims import renew_now
from domains.models import Domain, DomainStatus
from domains.services import create_domain
from tests.integration.pointing import point_at_platform
from tests.integration.polling import status_of, wait_for
from tests.integration.tls import fingerprint, shown

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def router():
    """The demo router in this process, on a free port, asking the routers' endpoint every time."""
    endpoint = f"http://127.0.0.1:{os.environ['CERTWRIGHT_TEST_HTTP01_PORT']}/routers/v1/certificate"
    server = make_server(
        ("127.0.0.1", 0), CertificateCache(endpoint, create_router_token("failover"), max_cache_seconds=0)
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def stoppable_primary(pebble_stack):
    """The session Pebble's CA process (not its challtestsrv, which the second CA resolves through),
    to stop and start again; started again (with its new root trusted) whatever the test did."""
    pebble = pebble_stack.processes[-1]

    def start() -> None:
        pebble.start()
        pebble.wait_until(lambda: http_ok(pebble_stack.directory_url, pebble_stack.ssl_context()), what="up")
        # A restarted Pebble has a new root: trusted after the earlier ones, as an operator would.
        validity = datetime.timedelta(seconds=pebble_stack.validity_seconds)
        trust_root(Path(django_settings.EXTRA_TRUSTED_ROOTS), pebble_stack.root_pem(), validity)

    yield pebble, start
    if not pebble.alive():
        start()


def _newest(domain: Domain) -> Certificate:
    return Certificate.objects.select_related("account").filter(domain=domain).latest("created")


def test_with_the_primary_stopped_the_second_ca_issues_and_serves_and_the_primary_renews_once_back(
    two_issuers, stoppable_primary, challtestsrv, app, router
):
    cas = two_issuers()
    pebble, start_primary = stoppable_primary
    name = f"www.failover-{uuid.uuid4().hex[:8]}.com"
    point_at_platform(challtestsrv, app, name)
    # The platform's account at the primary exists, as it would have for long: the order is placed.
    get_account(cas.primary.directory_url)
    pebble.stop()

    domain = create_domain(app, name)
    wait_for(lambda: status_of(domain) == DomainStatus.IN_USE, timeout=60, what="in_use from the second CA")

    first = _newest(domain)
    assert first.account.directory_url == cas.second.directory_url
    # The order at the primary ended on the CA's side, counted against nobody.
    failed = Order.objects.get(domain=domain, account__directory_url=cas.primary.directory_url)
    assert failed.state == "invalid" and "next certificate authority" in failed.problem
    domain.refresh_from_db()
    assert domain.consecutive_failures == 0 and domain.avoid_issuers == []
    # Served: a TLS client trusting only the second CA's root gets it through the router.
    seen, answer = shown(router, name, cas.second.root_pem().decode())
    assert fingerprint(seen) == first.fingerprint_sha256 and answer.startswith(b"HTTP/1.1 200")

    start_primary()

    def renewed_once() -> bool:
        # The restarted CA forgot the platform's account: the first renewal order starts over
        # (a new account is registered) and, with no beat here, the test asks for the next one.
        if not Order.objects.filter(domain=domain, state__in=ACTIVE_ORDER_STATES).exists():
            renew_now(domain.pk)
        return Certificate.objects.filter(domain=domain).count() == 2

    wait_for(
        renewed_once,
        timeout=60,
        what="the renewal",
        describe=lambda: Domain.objects.get(pk=domain.pk).last_error,
    )
    renewed = _newest(domain)
    assert renewed.account.directory_url == cas.primary.directory_url
    # No CA replaces another CA's certificate.
    assert not Order.objects.get(domain=domain, renews=first, state="valid").replaces
    seen, _ = shown(router, name, cas.primary.root_pem().decode())
    assert fingerprint(seen) == renewed.fingerprint_sha256


def test_a_429_with_a_retry_after_of_two_days_sends_the_domain_to_the_second_ca_at_once(
    two_issuers, pebble_stack, challtestsrv, app
):
    registered = f"rl-{uuid.uuid4().hex[:8]}.com"
    name = f"www.{registered}"
    point_at_platform(challtestsrv, app, name)
    with AcmeProxy.in_front_of(pebble_stack) as proxy:
        cas = two_issuers(primary_directory=proxy.directory_url)
        retry_at = timezone.now() + datetime.timedelta(days=2)
        proxy.refuse_new_orders(
            f'too many certificates (50) already issued for "{registered}" in the last 168h0m0s, retry after '
            f"{retry_at:%Y-%m-%d %H:%M:%S} UTC: see https://letsencrypt.org/docs/rate-limits/",
            retry_after=str(2 * 86400),
        )
        domain = create_domain(app, name)
        wait_for(
            lambda: status_of(domain) == DomainStatus.IN_USE, timeout=60, what="in_use from the second CA"
        )

        assert _newest(domain).account.directory_url == cas.second.directory_url
        refused = Order.objects.get(domain=domain, account__directory_url=proxy.directory_url)
        assert "rate limited" in refused.problem
        assert proxy.new_orders_for(name) == 1
        # The primary's bucket for the registered domain stays empty until the 429's time.
        bucket = quota_policy.registered_domain_bucket(registered)
        assert quota_policy.get_quota().peek(bucket).tokens_left == 0
