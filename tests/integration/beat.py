"""A real `celery beat` for integration tests, on the schedule the data migrations create."""

from __future__ import annotations

import importlib

from django.apps import apps
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from devstack.commands import beat_command
from devstack.processes import ManagedProcess
from tests.conftest import RUN_DIR, celery_subprocess_env

MIGRATIONS_WITH_PERIODIC_TASKS = (
    "workers.migrations.0002_periodic_tasks",
    "workers.migrations.0003_sweep_and_redrive",
    "workers.migrations.0004_prune_issuances",
)


def restore_schedule(every: dict[str, float] | None = None) -> None:
    """Puts back what the data migrations create (transactional tests flush tables), then sets the
    interval of the named tasks (task name -> seconds) as an operator would in the admin."""
    for module in MIGRATIONS_WITH_PERIODIC_TASKS:
        importlib.import_module(module).create(apps, None)
    for task, seconds in (every or {}).items():
        interval, _ = IntervalSchedule.objects.get_or_create(every=seconds, period=IntervalSchedule.SECONDS)
        assert PeriodicTask.objects.filter(task=task).update(interval=interval) == 1, task


def start_beat(name: str, env: dict[str, str] | None = None) -> ManagedProcess:
    """A beat process on the test database and broker (`env` overrides), once it has started."""
    beat = ManagedProcess(
        name,
        beat_command(str(RUN_DIR / f"{name}-schedule")),
        RUN_DIR / "logs",
        env={**celery_subprocess_env(), **(env or {})},
    ).start()
    beat.wait_until(lambda: "beat: Starting" in beat.log_since_start(), timeout=30, what="started")
    return beat
