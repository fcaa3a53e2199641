"""Let's Encrypt's failed-authorization limit in the quota script: a check-only bucket that an order
needs a token in without taking it, and a charge when the CA marks an authorization invalid."""

from __future__ import annotations

import datetime
import uuid

import pytest
from acme import messages
from django.utils import timezone

from certificates.models import Order, OrderState
from domains import quota_policy
from domains.models import DomainStatus
from domains.quota import Bucket, Quota
from tests.factories import AcmeAccountFactory, DomainFactory
from workers import order_run

T0 = 1_800_000_000_000_000  # an injected "now", in microseconds
MINUTES_12 = 720_000_000


@pytest.fixture
def quota(quota_redis) -> Quota:
    return Quota(quota_redis)


def _failed(capacity: int = 5, interval: int = MINUTES_12) -> Bucket:
    return Bucket(f"quota:test:fa:{uuid.uuid4().hex}", capacity, interval, check_only=True)


def _charge(quota: Quota, bucket: Bucket, n: int, now: int = T0) -> None:
    for _ in range(n):
        assert quota.charge(bucket, f"quota:test:once:{uuid.uuid4().hex}", now_us=now)


def test_a_check_only_bucket_lets_an_order_through_without_taking_a_token(quota):
    bucket = _failed()
    for k in range(10):
        assert quota.spend(f"order-{k}", [bucket], now_us=T0).granted
    assert quota.peek(bucket, now_us=T0).tokens_left == 5


def test_each_charge_takes_one_token_and_one_comes_back_every_interval(quota):
    bucket = _failed()
    _charge(quota, bucket, 5)
    assert quota.peek(bucket, now_us=T0) == (0, MINUTES_12)
    assert quota.peek(bucket, now_us=T0 + MINUTES_12).tokens_left == 1


def test_a_charge_is_taken_once_per_key_however_often_it_is_repeated(quota):
    bucket = _failed()
    once = f"quota:test:once:{uuid.uuid4().hex}"
    assert quota.charge(bucket, once, now_us=T0)
    assert not quota.charge(bucket, once, now_us=T0)
    assert not quota.charge(bucket, once, now_us=T0 + 5)
    assert quota.peek(bucket, now_us=T0).tokens_left == 4


def test_a_charge_on_an_empty_bucket_is_never_refused_and_never_pushes_it_below_empty(quota):
    # As at Let's Encrypt, whose spend of a failed authorization is best effort: a sixth failure
    # (orders placed while one token was left) does not make the wait longer than the fifth did.
    bucket = _failed()
    _charge(quota, bucket, 5)
    _charge(quota, bucket, 3)
    assert quota.peek(bucket, now_us=T0) == (0, MINUTES_12)


def test_an_empty_check_only_bucket_makes_every_order_wait_for_its_next_token_and_books_nothing(quota):
    bucket = _failed()
    _charge(quota, bucket, 5)
    first = quota.spend("a", [bucket], now_us=T0 + 60)
    second = quota.spend("b", [bucket], now_us=T0 + 60)
    assert (first.granted, first.wait_us, first.waiting_for) == (False, MINUTES_12 - 60, bucket.key)
    # Nothing was booked: the second waiter waits for the same token, and both may go then.
    assert second.wait_us == MINUTES_12 - 60
    assert quota.spend("a", [bucket], now_us=T0 + MINUTES_12).granted
    assert quota.spend("b", [bucket], now_us=T0 + MINUTES_12).granted
    assert quota.peek(bucket, now_us=T0 + MINUTES_12).tokens_left == 1


def test_waiting_for_a_check_only_bucket_takes_nothing_from_the_others_until_it_has_a_token(quota):
    failed, roomy = _failed(), Bucket(f"quota:test:roomy:{uuid.uuid4().hex}", 50, 10**9)
    _charge(quota, failed, 5)
    waiting = quota.spend("order", [roomy, failed], now_us=T0)
    assert (waiting.granted, waiting.waiting_for) == (False, failed.key)
    assert quota.peek(roomy, now_us=T0).tokens_left == 50
    assert quota.spend("order", [roomy, failed], now_us=T0 + MINUTES_12).granted
    assert quota.peek(roomy, now_us=T0 + MINUTES_12).tokens_left == 49
    # Spending it again takes nothing more from either.
    assert quota.spend("order", [roomy, failed], now_us=T0 + MINUTES_12).granted
    assert quota.peek(roomy, now_us=T0 + MINUTES_12).tokens_left == 49
    assert quota.peek(failed, now_us=T0 + MINUTES_12).tokens_left == 1


def test_the_later_of_a_booked_token_and_the_failed_authorization_token_decides_the_wait(quota):
    failed, single = _failed(), Bucket(f"quota:test:single:{uuid.uuid4().hex}", 1, 1_000)
    assert quota.spend("earlier", [single], now_us=T0).granted
    _charge(quota, failed, 5)
    waiting = quota.spend("order", [single, failed], now_us=T0)
    assert (waiting.wait_us, waiting.waiting_for) == (MINUTES_12, failed.key)
    # Its place in the single bucket's line is booked for that time, not taken twice.
    assert quota.spend("order", [single, failed], now_us=T0 + MINUTES_12).granted
    assert quota.spend("later", [single], now_us=T0 + MINUTES_12).wait_us == 1_000


