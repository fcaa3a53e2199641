"""The delivery task's helpers (workers/tasks/webhooks.py): a run that keeps finding full batches
asks for one more run, once, and never beyond WEBHOOK_PARALLEL_RUNS running; a run asked for
beyond the cap ends at once."""

from __future__ import annotations

from collections import Counter

import pytest

from workers import webhook_delivery
from workers.tasks import webhooks


@pytest.fixture
def asked(monkeypatch, quota_redis) -> list[int]:
    """The task's own body, run here; its requests for helpers counted instead of sent."""
    calls: list[int] = []
    monkeypatch.setattr(webhooks.deliver_webhooks, "delay", lambda: calls.append(1))
    return calls


def test_a_run_with_many_full_batches_asks_for_one_helper(monkeypatch, asked, settings):
    settings.WEBHOOK_PARALLEL_RUNS = 4

    def deliver(more_hands=None, **_):
        for _ in range(10):  # ten full batches
            more_hands()
        return Counter(delivered=10)

    monkeypatch.setattr(webhook_delivery, "deliver", deliver)

    assert webhooks.deliver_webhooks.run() == {"delivered": 10}
    assert len(asked) == 1


def test_no_helper_is_asked_for_at_the_cap_and_a_run_beyond_it_ends_at_once(
    monkeypatch, asked, settings, quota_redis
):
    settings.WEBHOOK_PARALLEL_RUNS = 2
    ran = []

    def deliver(more_hands=None, **_):
        ran.append(1)
        more_hands()
        return Counter()

    monkeypatch.setattr(webhook_delivery, "deliver", deliver)
    quota_redis.set(webhooks.RUNNING_KEY, 1)  # another run is going: this one is the second

    webhooks.deliver_webhooks.run()
    assert (len(ran), asked) == (1, [])

    quota_redis.set(webhooks.RUNNING_KEY, 2)  # two going: a third ends at once
    assert webhooks.deliver_webhooks.run() == {"skipped": 1}
    assert len(ran) == 1
    assert int(quota_redis.get(webhooks.RUNNING_KEY)) == 2
