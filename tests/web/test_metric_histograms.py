"""The histograms any process observes and `/metrics` exposes (certificates/histograms.py): summed
in the broker's Redis, cumulative in the scrape, and never in the way of the work they measure."""

from __future__ import annotations

import time

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from certificates import histograms
from certificates.histograms import ACME_REQUEST, TIME_TO_IN_USE, endpoint_of, observe, observe_many

pytestmark = pytest.mark.django_db


@pytest.fixture
def fresh_histograms(broker_redis):
    histograms.forget_client()
    for histogram in histograms.HISTOGRAMS:
        broker_redis.delete(histogram.key)
    yield broker_redis
    histograms.forget_client()


def scrape(accept: str = "") -> dict[str, dict[tuple, float]]:
    response = Client().get("/metrics", HTTP_ACCEPT=accept) if accept else Client().get("/metrics")
    assert response.status_code == 200
    found: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


@pytest.mark.parametrize(
    ("url", "endpoint"),
    [
        ("https://acme-v02.api.letsencrypt.org/directory", "directory"),
        ("https://acme-v02.api.letsencrypt.org/acme/new-nonce", "newNonce"),
        ("https://acme-v02.api.letsencrypt.org/acme/new-acct", "newAccount"),
        ("https://acme-v02.api.letsencrypt.org/acme/new-order", "newOrder"),
        ("https://acme-v02.api.letsencrypt.org/acme/authz/1/2", "authorization"),
        ("https://acme-v02.api.letsencrypt.org/acme/chall/1/2/x", "challenge"),
        ("https://acme-v02.api.letsencrypt.org/acme/finalize/1/2", "finalize"),
        ("https://acme-v02.api.letsencrypt.org/acme/order/1/2", "order"),
        ("https://acme-v02.api.letsencrypt.org/acme/cert/fa", "certificate"),
        ("https://acme-v02.api.letsencrypt.org/acme/revoke-cert", "revokeCert"),
        ("https://acme-v02.api.letsencrypt.org/acme/renewal-info/a.b", "renewalInfo"),
        ("https://acme-v02.api.letsencrypt.org/acme/acct/123", "account"),
        ("https://127.0.0.1:14000/dir", "directory"),
        ("https://127.0.0.1:14000/nonce-plz", "newNonce"),
        ("https://127.0.0.1:14000/sign-me-up", "newAccount"),
        ("https://127.0.0.1:14000/order-plz", "newOrder"),
        ("https://127.0.0.1:14000/authZ/x", "authorization"),
        ("https://127.0.0.1:14000/chalZ/x", "challenge"),
        ("https://127.0.0.1:14000/finalize-order/x", "finalize"),
        ("https://127.0.0.1:14000/my-order/x", "order"),
        ("https://127.0.0.1:14000/certZ/x", "certificate"),
        ("https://127.0.0.1:14000/my-account/1", "account"),
        ("https://127.0.0.1:14000/draft-ietf-acme-ari-03/renewalInfo/a.b", "renewalInfo"),
        ("https://127.0.0.1:14000/something-else", "other"),
    ],
)
def test_each_acme_url_is_named_by_its_rfc_8555_resource_from_a_fixed_set(url, endpoint):
    assert endpoint_of(url) == endpoint


def test_observations_of_every_process_add_up_into_cumulative_buckets_with_sum_and_count(
    fresh_histograms,
):
    observe(ACME_REQUEST, 0.02, ("letsencrypt", "newOrder", "201"))
    observe(ACME_REQUEST, 0.3, ("letsencrypt", "newOrder", "201"))
    observe_many(
        ACME_REQUEST,
        [(45.0, ("letsencrypt", "newOrder", "201")), (0.07, ("letsencrypt", "finalize", "error"))],
    )
    observe(TIME_TO_IN_USE, 90)
    found = scrape()
    new_order = (("endpoint", "newOrder"), ("issuer", "letsencrypt"), ("status", "201"))
    buckets = found["certwright_acme_request_duration_seconds_bucket"]
    assert buckets[(*new_order[:1], ("issuer", "letsencrypt"), ("le", "0.025"), ("status", "201"))] == 1
    assert buckets[(*new_order[:1], ("issuer", "letsencrypt"), ("le", "0.5"), ("status", "201"))] == 2
    assert buckets[(*new_order[:1], ("issuer", "letsencrypt"), ("le", "30.0"), ("status", "201"))] == 2
    assert buckets[(*new_order[:1], ("issuer", "letsencrypt"), ("le", "+Inf"), ("status", "201"))] == 3
    assert found["certwright_acme_request_duration_seconds_count"][new_order] == 3
    assert found["certwright_acme_request_duration_seconds_sum"][new_order] == pytest.approx(45.32)
    finalize = (("endpoint", "finalize"), ("issuer", "letsencrypt"), ("status", "error"))
    assert found["certwright_acme_request_duration_seconds_count"][finalize] == 1
    assert found["certwright_time_to_in_use_seconds_bucket"][(("le", "60.0"),)] == 0
    assert found["certwright_time_to_in_use_seconds_bucket"][(("le", "120.0"),)] == 1
    assert found["certwright_time_to_in_use_seconds_count"][()] == 1


def test_a_scraper_asking_for_openmetrics_gets_it(fresh_histograms):
    observe(TIME_TO_IN_USE, 10)
    response = Client().get("/metrics", HTTP_ACCEPT="application/openmetrics-text; version=1.0.0")
    assert response["Content-Type"].startswith("application/openmetrics-text")
    body = response.content.decode()
    assert body.endswith("# EOF\n")
    assert "certwright_time_to_in_use_seconds_count 1.0" in body
    plain = Client().get("/metrics")
    assert plain["Content-Type"].startswith("text/plain; version=0.0.4")


def test_an_unreachable_broker_costs_one_short_timeout_then_nothing_for_a_while(settings, caplog):
    histograms.forget_client()
    # Nothing listens on port 1 of this machine: the connection is refused at once.
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    try:
        started = time.monotonic()
        observe(ACME_REQUEST, 0.1, ("letsencrypt", "newNonce", "200"))
        for _ in range(1000):
            observe(ACME_REQUEST, 0.1, ("letsencrypt", "newNonce", "200"))
        assert time.monotonic() - started < 2 * histograms.TIMEOUT_SECONDS + 0.5
        warned = [r for r in caplog.records if "did not take an observation" in r.getMessage()]
        assert len(warned) == 1
    finally:
        histograms.forget_client()


def test_observing_with_the_wrong_labels_is_a_programming_error(fresh_histograms):
    with pytest.raises(ValueError, match="takes the labels"):
        observe(ACME_REQUEST, 0.1, ("letsencrypt",))
