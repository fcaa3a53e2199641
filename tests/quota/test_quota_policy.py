"""Which buckets an order spends, overrides, the rebuild from PostgreSQL, the customer's message,
and what happens to tokens when orders end: on the real quota Redis and PostgreSQL."""

from __future__ import annotations

import datetime
import uuid

import pytest
from django.utils import timezone

from certificates.models import (
    Issuance,
    Order,
    OrderState,
    QuotaKind,
    QuotaOverride,
)
from config.issuers import IssuerSetting
from domains import quota_policy
from domains.models import DomainStatus
from tests.factories import AcmeAccountFactory, DomainFactory
from workers import order_run

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh(quota_redis, monkeypatch):
    monkeypatch.setattr(quota_policy, "_quota", None)
    yield
    quota_policy._quota = None


def test_a_new_certificate_spends_registered_domain_exact_set_and_account_buckets_and_checks_failed_authz():
    buckets = quota_policy.buckets_for(["www.shop.example.co.uk"], 7, renewal=False, overrides={})
    assert [b.key.rsplit(":", 1)[0] for b in buckets] == [
        "quota:rd",
        "quota:set",
        "quota:account",
        "quota:fa:7",
    ]
    rd, exact, account, failed = buckets
    assert [b.check_only for b in buckets] == [False, False, False, True]
    # Let's Encrypt: 5 failed authorizations per identifier per account per hour, 1 back every 12 min.
    assert (failed.subject, failed.capacity, failed.interval_us) == ("www.shop.example.co.uk", 5, 720_000_000)
    assert (rd.subject, rd.capacity, rd.interval_us, rd.durable) == (
        "example.co.uk",
        50,
        12_096_000_000,
        True,
    )
    assert (exact.capacity, exact.period_us) == (5, 7 * 24 * 3600 * 1_000_000)
    assert (account.subject, account.capacity, account.interval_us) == ("7", 300, 36_000_000)


def test_a_private_suffix_is_its_own_registered_domain_as_at_lets_encrypt():
    rd = quota_policy.buckets_for(["foo.github.io"], 1, renewal=False, overrides={})[0]
    assert rd.subject == "foo.github.io"


def test_a_renewal_of_the_same_names_spends_only_the_exact_set_bucket_and_checks_failed_authz():
    buckets = quota_policy.buckets_for(["www.example.com"], 7, renewal=True, overrides={})
    assert [(b.key.split(":")[1], b.check_only) for b in buckets] == [("set", False), ("fa", True)]


def test_a_wildcards_failed_authorizations_count_against_its_base_domain_as_its_authorization_names_it():
    assert quota_policy.failed_authz_bucket("*.example.com", 3).key == "quota:fa:3:example.com"


def test_an_override_in_the_database_replaces_the_default_for_its_subject_only():
    QuotaOverride.objects.create(
        kind=QuotaKind.REGISTERED_DOMAIN, subject="Big.Example", capacity=500, period_seconds=604800
    )
    QuotaOverride.objects.create(
        kind=QuotaKind.EXACT_SET, subject="b.example.com, a.example.com", capacity=9, period_seconds=60
    )
    overrides = quota_policy.load_overrides([["www.big.example"], ["a.example.com", "b.example.com"]], [])
    big = quota_policy.buckets_for(["www.big.example"], 1, renewal=False, overrides=overrides)[0]
    assert (big.capacity, big.interval_us) == (500, 1_209_600_000)
    pair = quota_policy.buckets_for(["a.example.com", "b.example.com"], 1, renewal=False, overrides=overrides)
    assert (pair[1].capacity, pair[1].interval_us) == (9, 6_666_667)  # rounded up, never more generous
    other = quota_policy.buckets_for(["www.small.example"], 1, renewal=False, overrides=overrides)[0]
    assert other.capacity == 50


