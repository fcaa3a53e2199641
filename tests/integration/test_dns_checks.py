"""Every diagnosis a customer can meet, from real DNS answers, with the status and schedule that
follow; the platform's own name without an address, held as the platform's problem; the CAA
pre-flight against Pebble; and concurrent sweeps that query each name once."""

from __future__ import annotations

import datetime
import logging
import threading
import uuid

import dns.rcode
import pytest
from django.db import connection
from django.utils import timezone

from certificates.models import Order
from domains.backoff import retry_delay
from domains.models import Domain, DomainStatus, WaitingOn
from domains.services import create_domain
from tests.dns_stub import DnsStub
from tests.factories import AppFactory, DomainFactory
from tests.integration.pointing import point_at_platform, point_by_cname
from tests.integration.polling import status_of, unique_name, wait_for
from workers import domain_checks
from workers.resolver import resolve_for_check

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def check_now(domain: Domain) -> Domain:
    """One check of one domain, in this process, exactly as a check task runs it."""
    # Claimed as the sweep claims, without sending a task, so no worker checks it at the same time.
    ids, token = domain_checks.claim_due()
    assert ids == [domain.pk]
    domain_checks.check_claimed([domain.pk], str(token))
    return Domain.objects.get(pk=domain.pk)


def pending(app, name: str) -> Domain:
    return DomainFactory(app=app, name=name, status=DomainStatus.PENDING_DNS, next_attempt_at=timezone.now())


@pytest.mark.parametrize(
    ("records", "phrases"),
    [
        ({}, ["has no A, AAAA or CNAME record", ". CNAME my-app.local.example-paas.io."]),
        ({"a": ["203.0.113.9"]}, ["has A record 203.0.113.9", "not an address of the platform (127.0.0.1)"]),
        (
            {"a": ["127.0.0.1"], "aaaa": ["2001:db8::99"]},
            ["AAAA record 2001:db8::99", "remove the AAAA record"],
        ),
        (
            {"cname": "other-app.local.example-paas.io"},
            ["which is another app of the platform, not this one"],
        ),
        (
            {"cname": "lb.other-host.example.net"},
            ["is a CNAME to lb.other-host.example.net, which has no address"],
        ),
    ],
    ids=["no-record", "wrong-address", "stray-aaaa", "cname-other-app", "cname-elsewhere"],
)
def test_each_dns_mistake_is_named_keeps_pending_dns_and_backs_off(pebble_stack, app, records, phrases):
    name = unique_name()
    dns = pebble_stack.challtestsrv
    if "a" in records:
        dns.add_a(name, records["a"])
    if "aaaa" in records:
        dns.add_aaaa(name, records["aaaa"])
    if "cname" in records:
        dns.set_cname(name, records["cname"])
    domain = check_now(pending(app, name))
    assert domain.status == DomainStatus.PENDING_DNS
    assert domain.waiting_on == WaitingOn.DNS
    for phrase in phrases:
        assert phrase in domain.last_error
    assert domain.consecutive_failures == 1
    assert domain.next_attempt_at == domain.last_checked_at + retry_delay(1)
    assert domain.claim_token is None


def test_a_cname_wanted_at_an_apex_asks_for_addresses_instead(pebble_stack, app):
    name = f"apex-{uuid.uuid4().hex[:8]}.com"
    domain = check_now(pending(app, name))
    assert "A CNAME is not allowed at a zone apex" in domain.last_error
    assert f"{name}. A 127.0.0.1" in domain.last_error


def test_nxdomain_says_the_name_does_not_exist(app, settings):
    with DnsStub() as stub:
        settings.DNS_RESOLVERS = [("127.0.0.1", stub.port)]
        domain = check_now(pending(app, unique_name()))
    assert "does not exist in DNS (NXDOMAIN)" in domain.last_error
    assert domain.consecutive_failures == 1
    assert stub.queries == 1, "the AAAA query is skipped once A says NXDOMAIN"


