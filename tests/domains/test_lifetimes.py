"""Nothing assumes 90 days: "expiring" is the last quarter of a certificate's own lifetime or
CERTIFICATE_EXPIRING_DAYS, whichever is shorter, in the admin's flag and filter and in the metrics,
for 90-day, 45-day and 160-hour certificates alike; always after the renewal was due."""

from __future__ import annotations

import datetime

import pytest
from django.urls import reverse
from django.utils import timezone

from certificates.models import expiring_window, renewal_due
from domains.models import DomainStatus
from tests.factories import CertificateFactory, DomainFactory
from tests.web.test_metrics import scrape

HOUR = datetime.timedelta(hours=1)
DAY = datetime.timedelta(days=1)
CLASSIC, TLSSERVER, SHORTLIVED = 90 * DAY, 45 * DAY, 160 * HOUR


@pytest.mark.parametrize(
    ("lifetime", "window"),
    [(CLASSIC, 10 * DAY), (TLSSERVER, 10 * DAY), (SHORTLIVED, 40 * HOUR), (20 * DAY, 5 * DAY)],
)
def test_expiring_is_the_last_quarter_or_the_setting_whichever_is_shorter(lifetime, window):
    assert expiring_window(lifetime, 10) == window


@pytest.mark.parametrize("lifetime", [CLASSIC, 64 * DAY, TLSSERVER, 12 * DAY, SHORTLIVED, 6 * HOUR])
def test_a_certificate_is_flagged_expiring_only_after_its_renewal_was_due(lifetime):
    start = timezone.now()
    end = start + lifetime
    assert end - expiring_window(lifetime, 10) > renewal_due(start, end)


def _served(name: str, lifetime: datetime.timedelta, left: datetime.timedelta):
    now = timezone.now()
    domain = DomainFactory(name=name, status=DomainStatus.IN_USE)
    CertificateFactory(domain=domain, not_before=now + left - lifetime, not_after=now + left)
    return domain


@pytest.fixture
def lifetimes(db):
    """Served certificates of three lifetimes, some late in their renewal and some not."""
    return {
        # 30 hours left of 160: past the last quarter (40 h), its renewal (hour 80) is late.
        "late-short.example.com": _served("late-short.example.com", SHORTLIVED, 30 * HOUR),
        # 60 hours left of 160: within 10 days, but a short-lived certificate always is.
        "fine-short.example.com": _served("fine-short.example.com", SHORTLIVED, 60 * HOUR),
        "late-45.example.com": _served("late-45.example.com", TLSSERVER, 9 * DAY),
        "fine-45.example.com": _served("fine-45.example.com", TLSSERVER, 12 * DAY),
        "late-90.example.com": _served("late-90.example.com", CLASSIC, 9 * DAY),
        "fine-90.example.com": _served("fine-90.example.com", CLASSIC, 25 * DAY),
    }


LATE = {"late-short.example.com", "late-45.example.com", "late-90.example.com"}


@pytest.mark.django_db
def test_the_admins_expiring_filter_and_flag_follow_each_certificates_lifetime(admin_client, lifetimes):
    response = admin_client.get(reverse("admin:domains_domain_changelist"), {"served": "expiring"})

    assert response.status_code == 200
    listed = response.context["cl"].result_list
    assert {domain.name for domain in listed} == LATE
    everything = admin_client.get(reverse("admin:domains_domain_changelist"))
    admin = everything.context["cl"].model_admin
    flags = {domain.name: admin.expiring(domain) for domain in everything.context["cl"].result_list}
    assert {name for name, flag in flags.items() if flag} == LATE


@pytest.mark.django_db
def test_the_expiring_metric_follows_each_certificates_lifetime(redis_servers, lifetimes, settings):
    _, samples, _ = scrape()
    assert samples[("certwright_domains_certificate_expiring", "")] == len(LATE)
    settings.CERTIFICATE_EXPIRING_DAYS = 1
    _, samples, _ = scrape()
    # A day or a quarter, whichever is shorter: none of them has less than a day left.
    assert samples[("certwright_domains_certificate_expiring", "")] == 0
