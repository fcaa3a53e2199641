"""`GET /metrics`: the figures an operator alerts on, in Prometheus' text format, computed from the
database and the broker at scrape time, without customer data, at a constant cost."""

from __future__ import annotations

import datetime

import pytest
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from certificates.issuers import record_ca_failure
from certificates.models import CertificateSource, Issuance, Order, OrderState
from domains.models import Domain, DomainStatus
from tests.factories import AcmeAccountFactory, CertificateFactory, DomainFactory
from workers.models import Heartbeat

pytestmark = pytest.mark.django_db

DAY = datetime.timedelta(days=1)


def scrape(client: Client | None = None, **headers) -> tuple[int, dict[tuple[str, str], float], str]:
    """(status, {(sample, its labels sorted by name): value}, body), read by prometheus-client's
    parser."""
    response = (client or Client()).get("/metrics", **headers)
    body = response.content.decode()
    samples = {}
    if response.status_code != 200:
        return response.status_code, samples, body
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            labels = ",".join(f'{key}="{value}"' for key, value in sorted(sample.labels.items()))
            samples[(sample.name, labels)] = sample.value
    return response.status_code, samples, body


def test_every_family_is_in_prometheus_text_format_with_help_and_type(redis_servers):
    status, samples, body = scrape()
    assert status == 200
    assert body.endswith("\n")
    names = {name for name, _ in samples}
    types = {family.name: family.type for family in text_string_to_metric_families(body)}
    for name in types:
        assert f"# HELP {name} " in body
    histograms = {"certwright_acme_request_duration_seconds", "certwright_time_to_in_use_seconds"}
    assert {name for name, kind in types.items() if kind == "histogram"} == histograms
    assert all(kind == "gauge" for name, kind in types.items() if name not in histograms)
    assert {
        "certwright_domains",
        "certwright_domains_due",
        "certwright_domains_certificate_ending",
        "certwright_orders_in_flight",
        "certwright_renewals_due",
        "certwright_renewals_failing",
        "certwright_ari_checks_due",
        "certwright_ari_checks_failing",
        "certwright_certificates_issued_24h",
        "certwright_heartbeat_age_seconds",
        "certwright_queue_length",
        "certwright_metrics_scrape_seconds",
    } <= names


def test_domains_are_counted_by_status_and_due_ones_apart(redis_servers):
    now = timezone.now()
    for status, count in ((DomainStatus.IN_USE, 3), (DomainStatus.PENDING_DNS, 2), (DomainStatus.FAILING, 1)):
        for _ in range(count):
            DomainFactory(status=status)
    Domain.objects.filter(status__in=[DomainStatus.PENDING_DNS, DomainStatus.IN_USE]).update(
        next_attempt_at=now - DAY
    )
    _, samples, _ = scrape()
    assert samples[("certwright_domains", 'status="in_use"')] == 3
    assert samples[("certwright_domains", 'status="pending_dns"')] == 2
    assert samples[("certwright_domains", 'status="failing"')] == 1
    assert samples[("certwright_domains", 'status="disabled"')] == 0
    # Due as the sweep counts it: a served domain is never the sweep's, whatever its next_attempt_at.
    assert samples[("certwright_domains_due", "")] == 2


def test_a_domain_counts_as_ending_only_when_nothing_valid_outlives_its_certificate(redis_servers):
    now = timezone.now()

    def domain_with(*ends, **domain_fields):
        domain = DomainFactory(status=DomainStatus.IN_USE, **domain_fields)
        for end in ends:
            CertificateFactory(domain=domain, not_before=now - 10 * DAY, not_after=now + end)
        return domain

    domain_with(datetime.timedelta(hours=12))  # ends within 1 day
    domain_with(5 * DAY)  # within 7 days
    domain_with(5 * DAY, 80 * DAY)  # renewed: the newer one is served, nothing ends soon
    domain_with(20 * DAY)  # within 30 days
    domain_with(90 * DAY)  # fine
    custom_only = domain_with(3 * DAY, letsencrypt_enabled=False)  # its Let's Encrypt one is not served
    CertificateFactory(
        domain=custom_only, source=CertificateSource.CUSTOM, not_before=now - DAY, not_after=now + 200 * DAY
    )
    _, samples, _ = scrape()
    assert samples[("certwright_domains_certificate_ending", 'within="1d"')] == 1
    assert samples[("certwright_domains_certificate_ending", 'within="7d"')] == 2
    assert samples[("certwright_domains_certificate_ending", 'within="30d"')] == 3


