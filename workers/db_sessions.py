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
from django.db import InterfaceError, OperationalError, connections

# Celery's retry options for idempotent tasks: 2, 4, 8, 16, then every 30 s, about 4 minutes in all,
# after which the lease and the sweep take over as for a lost task.
RETRY_WHILE_DATABASE_DOWN = {
    "autoretry_for": (OperationalError, InterfaceError),
    "retry_backoff": 2,
    "retry_backoff_max": 30,
    "retry_jitter": False,
    "max_retries": 10,
}


def drop_broken_connections() -> None:
    """Closes this process's database connections that are broken or past CONN_MAX_AGE, as
    Django does between two requests; never one inside a transaction (a test's, or a caller's)."""
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close_if_unusable_or_obsolete()


@task_prerun.connect
def _drop_broken_connections_before_task(sender=None, **kwargs) -> None:
    drop_broken_connections()
