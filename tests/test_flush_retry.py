"""The test run's own flush (tests/flush_retry.py) is retried on a deadlock, and only on one."""

from __future__ import annotations

import psycopg.errors
import pytest
from django.core.management.base import CommandError

from tests import flush_retry


def _failing(times: int, cause: Exception):
    calls = []

    def teardown(_case):
        calls.append(1)
        if len(calls) <= times:
            raise CommandError("Database test_certwright couldn't be flushed.") from cause
        return "flushed"

    return teardown, calls


def test_a_flush_ended_by_a_deadlock_is_tried_again_until_it_goes_through(monkeypatch):
    monkeypatch.setattr(flush_retry.time, "sleep", lambda _seconds: None)
    teardown, calls = _failing(2, psycopg.errors.DeadlockDetected("deadlock detected"))
    assert flush_retry._flush_with_retries(teardown)(object()) == "flushed"
    assert len(calls) == 3


def test_a_flush_that_fails_for_another_reason_is_not_tried_again():
    teardown, calls = _failing(1, psycopg.errors.UndefinedTable("relation does not exist"))
    with pytest.raises(CommandError):
        flush_retry._flush_with_retries(teardown)(object())
    assert len(calls) == 1


def test_a_flush_deadlocked_every_time_fails_after_the_last_attempt(monkeypatch):
    monkeypatch.setattr(flush_retry.time, "sleep", lambda _seconds: None)
    teardown, calls = _failing(99, psycopg.errors.DeadlockDetected("deadlock detected"))
    with pytest.raises(CommandError):
        flush_retry._flush_with_retries(teardown)(object())
    assert len(calls) == flush_retry.ATTEMPTS
