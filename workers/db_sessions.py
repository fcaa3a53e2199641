"""Worker and beat processes get over a PostgreSQL restart by themselves.

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
from django.db import connections


def drop_broken_connections() -> None:
    """Closes this process's database connections that are broken or past CONN_MAX_AGE, as
    Django does between two requests; never one inside a transaction (a test's, or a caller's)."""
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close_if_unusable_or_obsolete()


@task_prerun.connect
def _drop_broken_connections_before_task(sender=None, **kwargs) -> None:
    drop_broken_connections()
