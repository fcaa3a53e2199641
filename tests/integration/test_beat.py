"""A real beat, reading its schedule from PostgreSQL, drives a real worker; /healthz sees both."""

from __future__ import annotations

import time

import pytest

from tests.integration.beat import restore_schedule, start_beat
from workers.models import Heartbeat

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_beat_sends_the_heartbeat_a_worker_runs_it_and_healthz_turns_green(celery_worker, client):
    restore_schedule({"workers.tasks.housekeeping.heartbeat": 2})
    assert client.get("/healthz").status_code == 503
    beat = start_beat("beat")
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
