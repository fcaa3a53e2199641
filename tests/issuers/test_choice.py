"""Which issuer an order goes to (workers/preflight.py) and the breakers it consults
(certificates/issuers.py), against the database with ACME_ISSUERS set to two issuers: the first the
CAA allows, unless the domain avoids it or its breaker is open; a breaker that opens after
ISSUER_BREAKER_FAILURES CA-side failures in a row, lets exactly one probe through after its
cool-down, and closes on a success; a pinned domain only ever goes to its issuer."""

from __future__ import annotations

import datetime

import pytest
from django.utils import timezone

from certificates.issuer_models import Issuer
from certificates.issuers import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    breaker_states,
    forget_sync,
    record_ca_failure,
    record_ca_success,
    take_probe,
)
from certificates.models import AcmeAccount
from config.issuers import IssuerSetting
from domains.caa import CaaRecord
from domains.models import DomainStatus
from tests.factories import AcmeAccountFactory
from workers.preflight import PreflightRow, _Breakers, _choose_issuer

pytestmark = pytest.mark.django_db

PRIMARY = IssuerSetting("primary", "https://primary.test/dir", ("letsencrypt.org",))
SECOND = IssuerSetting("second", "https://second.test/dir", ("second-ca.example",), limits="none")


@pytest.fixture(autouse=True)
def two_issuers(settings):
    settings.ACME_ISSUERS = [PRIMARY, SECOND]
    settings.ISSUER_BREAKER_FAILURES = 3
    settings.ISSUER_BREAKER_COOLDOWN_SECONDS = 60
    forget_sync()
    yield
    forget_sync()


class _Accounts:
    def __init__(self):
        self.accounts = {
            issuer.name: AcmeAccount.objects.filter(directory_url=issuer.directory_url).first()
            or AcmeAccountFactory(directory_url=issuer.directory_url, account_url=f"{issuer.directory_url}/1")
            for issuer in (PRIMARY, SECOND)
        }

    def at(self, issuer):
        return self.accounts[issuer.name]


def _choose(caa=None, **row):
    fields = {"pk": 1, "name": "www.example.com", "app_name": "app", "region_id": 1, **row}
    return _choose_issuer(PreflightRow(**fields), caa, _Accounts(), _Breakers(), "points")


def test_the_first_issuer_goes_first_and_a_caa_for_the_second_only_goes_to_the_second():
    assert _choose().issuer == "primary"
    records = ("example.com.", [_caa("second-ca.example")])
    assert _choose(records).issuer == "second"


def test_a_domain_avoiding_the_primary_goes_to_the_second_and_back_to_the_first_when_it_avoids_both():
    assert _choose(avoid=("primary",)).issuer == "second"
    assert _choose(avoid=("primary", "second")).issuer == "primary"


def test_an_open_breaker_sends_new_orders_to_the_next_issuer():
    for _ in range(3):
        record_ca_failure(PRIMARY.directory_url, "could not reach the CA: ConnectionError")
    assert breaker_states()["primary"] == OPEN
    assert _choose().issuer == "second"
    # A CAA that allows only the failing issuer waits, retried soon, no failure counted.
    verdict = _choose(("example.com.", [_caa("letsencrypt.org")]))
    assert not verdict.ok and verdict.transient and "failing on its side" in verdict.message


def test_the_breaker_opens_at_the_threshold_lets_one_probe_through_after_the_cooldown_and_closes_on_success():
    now = timezone.now()
    record_ca_failure(PRIMARY.directory_url, "x", now)
    record_ca_failure(PRIMARY.directory_url, "x", now)
    assert breaker_states(now)["primary"] == CLOSED
    record_ca_failure(PRIMARY.directory_url, "the CA answered serverInternal", now)
    assert breaker_states(now)["primary"] == OPEN
    assert not take_probe("primary", now)

    later = now + datetime.timedelta(seconds=61)
    assert breaker_states(later)["primary"] == HALF_OPEN
    assert take_probe("primary", later)
    assert not take_probe("primary", later), "one probe at a time"
    # The probe failed: open again for another cool-down.
    record_ca_failure(PRIMARY.directory_url, "x", later)
    assert breaker_states(later)["primary"] == OPEN

    record_ca_success(PRIMARY.directory_url)
    row = Issuer.objects.get(name="primary")
    assert (row.breaker_failures, row.breaker_open_until, row.breaker_probe_until) == (0, None, None)
    assert breaker_states(later)["primary"] == CLOSED


def test_a_pinned_domain_goes_only_to_its_issuer_and_an_unknown_pin_is_the_customers_to_fix():
    assert _choose(pinned="second").issuer == "second"
    records = ("example.com.", [_caa("letsencrypt.org")])
    verdict = _choose(records, pinned="second")
    assert not verdict.ok and verdict.status == DomainStatus.ACTION_REQUIRED
    verdict = _choose(pinned="gone")
    assert not verdict.ok and "no longer offers" in verdict.message and "primary, second" in verdict.message


def _caa(value: str) -> CaaRecord:
    return CaaRecord(0, "issue", value)