def test_a_lost_registered_domain_bucket_is_rebuilt_from_issued_certificates_and_orders_in_flight():
    now = timezone.now()
    for hours in (1, 2, 200):  # the last one is older than the week: it does not count
        Issuance.objects.create(
            registered_domain="example.org",
            names=["x.example.org"],
            fingerprint_sha256=uuid.uuid4().hex,
            issued_at=now - datetime.timedelta(hours=hours),
        )
    Issuance.objects.create(
        registered_domain="example.org",
        names=["r.example.org"],
        renewal=True,
        fingerprint_sha256=uuid.uuid4().hex,
        issued_at=now,
    )
    domain = DomainFactory(name="flight.example.org")
    Order.objects.create(
        domain=domain, account=AcmeAccountFactory(), names=[domain.name], quota_reservation=uuid.uuid4()
    )
    bucket = quota_policy.registered_domain_bucket("example.org")
    assert quota_policy.get_quota().peek(bucket).tokens_left == 47


def test_the_waiting_message_says_which_limit_and_when_in_plain_words():
    bucket = quota_policy.registered_domain_bucket("example.com")
    at = datetime.datetime(2026, 12, 1, 9, 30, tzinfo=datetime.UTC)
    assert quota_policy.waiting_message(bucket, at) == (
        "weekly certificate limit for example.com reached; next attempt at 2026-12-01 09:30:00 UTC "
        "(Let's Encrypt issues at most 50 certificates per registered domain per week)"
    )


def test_an_exhausted_registered_domain_makes_the_next_domain_wait_with_its_token_time():
    QuotaOverride.objects.create(
        kind=QuotaKind.REGISTERED_DOMAIN, subject="example.net", capacity=1, period_seconds=3600
    )
    a, b = DomainFactory(name="a.example.net"), DomainFactory(name="b.example.net")
    account = AcmeAccountFactory()
    assert isinstance(_reserve_one(a, account.pk), quota_policy.Granted)
    before = timezone.now()
    second = _reserve_one(b, account.pk)
    assert isinstance(second, quota_policy.Waiting)
    assert 3590 <= (second.until - before).total_seconds() <= 3601
    assert second.message.startswith("certificate limit for example.net reached; next attempt at ")
    # Asking again with its reservation keeps its place (the same time), and takes nothing more.
    again = _reserve_one(b, account.pk, second.reservation)
    assert abs((again.until - second.until).total_seconds()) < 1


def test_with_the_quota_store_down_new_certificates_wait_and_renewals_go_ahead(settings):
    settings.QUOTA_REDIS_URL = "redis://127.0.0.1:1/0"
    settings.QUOTA_UNAVAILABLE_RETRY_SECONDS = 30
    new, renewing = DomainFactory(name="new.example.com"), DomainFactory(name="renew.example.com")
    outcome = quota_policy.reserve(
        [
            quota_policy.Candidate(new.pk, new.name, None, renewal=False),
            quota_policy.Candidate(renewing.pk, renewing.name, None, renewal=True),
        ],
        AcmeAccountFactory().pk,
    )
    assert isinstance(outcome[new.pk], quota_policy.Waiting)
    assert "could not be checked" in outcome[new.pk].message
    assert outcome[renewing.pk] == quota_policy.Granted(None, True)


def test_quota_fail_open_orders_new_certificates_without_the_store(settings):
    settings.QUOTA_REDIS_URL = "redis://127.0.0.1:1/0"
    settings.QUOTA_FAIL_OPEN = True
    domain = DomainFactory(name="open.example.com")
    assert _reserve_one(domain, AcmeAccountFactory().pk) == quota_policy.Granted(None, False)


@pytest.mark.parametrize(
    ("state", "refunded"),
    [
        (OrderState.PENDING, True),
        (OrderState.VALIDATING, True),
        (OrderState.FINALIZING, False),  # finalize was sent: the CA may have issued
        (OrderState.DOWNLOADING, False),
    ],
)
def test_a_failed_order_gives_its_tokens_back_only_when_the_ca_certainly_issued_nothing(state, refunded):
    domain = DomainFactory(name="fail.example.com", status=DomainStatus.CREATING)
    account = AcmeAccountFactory()
    buckets = quota_policy.buckets_for([domain.name], account.pk, renewal=False, overrides={})
    reservation = uuid.uuid4()
    assert quota_policy.get_quota().spend(str(reservation), buckets).granted
    held = uuid.uuid4()
    order = Order.objects.create(
        domain=domain,
        account=account,
        names=[domain.name],
        state=state,
        lease_token=held,
        quota_reservation=reservation,
    )
    assert order_run.fail_order(order, held, "the CA said no")
    left = quota_policy.get_quota().peek(buckets[0]).tokens_left
    assert left == (50 if refunded else 49)


