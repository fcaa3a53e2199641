"""The quota script against a pure-Python GCRA model, at injected times, on the real Redis."""

from __future__ import annotations

import multiprocessing
import threading
import uuid

import pytest
import redis
from django.conf import settings
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from domains.quota import SINCE_KEY, Bucket, Quota, QuotaUnavailable, replay

T0 = 1_800_000_000_000_000  # an injected "now", in microseconds
WEEK_US = 7 * 24 * 3600 * 1_000_000


@pytest.fixture
def quota(quota_redis) -> Quota:
    return Quota(quota_redis)


class Model:
    """GCRA as the design states it: capacity tokens, one more per interval; a denied spend books
    the next free token for its reservation, which it gets when it comes back at that time. Once
    the bucket is full again, every token has come back: earlier reservations are void (nothing
    to refund; spending one again takes a new token), as when Redis expires the full bucket."""

    def __init__(self, capacity: int, interval: int) -> None:
        self.capacity, self.interval, self.tat = capacity, interval, 0
        self.ready: dict[str, int] = {}

    def _full_again(self, now: int) -> None:
        if self.tat <= now:
            self.ready.clear()

    def spend(self, reservation: str, now: int) -> tuple[bool, int]:
        self._full_again(now)
        if reservation in self.ready:
            wait = self.ready[reservation] - now
            return (wait <= 0, max(wait, 0))
        tat = max(self.tat, now)
        allowed = tat - (self.capacity - 1) * self.interval
        self.tat = tat + self.interval
        self.ready[reservation] = max(allowed, now)
        return (allowed <= now, max(allowed - now, 0))

    def refund(self, reservation: str, now: int) -> bool:
        self._full_again(now)
        if self.ready.pop(reservation, None) is None:
            return False
        if self.tat > now:
            self.tat = max(self.tat - self.interval, now)
        return True

    def left(self, now: int) -> int:
        tat = max(self.tat, now)
        return max(0, min(self.capacity, (now + self.capacity * self.interval - tat) // self.interval))


@hypothesis_settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    capacity=st.integers(1, 6),
    interval=st.integers(1, 10_000),
    steps=st.lists(
        st.tuples(st.sampled_from(["spend", "again", "refund", "wait"]), st.integers(0, 30_000)),
        max_size=40,
    ),
)
def test_script_agrees_with_the_model_and_stays_within_capacity(quota, capacity, interval, steps):
    bucket = Bucket(f"quota:test:{uuid.uuid4().hex}", capacity, interval)
    model = Model(capacity, interval)
    now = T0
    reservations: list[str] = []
    for action, amount in steps:
        if action == "wait":
            now += amount
        elif action == "spend" or (action == "again" and not reservations):
            reservations.append(uuid.uuid4().hex)
            decision = quota.spend(reservations[-1], [bucket], now_us=now)
            assert (decision.granted, decision.wait_us) == model.spend(reservations[-1], now)
        elif action == "again":
            reservation = reservations[amount % len(reservations)]
            decision = quota.spend(reservation, [bucket], now_us=now)
            assert (decision.granted, decision.wait_us) == model.spend(reservation, now)
        elif reservations:
            reservation = reservations.pop(amount % len(reservations))
            assert quota.refund(reservation, [bucket], now_us=now) == model.refund(reservation, now)
        level = quota.peek(bucket, now_us=now)
        assert 0 <= level.tokens_left <= capacity
        assert level.tokens_left == model.left(now)


def test_one_token_arrives_per_interval_and_never_more_than_the_capacity(quota):
    bucket = Bucket("quota:test:refill", 3, 1_000)
    for i in range(3):
        assert quota.spend(f"r{i}", [bucket], now_us=T0).granted
    assert quota.peek(bucket, now_us=T0).tokens_left == 0
    assert quota.peek(bucket, now_us=T0 + 999).tokens_left == 0
    assert quota.peek(bucket, now_us=T0 + 1_000).tokens_left == 1
    assert quota.peek(bucket, now_us=T0 + 1_000).next_token_in_us == 1_000
    assert quota.peek(bucket, now_us=T0 + 2_000).tokens_left == 2
    assert quota.peek(bucket, now_us=T0 + 100_000).tokens_left == 3


def test_the_kth_waiter_of_an_empty_bucket_is_booked_at_the_kth_next_token(quota):
    bucket = Bucket("quota:test:queue", 2, 1_000)
    assert quota.spend("a", [bucket], now_us=T0).granted
    assert quota.spend("b", [bucket], now_us=T0).granted
    waits = [quota.spend(f"w{k}", [bucket], now_us=T0 + 10).wait_us for k in range(1, 4)]
    assert waits == [990, 1_990, 2_990]
    # A newcomer after them is behind them, even once a token has arrived.
    assert quota.spend("late", [bucket], now_us=T0 + 1_500).wait_us == 2_500


def test_a_waiter_that_comes_back_early_keeps_its_place_and_gets_its_token_on_time(quota):
    bucket = Bucket("quota:test:back", 1, 1_000)
    assert quota.spend("first", [bucket], now_us=T0).granted
    assert quota.spend("second", [bucket], now_us=T0).wait_us == 1_000
    early = quota.spend("second", [bucket], now_us=T0 + 400)
    assert (early.granted, early.wait_us) == (False, 600)
    assert quota.spend("second", [bucket], now_us=T0 + 1_000).granted
    # Its token was booked, not taken again: the next one is still one interval later.
    assert quota.spend("third", [bucket], now_us=T0 + 1_000).wait_us == 1_000


def test_a_spend_across_buckets_is_all_or_nothing_and_names_the_bucket_it_waits_for(quota):
    roomy, full = Bucket("quota:test:roomy", 50, 10**9), Bucket("quota:test:full", 1, 1_000)
    assert quota.spend("a", [roomy, full], now_us=T0).granted
    waiting = quota.spend("b", [roomy, full], now_us=T0)
    assert (waiting.granted, waiting.waiting_for) == (False, "quota:test:full")
    # The roomy bucket is only spent when the waiter gets its token.
    assert quota.peek(roomy, now_us=T0).tokens_left == 49
    assert quota.spend("b", [roomy, full], now_us=T0 + 1_000).granted
    assert quota.peek(roomy, now_us=T0 + 1_000).tokens_left == 48


def test_a_repeated_spend_of_one_reservation_takes_one_token(quota):
    bucket = Bucket("quota:test:idem", 5, 1_000)
    for _ in range(3):
        assert quota.spend("same", [bucket], now_us=T0).granted
    assert quota.peek(bucket, now_us=T0).tokens_left == 4


def test_a_committed_reservation_cannot_be_refunded(quota):
    bucket = Bucket("quota:test:commit", 5, 1_000)
    quota.spend("issued", [bucket], now_us=T0)
    assert quota.commit("issued", [bucket])
    assert not quota.refund("issued", [bucket], now_us=T0)
    assert quota.peek(bucket, now_us=T0).tokens_left == 4


def test_refunding_a_booked_token_gives_its_slot_to_the_next_newcomer(quota):
    bucket = Bucket("quota:test:release", 1, 1_000)
    quota.spend("holder", [bucket], now_us=T0)
    assert quota.spend("w1", [bucket], now_us=T0).wait_us == 1_000
    assert quota.spend("w2", [bucket], now_us=T0).wait_us == 2_000
    assert quota.refund("w1", [bucket], now_us=T0)
    assert quota.spend("newcomer", [bucket], now_us=T0).wait_us == 2_000
    assert quota.spend("w2", [bucket], now_us=T0 + 2_000).granted


def test_a_lost_durable_bucket_is_rebuilt_not_assumed_full(quota_redis):
    seen = []

    def rebuild(bucket):
        seen.append(bucket.key)
        return replay([T0 - 10, T0 - 5], bucket)  # two certificates issued just before

    quota = Quota(quota_redis, rebuild=rebuild)
    bucket = Bucket("quota:rd:example.com", 3, 1_000_000, durable=True, subject="example.com")
    assert quota.spend("a", [bucket], now_us=T0).granted
    assert seen == ["quota:rd:example.com"]
    assert not quota.spend("b", [bucket], now_us=T0).granted
    # Rebuilt once: the key now holds the state, even when full again.
    assert quota.peek(bucket, now_us=T0 + 10_000_000).tokens_left == 3
    assert seen == ["quota:rd:example.com"]


def test_a_missing_durable_bucket_is_full_once_the_state_is_a_period_old(quota_redis):
    quota = Quota(quota_redis, rebuild=lambda bucket: pytest.fail("nothing to rebuild"))
    quota_redis.set(SINCE_KEY, T0 - WEEK_US - 1)
    bucket = Bucket("quota:rd:old.example", 50, WEEK_US // 50, durable=True, subject="old.example")
    assert quota.peek(bucket, now_us=T0).tokens_left == 50


def test_a_lost_durable_bucket_without_a_rebuilder_is_unavailable_not_full(quota):
    bucket = Bucket("quota:rd:lost.example", 50, WEEK_US // 50, durable=True, subject="lost.example")
    with pytest.raises(QuotaUnavailable):
        quota.spend("x", [bucket], now_us=T0)


def test_a_sync_empties_the_bucket_until_the_cas_retry_time_and_never_loosens_it(quota):
    bucket = Bucket("quota:test:sync", 50, 1_000)
    assert quota.sync(bucket, T0 + 5_000, now_us=T0)
    level = quota.peek(bucket, now_us=T0)
    assert (level.tokens_left, level.next_token_in_us) == (0, 5_000)
    assert not quota.sync(bucket, T0 + 1_000, now_us=T0)
    assert quota.peek(bucket, now_us=T0 + 5_000).tokens_left == 1


def test_the_script_is_loaded_again_after_redis_forgets_it(quota, quota_redis):
    bucket = Bucket("quota:test:noscript", 5, 1_000)
    assert quota.spend("before", [bucket], now_us=T0).granted
    quota_redis.script_flush()
    assert quota.spend("after", [bucket], now_us=T0).granted
    assert quota.peek(bucket, now_us=T0).tokens_left == 3


def test_an_unreachable_quota_store_raises_quota_unavailable():
    dead = Quota(redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5))
    with pytest.raises(QuotaUnavailable, match="quota store did not answer"):
        dead.spend("x", [Bucket("quota:test:dead", 1, 1)])


def _spend_many(url: str, key: str, count: int, results) -> None:
    quota = Quota(redis.Redis.from_url(url))
    # Let's Encrypt's registered-domain limit: 50 tokens, one more every 201.6 minutes.
    bucket = Bucket(key, 50, 12_096_000_000)
    for _ in range(count):
        results.put(quota.spend(uuid.uuid4().hex, [bucket]).granted)


def test_500_concurrent_spends_from_threads_and_processes_grant_exactly_50(quota):
    key = "quota:test:race"
    results: multiprocessing.Queue = multiprocessing.get_context("fork").Queue()
    workers = [
        threading.Thread(target=_spend_many, args=(settings.QUOTA_REDIS_URL, key, 50, results))
        for _ in range(6)
    ]
    workers += [
        multiprocessing.get_context("fork").Process(
            target=_spend_many, args=(settings.QUOTA_REDIS_URL, key, 50, results)
        )
        for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    outcomes = [results.get(timeout=10) for _ in range(500)]
    assert sum(outcomes) == 50


def test_50_duplicate_refunds_of_10_reservations_restore_exactly_10(quota):
    bucket = Bucket("quota:test:refunds", 50, 10**12)
    reservations = [f"res-{i}" for i in range(10)]
    for reservation in reservations:
        assert quota.spend(reservation, [bucket], now_us=T0).granted
    applied = [quota.refund(reservations[i % 10], [bucket], now_us=T0) for i in range(50)]
    assert sum(applied) == 10
    assert quota.peek(bucket, now_us=T0).tokens_left == 50
