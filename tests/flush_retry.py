"""A transactional test's teardown empties every table with one TRUNCATE, which locks the tables one
after another. The session's worker, web and feed processes keep running between tests, and one of
them may be inside a transaction that holds one of those tables and waits on another: PostgreSQL
then ends one side of the deadlock, and when it ends the TRUNCATE the flush fails, the next test
finds the last test's rows, and the run fails on something no product code did (stop 26's CI).

The flush is retried on a deadlock: the other side's transaction has gone on by then."""

from __future__ import annotations

import time

import psycopg.errors
import pytest
from django.core.management.base import CommandError
from django.test import TransactionTestCase

ATTEMPTS = 5


def _deadlocked(error: BaseException) -> bool:
    while error is not None:
        if isinstance(error, psycopg.errors.DeadlockDetected | psycopg.errors.LockNotAvailable):
            return True
        error = error.__cause__
    return False


def _flush_with_retries(original):
    def teardown(self):
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return original(self)
            except CommandError as error:
                if attempt == ATTEMPTS or not _deadlocked(error):
                    raise
                time.sleep(0.2 * attempt)
        return None

    return teardown


@pytest.fixture(scope="session", autouse=True)
def flush_retried_on_deadlock():
    original = TransactionTestCase._fixture_teardown
    TransactionTestCase._fixture_teardown = _flush_with_retries(original)
    yield
    TransactionTestCase._fixture_teardown = original