def test_an_invalid_order_after_finalize_is_refunded_because_the_ca_said_so():
    domain = DomainFactory(name="invalid.example.com", status=DomainStatus.CREATING)
    account = AcmeAccountFactory()
    buckets = quota_policy.buckets_for([domain.name], account.pk, renewal=False, overrides={})
    reservation = uuid.uuid4()
    quota_policy.get_quota().spend(str(reservation), buckets)
    held = uuid.uuid4()
    order = Order.objects.create(
        domain=domain,
        account=account,
        names=[domain.name],
        state=OrderState.FINALIZING,
        lease_token=held,
        quota_reservation=reservation,
    )
    order_run.fail_order(order, held, "invalid", issued_nothing=True)
    assert quota_policy.get_quota().peek(buckets[0]).tokens_left == 50


def test_the_registered_domain_limit_message_is_told_apart_from_the_others():
    pattern = order_run.REGISTERED_DOMAIN_LIMIT
    assert pattern.search('too many certificates (50) already issued for "example.com" in the last 168h0m0s')
    assert pattern.search("Error creating new order :: too many certificates already issued for: example.com")
    assert not pattern.search(
        "too many certificates (5) already issued for this exact set of identifiers in the last 168h0m0s"
    )
    assert not pattern.search("too many new orders (300) from this account in the last 3h0m0s")
    assert not pattern.search('too many failed authorizations (5) for "example.com" in the last 1h0m0s')


def test_the_sync_of_a_registered_domain_bucket_makes_it_empty_until_the_retry_time():
    retry_at = timezone.now() + datetime.timedelta(hours=2)
    assert quota_policy.sync_registered_domains(["www.synced.example"], retry_at) == ["synced.example"]
    level = quota_policy.get_quota().peek(quota_policy.registered_domain_bucket("synced.example"))
    assert level.tokens_left == 0
    assert abs(level.next_token_in_us / 1e6 - 7200) < 5


def test_deleting_a_waiting_domain_gives_its_booked_token_to_the_next_in_line(
    django_capture_on_commit_callbacks,
):
    from domains.services import delete_domain

    QuotaOverride.objects.create(
        kind=QuotaKind.REGISTERED_DOMAIN, subject="line.example", capacity=1, period_seconds=3600
    )
    account = AcmeAccountFactory()
    first, second, third = (DomainFactory(name=f"{n}.line.example") for n in ("a", "b", "c"))
    _reserve_one(first, account.pk)
    waiting = _reserve_one(second, account.pk)
    second.quota_reservation = waiting.reservation
    second.save()
    with django_capture_on_commit_callbacks(execute=True):
        delete_domain(second)
    # The third domain now gets the second's slot (one interval away), not the one after it.
    third_wait = _reserve_one(third, account.pk)
    assert abs((third_wait.until - waiting.until).total_seconds()) < 2


def test_the_ledger_keeps_what_a_rebuild_can_need_and_prunes_the_rest():
    now = timezone.now()
    QuotaOverride.objects.create(
        kind=QuotaKind.REGISTERED_DOMAIN, subject="slow.example", capacity=10, period_seconds=14 * 86400
    )
    ages = {"fresh": 1, "within-override": 12, "old": 16}
    for label, days in ages.items():
        Issuance.objects.create(
            registered_domain="example.org",
            names=[f"{label}.example.org"],
            fingerprint_sha256=uuid.uuid4().hex,
            issued_at=now - datetime.timedelta(days=days),
        )
    # The longest registered-domain period is the override's 14 days: kept for 15.
    assert quota_policy.prune_ledger(now, batch=1) == 1
    assert sorted(n for (n,) in Issuance.objects.values_list("names")) == [
        ["fresh.example.org"],
        ["within-override.example.org"],
    ]


