"""Worker and beat processes get over a PostgreSQL restart by themselves.

A task of the issuance path that could not reach PostgreSQL is sent again a few seconds later
(RETRY_WHILE_DATABASE_DOWN) rather than dropped: its domain or order would otherwise wait for its
lease to expire and the next sweep (up to DOMAIN_CHECK_LEASE_SECONDS + 60 s for a check). Those
tasks are idempotent, so a retry of one that got further than it seemed does nothing twice.

Celery's Django fix-up keeps a process's database connection from one task to the next
(CELERY_DB_REUSE_MAX) and, unlike Django's request cycle, never asks whether it still works: after
PostgreSQL restarted, every process whose session was cut failed each task with "the connection is
lost" until it had run 2,000 of them (bench/faults.py found a worker doing so for minutes), and
beat's heartbeat stayed stale. Django's own rule for requests fixes it: before each task, a
connection that saw an error and no longer answers, or that is older than CONN_MAX_AGE, is closed,
and the task opens a fresh one. A healthy connection costs nothing (no query is sent unless an
error occurred).
"""

from __future__ import annotations

from celery.signals import task_prerun
from django.db import InterfaceError, OperationalError, connection, connections

# Celery's retry options for idempotent tasks: 2, 4, 8, 16, then every 30 s, about 4 minutes in all,
# after which the lease and the sweep take over as for a lost task.
RETRY_WHILE_DATABASE_DOWN = {
    "autoretry_for": (OperationalError, InterfaceError),
    "retry_backoff": 2,
    "retry_backoff_max": 30,
    "retry_jitter": False,
    "max_retries": 10,
}


class DatabaseLost(Exception):
    """PostgreSQL went away while an order step held its lease: the retry takes the lease over with
    `held` (still the row's lease token, since nothing could be written) instead of waiting for it
    to expire."""

    def __init__(self, held: str) -> None:
        super().__init__(f"PostgreSQL could not be reached while holding lease {held}")
        self.held = held


def retry_countdown(retries: int) -> int:
    """The countdown of RETRY_WHILE_DATABASE_DOWN's `retries`-th retry."""
    return min(
        RETRY_WHILE_DATABASE_DOWN["retry_backoff"] * 2**retries,
        RETRY_WHILE_DATABASE_DOWN["retry_backoff_max"],
    )


def database_unreachable(exc: BaseException) -> bool:
    """Whether `exc` means PostgreSQL cannot be reached (a database error after which this
    process's connection no longer answers), rather than one statement that failed on its own (a
    timeout, a bug), which must keep being handled as the caller's own error."""
    if not isinstance(exc, (OperationalError, InterfaceError)):
        return False
    return connection.connection is None or not connection.is_usable()


def drop_broken_connections() -> None:
    """Closes this process's database connections that are broken or past CONN_MAX_AGE, as
    Django does between two requests; never one inside a transaction (a test's, or a caller's)."""
    for opened in connections.all(initialized_only=True):
        if not opened.in_atomic_block:
            opened.close_if_unusable_or_obsolete()


@task_prerun.connect
def _drop_broken_connections_before_task(sender=None, **kwargs) -> None:
    drop_broken_connections()