def test_a_lost_failed_authorization_bucket_is_full_again(quota, quota_redis):
    bucket = _failed()
    _charge(quota, bucket, 5)
    quota_redis.delete(bucket.key)
    assert quota.spend("order", [bucket], now_us=T0).granted
    assert quota.peek(bucket, now_us=T0).tokens_left == 5


def test_a_sync_with_the_cas_429_empties_the_failed_authorization_bucket_until_its_retry_time(quota):
    bucket = _failed()
    assert quota.sync(bucket, T0 + 30 * 60 * 1_000_000, now_us=T0)
    assert quota.spend("order", [bucket], now_us=T0).wait_us == 30 * 60 * 1_000_000


# --- the policy: which bucket, the customer's message, once per authorization --------------------


@pytest.fixture
def fresh_policy(quota_redis, monkeypatch):
    monkeypatch.setattr(quota_policy, "_quota", None)
    yield
    quota_policy._quota = None


def test_the_failed_authorization_waiting_message_says_how_many_of_which_name_and_when():
    bucket = quota_policy.failed_authz_bucket("shop.example.com", 1)
    at = datetime.datetime(2026, 12, 1, 9, 30, tzinfo=datetime.UTC)
    assert quota_policy.waiting_message(bucket, at) == (
        "5 failed validations of shop.example.com in the last hour: Let's Encrypt allows 5; "
        "next attempt at 2026-12-01 09:30:00 UTC"
    )


@pytest.mark.django_db
def test_a_name_with_five_failed_authorizations_waits_for_its_next_token_new_or_renewal(fresh_policy):
    domain = DomainFactory(name=f"fails-{uuid.uuid4().hex[:8]}.example.org")
    account = AcmeAccountFactory()
    for k in range(5):
        assert quota_policy.charge_failed_authorization(account.pk, domain.name, f"https://ca/authz/{k}")
    before = timezone.now()
    for renewal in (False, True):
        candidate = quota_policy.Candidate(domain.pk, domain.name, None, renewal=renewal)
        outcome = quota_policy.reserve([candidate], account.pk)[domain.pk]
        assert isinstance(outcome, quota_policy.Waiting)
        assert 11 * 60 < (outcome.until - before).total_seconds() <= 12 * 60 + 1
        assert outcome.message == (
            f"5 failed validations of {domain.name} in the last hour: Let's Encrypt allows 5; "
            f"next attempt at {quota_policy.when(outcome.until)}"
        )
    # Another account's failures are its own.
    other = AcmeAccountFactory(directory_url="https://other.example/directory")
    candidate = quota_policy.Candidate(domain.pk, domain.name, None, renewal=False)
    assert isinstance(quota_policy.reserve([candidate], other.pk)[domain.pk], quota_policy.Granted)


@pytest.mark.django_db
def test_an_authorization_read_invalid_twice_is_charged_once(fresh_policy):
    name = f"twice-{uuid.uuid4().hex[:8]}.example.org"
    assert quota_policy.charge_failed_authorization(9, name, "https://ca/authz/same")
    assert not quota_policy.charge_failed_authorization(9, name, "https://ca/authz/same")
    level = quota_policy.get_quota().peek(quota_policy.failed_authz_bucket(name, 9))
    assert level.tokens_left == 4


@pytest.mark.django_db
def test_four_failures_leave_room_for_one_more_order(fresh_policy):
    domain = DomainFactory(name=f"four-{uuid.uuid4().hex[:8]}.example.org")
    account = AcmeAccountFactory()
    for k in range(4):
        quota_policy.charge_failed_authorization(account.pk, domain.name, f"https://ca/authz/four/{k}")
    candidate = quota_policy.Candidate(domain.pk, domain.name, None, renewal=False)
    assert isinstance(quota_policy.reserve([candidate], account.pk)[domain.pk], quota_policy.Granted)


@pytest.mark.django_db
def test_the_cas_429_for_failed_authorizations_makes_the_domain_and_our_bucket_wait_until_its_retry_time(
    fresh_policy,
):
    domain = DomainFactory(
        name=f"ca-counted-{uuid.uuid4().hex[:8]}.example.org", status=DomainStatus.CREATING
    )
    account = AcmeAccountFactory()
    held = uuid.uuid4()
    order = Order.objects.create(
        domain=domain, account=account, names=[domain.name], state=OrderState.PENDING, lease_token=held
    )
    # Boulder's wording (ratelimits/limiter.go): failures another client of the account caused.
    problem = messages.Error.with_code(
        "rateLimited",
        detail=f'too many failed authorizations (5) for "{domain.name}" in the last 1h0m0s, retry after '
        "2026-08-21 06:27:45 UTC: see https://letsencrypt.org/docs/rate-limits/"
        "#authorization-failures-per-identifier-per-account",
    )
    problem.retry_after = "1500"
    assert order_run.rate_limited(order, held, problem).startswith("rate limited until ")
    domain.refresh_from_db()
    assert domain.status == DomainStatus.CREATING
    assert 1490 < (domain.next_attempt_at - timezone.now()).total_seconds() <= 1500
    level = quota_policy.get_quota().peek(quota_policy.failed_authz_bucket(domain.name, account.pk))
    assert level.tokens_left == 0
    assert 1490 < level.next_token_in_us / 1e6 <= 1500
    assert not order_run.REGISTERED_DOMAIN_LIMIT.search(problem.detail)
