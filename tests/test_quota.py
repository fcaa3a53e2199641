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

from workers.quota import Bucket, Quota

T0 = 1_800_000_000_000_000  # an injected "now", in microseconds


@pytest.fixture
def quota(redis_servers) -> Quota:
    client = redis.Redis.from_url(settings.QUOTA_REDIS_URL)
    client.flushdb()
    yield Quota(client)
    client.close()


class Model:
    """GCRA as the design states it: capacity tokens, one more per interval, all-or-nothing."""

    def __init__(self, capacity: int, interval: int) -> None:
        self.capacity, self.interval, self.tat = capacity, interval, 0

    def spend(self, now: int) -> bool:
        tat = max(self.tat, now)
        if tat - (self.capacity - 1) * self.interval > now:
            return False
        self.tat = tat + self.interval
        return True

    def refund(self, now: int) -> None:
        self.tat = max(max(self.tat, now) - self.interval, now)

    def left(self, now: int) -> int:
        return max(
            0, min(self.capacity, (now + self.capacity * self.interval - max(self.tat, now)) // self.interval)
        )


@hypothesis_settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    capacity=st.integers(1, 6),
    interval=st.integers(1, 10_000),
    steps=st.lists(
        st.tuples(st.sampled_from(["spend", "refund", "wait"]), st.integers(0, 30_000)), max_size=40
    ),
)
def test_script_agrees_with_the_model_and_stays_within_capacity(quota, capacity, interval, steps):
    key = f"quota:test:{uuid.uuid4().hex}"
    bucket = Bucket(key, capacity, interval)
    model = Model(capacity, interval)
    now = T0
    granted: list[str] = []
    for action, amount in steps:
        if action == "wait":
            now += amount
        elif action == "spend":
            reservation = uuid.uuid4().hex
            decision = quota.spend(reservation, [bucket], now_us=now)
            assert decision.granted == model.spend(now)
            if decision.granted:
                granted.append(reservation)
        elif granted:
            assert quota.refund(granted.pop(), now_us=now)
            model.refund(now)
        level = quota.peek(bucket, now_us=now)
        assert 0 <= level.tokens_left <= capacity
        assert level.tokens_left == model.left(now)


def test_one_token_arrives_per_interval_and_never_more_than_the_capacity(quota):
    bucket = Bucket("quota:test:refill", 3, 1_000)
    for i in range(3):
        assert quota.spend(f"r{i}", [bucket], now_us=T0).granted
    denied = quota.spend("r3", [bucket], now_us=T0)
    assert (denied.granted, denied.wait_us) == (False, 1_000)
    assert quota.peek(bucket, now_us=T0 + 999).tokens_left == 0
    assert quota.peek(bucket, now_us=T0 + 1_000).tokens_left == 1
    assert quota.peek(bucket, now_us=T0 + 1_000).next_token_in_us == 1_000
    assert quota.peek(bucket, now_us=T0 + 100_000).tokens_left == 3


def test_a_spend_across_buckets_is_all_or_nothing(quota):
    roomy, full = Bucket("quota:test:roomy", 50, 1_000), Bucket("quota:test:full", 1, 1_000)
    assert quota.spend("a", [roomy, full], now_us=T0).granted
    assert not quota.spend("b", [roomy, full], now_us=T0).granted
    assert quota.peek(roomy, now_us=T0).tokens_left == 49


def test_a_repeated_spend_of_one_reservation_takes_one_token(quota):
    bucket = Bucket("quota:test:idem", 5, 1_000)
    for _ in range(3):
        assert quota.spend("same", [bucket], now_us=T0).granted
    assert quota.peek(bucket, now_us=T0).tokens_left == 4


def test_a_committed_reservation_cannot_be_refunded(quota):
    bucket = Bucket("quota:test:commit", 5, 1_000)
    quota.spend("issued", [bucket], now_us=T0)
    assert quota.commit("issued")
    assert not quota.refund("issued", now_us=T0)
    assert quota.peek(bucket, now_us=T0).tokens_left == 4


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
    applied = [quota.refund(reservations[i % 10], now_us=T0) for i in range(50)]
    assert sum(applied) == 10
    assert quota.peek(bucket, now_us=T0).tokens_left == 50
