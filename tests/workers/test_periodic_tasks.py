"""Beat's schedule lives in the database (django-celery-beat), created by a data migration."""

import pytest
from django_celery_beat.models import PeriodicTask

from config.celery import app as celery_app

pytestmark = pytest.mark.django_db


def test_migration_creates_the_heartbeat_periodic_task_on_the_default_queue():
    task = PeriodicTask.objects.get(name="Worker heartbeat")
    assert task.task == "workers.tasks.housekeeping.heartbeat"
    assert (task.interval.every, task.interval.period) == (30, "seconds")
    assert task.queue == "default"
    assert task.enabled


def test_every_periodic_task_names_a_registered_celery_task():
    celery_app.loader.import_default_modules()
    registered = set(celery_app.tasks)
    for task in PeriodicTask.objects.exclude(name__startswith="celery."):
        assert task.task in registered, task.name


def test_celery_uses_json_only_and_routes_queues():
    conf = celery_app.conf
    assert conf.task_serializer == "json"
    assert conf.accept_content == ["json"]
    assert conf.beat_scheduler == "workers.beat_scheduler:LeaderScheduler"
    assert conf.task_routes["workers.tasks.dns.*"] == {"queue": "dns"}
    assert conf.task_routes["workers.tasks.acme.*"] == {"queue": "acme"}
    assert conf.worker_send_task_events is True
    assert conf.task_time_limit and conf.task_soft_time_limit


def test_migration_creates_the_hourly_ledger_pruning_on_the_default_queue():
    task = PeriodicTask.objects.get(name="Prune the issuance ledger")
    assert task.task == "workers.tasks.housekeeping.prune_issuances"
    assert (task.interval.every, task.interval.period, task.queue) == (3600, "seconds", "default")
