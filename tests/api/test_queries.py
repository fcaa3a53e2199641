"""The domain list costs the same whatever the page size: a constant number of SQL queries and one
quota look-up (one Redis pipeline) per page."""

from __future__ import annotations

import datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

import api.presenters
from certificates.models import CertificateSource
from domains.models import DomainStatus
from tests.api.conftest import API
from tests.factories import CertificateFactory, DomainFactory

pytestmark = pytest.mark.django_db

DOMAINS = f"{API}/apps/shop/domains"
DAY = datetime.timedelta(days=1)
STATUSES = list(DomainStatus)


@pytest.fixture
def many_domains(shop):
    """120 domains across every status and 30 registered domains, a third with a Let's Encrypt
    certificate and a fifth with a custom one."""
    for number in range(120):
        status = STATUSES[number % len(STATUSES)]
        domain = DomainFactory(
            app=shop,
            name=f"site{number:03}.brand{number % 30}.com",
            status=status,
            letsencrypt_enabled=status != DomainStatus.DISABLED,
        )
        if number % 3 == 0:
            CertificateFactory(domain=domain, not_before=timezone.now() - DAY)
        if number % 5 == 0:
            CertificateFactory(
                domain=domain, source=CertificateSource.CUSTOM, not_before=timezone.now() - DAY
            )


def page(client, size: int) -> tuple[int, list[dict]]:
    """The number of queries the first page of `size` domains takes, and its domains."""
    with CaptureQueriesContext(connection) as queries:
        response = client.get(DOMAINS, {"page_size": size})
    assert response.status_code == 200
    return len(queries), response.json()["results"]


def test_the_domain_list_takes_the_same_few_queries_for_10_or_100_domains(alice_api, many_domains):
    # Once, so that the token's last_used write and the quota buckets' first seeding are behind us.
    page(alice_api, 500)

    small, first_10 = page(alice_api, 10)
    large, first_100 = page(alice_api, 100)

    print(f"domain list: {small} queries for 10 domains, {large} for 100")
    assert (len(first_10), len(first_100)) == (10, 100)
    assert sum(d["certificate"] is not None for d in first_100) > 30
    assert small == large
    assert large <= 10


def test_the_presenter_looks_quotas_up_once_per_page(alice_api, many_domains, monkeypatch):
    calls = []
    real = api.presenters.quota_of

    def counting(domains, *args, **kwargs):
        calls.append(list(domains))
        return real(domains, *args, **kwargs)

    monkeypatch.setattr(api.presenters, "quota_of", counting)

    page(alice_api, 10)
    page(alice_api, 100)

    assert len(calls) == 2
    assert len(calls[1]) == 30
    assert all(d["quota"]["tokens_left"] is not None for d in page(alice_api, 100)[1])