@pytest.mark.parametrize("failure", ["timeout", "servfail"])
def test_a_resolver_failure_is_retried_in_a_minute_without_counting_against_the_domain(
    pebble_stack, app, settings, failure
):
    name = unique_name()
    domain = pending(app, name)
    Domain.objects.filter(pk=domain.pk).update(consecutive_failures=3)
    if failure == "servfail":
        pebble_stack.challtestsrv.set_servfail(name)
        domain = check_now(domain)
        pebble_stack.challtestsrv.clear_servfail(name)
    else:
        settings.DNS_TIMEOUT_SECONDS = 0.3
        with DnsStub(rcode=None) as silent:
            settings.DNS_RESOLVERS = [("127.0.0.1", silent.port)]
            domain = check_now(domain)
        assert silent.queries >= 2, "a timed-out query is retried"
    assert f"({'SERVFAIL' if failure == 'servfail' else 'timeout'})" in domain.last_error
    assert "not counted against the domain" in domain.last_error
    assert domain.consecutive_failures == 3
    assert domain.next_attempt_at == domain.last_checked_at + datetime.timedelta(seconds=60)


def _queries(challtestsrv, name: str) -> tuple[int, int]:
    """How many A and AAAA queries challtestsrv answered for `name`."""
    history = challtestsrv.dns_request_history(name)
    return tuple(sum(1 for q in history if q["Question"]["Qtype"] == qtype) for qtype in (1, 28))


def test_a_cname_to_the_apps_hostname_is_settled_by_the_a_answer_that_carries_its_address(
    pebble_stack, challtestsrv, app
):
    other = AppFactory(name=f"app-{uuid.uuid4().hex[:8]}", region=app.region)
    name = unique_name()
    point_by_cname(challtestsrv, other, name)
    accepted = frozenset({other.default_hostname, app.region.cname_target})
    lookups, *_ = resolve_for_check([name], {name: accepted}, lambda lookup: False)
    assert lookups[name].cnames == (other.default_hostname,)
    assert lookups[name].a == ("127.0.0.1",)
    assert _queries(challtestsrv, name) == (1, 0), "no AAAA query once the A answer settles it"


def test_a_cname_to_the_apps_hostname_without_an_address_is_the_platforms_problem_not_the_customers(
    pebble_stack, challtestsrv, app, caplog
):
    # The app's hostname has no record in the mock DNS: the platform's DNS is broken for it.
    other = AppFactory(name=f"app-{uuid.uuid4().hex[:8]}", region=app.region)
    name = unique_name()
    challtestsrv.set_cname(name, f"{other.default_hostname}.")
    domain = pending(other, name)
    Domain.objects.filter(pk=domain.pk).update(consecutive_failures=2)
    with caplog.at_level(logging.WARNING, logger="workers.resolver"):
        domain = check_now(domain)
    assert domain.status == DomainStatus.PENDING_DNS
    assert f"{name} is a CNAME to {other.default_hostname}, which has no address" in domain.last_error
    assert "your record is right" in domain.last_error
    assert domain.consecutive_failures == 2, "not counted against the customer"
    assert domain.next_attempt_at == domain.last_checked_at + datetime.timedelta(seconds=60)
    assert not Order.objects.filter(domain=domain).exists()
    assert _queries(challtestsrv, name) == (1, 1), "the AAAA query looks for an IPv6 address"
    assert any(
        f"the platform's name {other.default_hostname} has no address" in record.getMessage()
        and name in record.getMessage()
        for record in caplog.records
    ), "the operators are told in the logs"


