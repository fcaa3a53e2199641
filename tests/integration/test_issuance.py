"""From "domain added" to "certificate in use", against Pebble validating HTTP-01 for real."""

from __future__ import annotations

import time

import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store
from django.utils import timezone

from certificates.models import Certificate, Challenge, Order, OrderState
from domains.backoff import retry_delay
from domains.models import Domain, DomainStatus
from domains.services import create_domain, delete_domain
from tests.integration.pointing import point_at_platform
from tests.integration.polling import status_of, unique_name, wait_for
from workers import domain_checks

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def make_due_and_sweep(domain: Domain) -> None:
    """What beat's next tick does once the domain's backoff has run out."""
    Domain.objects.filter(pk=domain.pk).update(next_attempt_at=timezone.now())
    assert domain_checks.sweep() >= 1


def test_domain_goes_from_pending_dns_to_in_use_once_its_record_points_at_the_platform(
    issuance_stack, challtestsrv, app
):
    name = unique_name()
    domain = create_domain(app, name)
    wait_for(lambda: Domain.objects.get(pk=domain.pk).last_checked_at, what="the first check")
    domain.refresh_from_db()
    assert domain.status == DomainStatus.PENDING_DNS
    assert f"{name} has no A, AAAA or CNAME record" in domain.last_error
    assert domain.consecutive_failures == 1

    point_at_platform(challtestsrv, app, name)
    make_due_and_sweep(domain)
    wait_for(lambda: status_of(domain) == DomainStatus.IN_USE, what="in_use")

    certificate = Certificate.objects.get(domain=domain)
    assert certificate.sans == [name]
    assert certificate.not_after - certificate.not_before > timezone.timedelta(days=89)
    chain = x509.load_pem_x509_certificates(certificate.fullchain_pem.encode())
    root = x509.load_pem_x509_certificate(issuance_stack.root_pem())
    verifier = PolicyBuilder().store(Store([root])).build_server_verifier(x509.DNSName(name))
    verifier.verify(chain[0], chain[1:])
    domain.refresh_from_db()
    assert (domain.consecutive_failures, domain.last_error, domain.next_attempt_at) == (0, "", None)
    assert list(domain.events.order_by("pk").values_list("to_status", flat=True)) == [
        DomainStatus.PENDING_DNS,
        DomainStatus.CREATING,
        DomainStatus.IN_USE,
    ]
    order = Order.objects.get(domain=domain)
    assert order.state == OrderState.VALID and order.private_key is None


def test_an_a_record_elsewhere_keeps_the_domain_pending_with_that_address_named_and_backs_off(
    issuance_stack, challtestsrv, app
):
    name = unique_name()
    challtestsrv.add_a(name, ["203.0.113.7"])
    before = timezone.now()
    domain = create_domain(app, name)
    wait_for(lambda: Domain.objects.get(pk=domain.pk).last_checked_at, what="the first check")
    domain.refresh_from_db()
    assert domain.status == DomainStatus.PENDING_DNS
    assert "A record 203.0.113.7" in domain.last_error
    assert "not an address of the platform (127.0.0.1)" in domain.last_error
    first_wait = domain.next_attempt_at - domain.last_checked_at
    assert first_wait == retry_delay(1)

    make_due_and_sweep(domain)
    wait_for(lambda: Domain.objects.get(pk=domain.pk).consecutive_failures == 2, what="the second check")
    domain.refresh_from_db()
    assert domain.next_attempt_at - domain.last_checked_at == retry_delay(2)
    assert domain.last_checked_at > before
    assert not Order.objects.filter(domain=domain).exists()


def test_deleting_a_domain_mid_order_stores_nothing_deactivates_at_the_ca_and_its_token_answers_404(
    issuance_stack, challtestsrv, app, web_server
):
    import urllib.error
    import urllib.request

    from acme import messages

    from certificates.acme_client import client_for
    from certificates.models import ACTIVE_ORDER_STATES

    for _ in range(5):
        name = unique_name()
        point_at_platform(challtestsrv, app, name)
        domain = create_domain(app, name)
        challenge = wait_for(
            lambda domain_id=domain.pk: (
                Challenge.objects.filter(order__domain_id=domain_id)
                .exclude(token="")
                .select_related("order")
                .first()
            ),
            interval=0.002,
            what="an order with a challenge",
        )
        state_when_deleted = Order.objects.get(pk=challenge.order_id).state
        delete_domain(domain)
        if state_when_deleted in ACTIVE_ORDER_STATES:
            break
    else:
        pytest.fail("five orders finished before they could be deleted mid-flight")

    url = f"http://127.0.0.1:{web_server_port()}/.well-known/acme-challenge/{challenge.token}"
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        urllib.request.urlopen(url, timeout=5)
    assert excinfo.value.code == 404
    acme = client_for(challenge.order.account)

    def authorization_status():
        body = acme._post_as_get(challenge.authorization_url).json()
        return messages.Authorization.from_json(body).status.name

    # Deactivated by the task the deletion sent, unless the CA had validated it already.
    assert wait_for(
        lambda: authorization_status() in ("deactivated", "valid", "invalid") and authorization_status(),
        what="the authorization to leave pending",
    ) in ("deactivated", "valid", "invalid")
    time.sleep(2)
    assert not Certificate.objects.filter(domain_id=domain.pk).exists()
    assert not Domain.objects.filter(pk=domain.pk).exists()
    assert not Order.objects.filter(pk=challenge.order_id).exists()


def web_server_port() -> int:
    import os

    return int(os.environ["CERTWRIGHT_TEST_HTTP01_PORT"])


def _histogram_counts() -> dict[tuple, float]:
    from django.test import Client
    from prometheus_client.parser import text_string_to_metric_families

    counts = {}
    body = Client().get("/metrics").content.decode()
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name.endswith("_count"):
                counts[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return counts


def test_an_issuance_shows_in_the_acme_request_and_time_to_in_use_histograms(
    issuance_stack, challtestsrv, app
):
    before = _histogram_counts()
    name = unique_name()
    point_at_platform(challtestsrv, app, name)
    domain = create_domain(app, name)
    wait_for(lambda: status_of(domain) == DomainStatus.IN_USE, what="in_use")
    after = _histogram_counts()

    def grew(metric: str, **labels) -> float:
        key = (metric, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    requests = "certwright_acme_request_duration_seconds_count"
    # The worker's requests to Pebble, each named by its resource and Pebble's answer.
    assert grew(requests, issuer="letsencrypt", endpoint="newOrder", status="201") >= 1
    assert grew(requests, issuer="letsencrypt", endpoint="finalize", status="200") >= 1
    assert grew(requests, issuer="letsencrypt", endpoint="certificate", status="200") >= 1
    assert grew(requests, issuer="letsencrypt", endpoint="challenge", status="200") >= 1
    # At least this domain's (a domain an earlier test left may finish meanwhile).
    assert grew("certwright_time_to_in_use_seconds_count") >= 1
