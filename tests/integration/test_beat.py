"""A real beat, reading its schedule from PostgreSQL, drives a real worker; /healthz sees both."""

from __future__ import annotations

import importlib
import time

import pytest
from django.apps import apps
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from devstack.commands import beat_command
from devstack.processes import ManagedProcess
from tests.conftest import RUN_DIR, celery_subprocess_env
from workers.models import Heartbeat

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _restore_migrated_schedule_every_two_seconds() -> None:
    # Transactional tests flush tables between tests; put back what the data migration creates,
    # then edit it as an operator would in the admin, so the test need not wait 30 s.
    migration = importlib.import_module("workers.migrations.0002_periodic_tasks")
    migration.create(apps, None)
    every_two, _ = IntervalSchedule.objects.get_or_create(every=2, period=IntervalSchedule.SECONDS)
    task = PeriodicTask.objects.get(name="Worker heartbeat")
    task.interval = every_two
    task.save()


def test_beat_sends_the_heartbeat_a_worker_runs_it_and_healthz_turns_green(celery_worker, client):
    _restore_migrated_schedule_every_two_seconds()
    assert client.get("/healthz").status_code == 503
    beat = ManagedProcess(
        "beat",
        beat_command(str(RUN_DIR / "celerybeat-schedule")),
        RUN_DIR / "logs",
        env=celery_subprocess_env(),
    ).start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and Heartbeat.objects.count() < 2:
            time.sleep(0.2)
        assert set(Heartbeat.objects.values_list("source", flat=True)) == {"beat", "worker"}, beat.log_tail()
    finally:
        beat.stop()
    response = client.get("/healthz")
    assert response.status_code == 200, response.json()
    assert "DatabaseScheduler" in beat.log_path.read_text()