def test_an_issuer_without_lets_encrypts_limits_spends_nothing_and_a_booked_token_goes_back(settings):
    second = IssuerSetting("second", "https://second.test/dir", ("pki.goog",), limits="none")
    settings.ACME_ISSUERS = [*settings.ACME_ISSUERS, second]
    primary = AcmeAccountFactory(directory_url=settings.ACME_DIRECTORY_URL)
    other = AcmeAccountFactory(directory_url=second.directory_url)
    first, waiting = DomainFactory(name="a.example.net"), DomainFactory(name="b.example.net")
    QuotaOverride.objects.create(
        kind=QuotaKind.REGISTERED_DOMAIN, subject="example.net", capacity=1, period_seconds=3600
    )
    bucket = quota_policy.registered_domain_bucket("example.net")
    assert isinstance(_reserve_one(first, primary.pk), quota_policy.Granted)
    booked = _reserve_one(waiting, primary.pk)
    assert isinstance(booked, quota_policy.Waiting)

    # The waiting domain goes to the other issuer: granted at once, its booked token given back.
    assert _reserve_one(waiting, other.pk, booked.reservation) == quota_policy.Granted(None, False)
    assert quota_policy.get_quota().peek(bucket).tokens_left == 0
    # The next in line gets the token the waiting domain had booked (not the one after it).
    later = _reserve_one(DomainFactory(name="c.example.net"), primary.pk)
    assert abs((later.until - booked.until).total_seconds()) < 5
    # Its certificates are in the ledger, and a rebuilt Let's Encrypt bucket does not count them.
    Issuance.objects.create(
        registered_domain="example.org",
        names=["x.example.org"],
        fingerprint_sha256=uuid.uuid4().hex,
        issuer="second",
        spends_letsencrypt_limits=False,
    )
    assert (
        quota_policy.get_quota().peek(quota_policy.registered_domain_bucket("example.org")).tokens_left == 50
    )


def test_an_issuer_with_a_limit_of_its_own_spends_from_it_and_waiters_are_told_so(settings):
    own = IssuerSetting(
        "sslcom",
        "https://sslcom.test/dir",
        ("ssl.com",),
        limits="own",
        orders_limit=2,
        orders_period_seconds=3600,
    )
    settings.ACME_ISSUERS = [*settings.ACME_ISSUERS, own]
    account = AcmeAccountFactory(directory_url=own.directory_url)
    first, second, third = (DomainFactory(name=f"{n}.example.net") for n in ("a", "b", "c"))

    assert isinstance(_reserve_one(first, account.pk), quota_policy.Granted)
    granted = _reserve_one(second, account.pk)
    assert isinstance(granted, quota_policy.Granted) and granted.reservation is not None
    waiting = _reserve_one(third, account.pk)

    assert isinstance(waiting, quota_policy.Waiting)
    assert waiting.message.startswith("the platform's limit of new orders at sslcom is reached")
    assert "(at most 2 per hour)" in waiting.message
    # Let's Encrypt's buckets are untouched; a refund of an order that issued nothing gives the token back.
    assert (
        quota_policy.get_quota().peek(quota_policy.registered_domain_bucket("example.net")).tokens_left == 50
    )
    assert quota_policy.refund(granted.reservation, [second.name], account.pk, "test")
    assert not quota_policy.refund(granted.reservation, [second.name], account.pk, "test"), "once"
    # Asking again with its reservation keeps the waiter's place.
    again = _reserve_one(third, account.pk, waiting.reservation)
    assert abs((again.until - waiting.until).total_seconds()) < 1


def _reserve_one(domain, account_id: int, reservation=None):
    """What reserve() decides for one new (not renewing) domain."""
    candidate = quota_policy.Candidate(domain.pk, domain.name, reservation, renewal=False)
    return quota_policy.reserve([candidate], account_id)[domain.pk]