def test_a_cname_to_the_apps_hostname_that_does_not_exist_is_the_platforms_problem_in_one_query(
    app, settings
):
    # A recursive resolver answers NXDOMAIN with the chain when its last name does not exist.
    with DnsStub(rcode=dns.rcode.NXDOMAIN, cname_to=app.default_hostname) as stub:
        settings.DNS_RESOLVERS = [("127.0.0.1", stub.port)]
        domain = check_now(pending(app, unique_name()))
    assert f"is a CNAME to {app.default_hostname}, which does not exist (NXDOMAIN)" in domain.last_error
    assert domain.consecutive_failures == 0
    assert domain.next_attempt_at == domain.last_checked_at + datetime.timedelta(seconds=60)
    assert stub.queries == 1, "the AAAA query is skipped once A says NXDOMAIN"


def _orders_placed_at_pebble(stack) -> int:
    return (stack.state_dir / "logs" / "pebble.log").read_text().count("POST /order-plz")


def test_caa_for_another_ca_blocks_without_contacting_the_ca_until_the_right_record_is_added(
    issuance_stack, challtestsrv, app
):
    parent = f"caa-{uuid.uuid4().hex[:8]}.example.com"
    name = f"www.{parent}"
    point_at_platform(challtestsrv, app, name)
    challtestsrv.add_caa(parent, [{"tag": "issue", "value": "otherca.example"}])
    orders_before = _orders_placed_at_pebble(issuance_stack)
    domain = create_domain(app, name)
    wait_for(lambda: Domain.objects.get(pk=domain.pk).last_checked_at, what="the first check")
    domain.refresh_from_db()
    assert domain.status == DomainStatus.ACTION_REQUIRED
    assert domain.waiting_on == WaitingOn.CAA
    assert f'Add {parent}. CAA 0 issue "letsencrypt.org"' in domain.last_error
    assert not Order.objects.filter(domain=domain).exists()
    assert _orders_placed_at_pebble(issuance_stack) == orders_before

    challtestsrv.clear_caa(parent)
    challtestsrv.add_caa(
        parent, [{"tag": "issue", "value": "otherca.example"}, {"tag": "issue", "value": "letsencrypt.org"}]
    )
    Domain.objects.filter(pk=domain.pk).update(next_attempt_at=timezone.now())
    domain_checks.sweep()
    wait_for(lambda: status_of(domain) == DomainStatus.IN_USE, what="in_use once CAA allows it")


def test_caa_accounturi_naming_another_account_blocks(pebble_stack, challtestsrv, app):
    name = unique_name()
    point_at_platform(challtestsrv, app, name)
    challtestsrv.add_caa(
        name, [{"tag": "issue", "value": "letsencrypt.org; accounturi=https://127.0.0.1/my-account/999"}]
    )
    domain = check_now(pending(app, name))
    assert domain.status == DomainStatus.ACTION_REQUIRED
    assert "allows another ACME account only" in domain.last_error
    assert not Order.objects.filter(domain=domain).exists()


def test_two_concurrent_sweeps_query_each_name_exactly_once(celery_worker, challtestsrv, app):
    run = uuid.uuid4().hex[:6]
    names = [f"d{i}-{run}.sweep.example.com" for i in range(1000)]
    past = timezone.now() - datetime.timedelta(minutes=1)
    Domain.objects.bulk_create(
        [Domain(app=app, name=n, status=DomainStatus.PENDING_DNS, next_attempt_at=past) for n in names]
    )
    barrier = threading.Barrier(2)
    claimed = []

    def sweep():
        barrier.wait()
        try:
            claimed.append(domain_checks.sweep())
        finally:
            connection.close()

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(claimed) == 1000
    wait_for(
        lambda: not Domain.objects.filter(app=app, last_checked_at__isnull=True).exists(),
        timeout=60,
        what="every domain checked",
    )
    for name in names:
        history = challtestsrv.dns_request_history(name)
        a_queries = [q for q in history if q["Question"]["Qtype"] == 1]
        aaaa_queries = [q for q in history if q["Question"]["Qtype"] == 28]
        assert (len(a_queries), len(aaaa_queries)) == (1, 1), name