def test_orders_renewals_issuances_heartbeats_and_queues(redis_servers, broker_redis):
    now = timezone.now()
    account = AcmeAccountFactory()
    for state in (OrderState.PENDING, OrderState.VALIDATING, OrderState.VALIDATING, OrderState.VALID):
        domain = DomainFactory()
        Order.objects.create(domain=domain, account=account, names=[domain.name], state=state)
    CertificateFactory(renew_at=now - DAY)
    CertificateFactory(renew_at=now + DAY, renewal_failures=2)
    CertificateFactory(renew_at=None)
    CertificateFactory(renew_at=now + DAY, ari_next_check=now - DAY, ari_error="The CA answered HTTP 500.")
    CertificateFactory(renew_at=now + DAY, ari_next_check=now + DAY)
    Issuance.objects.create(
        registered_domain="example.com",
        names=["a.example.com"],
        fingerprint_sha256="a" * 64,
        issuer="letsencrypt",
    )
    Issuance.objects.create(
        registered_domain="example.com",
        names=["a.example.com"],
        fingerprint_sha256="b" * 64,
        renewal=True,
        issuer="letsencrypt",
    )
    # Written before there were several issuers: counted under "unknown".
    Issuance.objects.create(
        registered_domain="example.com", names=["c.example.com"], fingerprint_sha256="d" * 64
    )
    Issuance.objects.create(
        registered_domain="example.com",
        names=["b.example.com"],
        fingerprint_sha256="c" * 64,
        issued_at=now - 2 * DAY,
    )
    Heartbeat.objects.update_or_create(
        source=Heartbeat.Source.BEAT, defaults={"at": now - datetime.timedelta(seconds=42)}
    )
    Heartbeat.objects.filter(source=Heartbeat.Source.WORKER).delete()
    broker_redis.delete("acme")
    broker_redis.rpush("acme", "one", "two")
    _, samples, _ = scrape()
    assert samples[("certwright_orders_in_flight", 'state="validating"')] == 2
    assert samples[("certwright_orders_in_flight", 'state="pending"')] == 1
    assert ("certwright_orders_in_flight", 'state="valid"') not in samples
    assert samples[("certwright_renewals_due", "")] == 1
    assert samples[("certwright_renewals_failing", "")] == 1
    assert samples[("certwright_ari_checks_due", "")] == 1
    assert samples[("certwright_ari_checks_failing", "")] == 1
    assert samples[("certwright_certificates_issued_24h", 'issuer="letsencrypt",kind="new"')] == 1
    assert samples[("certwright_certificates_issued_24h", 'issuer="letsencrypt",kind="renewal"')] == 1
    assert samples[("certwright_certificates_issued_24h", 'issuer="unknown",kind="new"')] == 1
    assert samples[("certwright_issuer_breaker_open", 'issuer="letsencrypt"')] == 0
    assert 41 <= samples[("certwright_heartbeat_age_seconds", 'source="beat"')] < 60
    assert samples[("certwright_heartbeat_age_seconds", 'source="worker"')] == -1
    assert samples[("certwright_queue_length", 'queue="acme"')] == 2
    broker_redis.delete("acme")


def test_no_domain_name_appears_in_the_answer(redis_servers):
    DomainFactory(name="secret-customer.example.com", status=DomainStatus.IN_USE)
    _, _, body = scrape()
    assert "secret-customer" not in body


def test_with_a_token_set_it_is_required(redis_servers, settings):
    settings.METRICS_TOKEN = "metrics-token-0123456789"
    assert scrape()[0] == 401
    assert scrape(HTTP_AUTHORIZATION="Bearer wrong")[0] == 401
    assert scrape(HTTP_AUTHORIZATION="Bearer metrics-token-0123456789")[0] == 200


def test_a_scrape_costs_the_same_statements_at_any_size(redis_servers):
    def count() -> int:
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        with CaptureQueriesContext(connection) as queries:
            assert scrape()[0] == 200
        return len(queries)

    scrape()  # The process's first scrape writes the issuers' rows once (certificates/issuers.py).
    small = count()
    for _ in range(30):
        CertificateFactory(
            domain=DomainFactory(status=DomainStatus.IN_USE), not_after=timezone.now() + 5 * DAY
        )
    assert count() == small


def test_an_issuer_whose_ca_keeps_failing_shows_its_breaker_open_and_its_failures(settings):
    settings.ISSUER_BREAKER_FAILURES = 2
    for _ in range(3):
        record_ca_failure(settings.ACME_DIRECTORY_URL, "could not reach the CA: ConnectionError")

    _, samples, _ = scrape()

    assert samples[("certwright_issuer_breaker_open", 'issuer="letsencrypt"')] == 1
    assert samples[("certwright_issuer_ca_failures", 'issuer="letsencrypt"')] == 3


def test_domains_waiting_are_counted_by_status_and_what_they_wait_on(redis_servers):
    for status, waiting_on, count in (
        (DomainStatus.PENDING_DNS, "dns", 3),
        (DomainStatus.ACTION_REQUIRED, "caa", 2),
        (DomainStatus.ACTION_REQUIRED, "ownership", 1),
        (DomainStatus.CREATING, "quota", 4),
        (DomainStatus.FAILING, "ca", 1),
        (DomainStatus.IN_USE, "", 5),
    ):
        for _ in range(count):
            DomainFactory(status=status, waiting_on=waiting_on)
    _, samples, _ = scrape()
    assert samples[("certwright_domains_waiting", 'reason="dns",status="pending_dns"')] == 3
    assert samples[("certwright_domains_waiting", 'reason="caa",status="action_required"')] == 2
    assert samples[("certwright_domains_waiting", 'reason="ownership",status="action_required"')] == 1
    assert samples[("certwright_domains_waiting", 'reason="quota",status="creating"')] == 4
    assert samples[("certwright_domains_waiting", 'reason="ca",status="failing"')] == 1
    assert samples[("certwright_domains_waiting", 'reason="quota",status="pending_dns"')] == 0
    # Served domains wait on nothing; their count is certwright_domains' alone.
    assert not any(name == "certwright_domains_waiting" and "in_use" in labels for name, labels in samples)
    assert samples[("certwright_domains", 'status="in_use"')] == 5
