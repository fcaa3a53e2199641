"""/healthz: each dependency with its own state; non-200 when one is down or beat is stale."""

from __future__ import annotations

import datetime

import pytest
from django.utils import timezone

from devstack.ports import free_port
from workers.heartbeat import record_heartbeat
from workers.models import Heartbeat

pytestmark = pytest.mark.django_db


def _fresh_heartbeats(age_seconds: float = 5) -> None:
    at = timezone.now() - datetime.timedelta(seconds=age_seconds)
    record_heartbeat(Heartbeat.Source.BEAT, at)
    record_heartbeat(Heartbeat.Source.WORKER, at)


def test_healthy_stack_answers_200_and_names_each_dependency(client):
    _fresh_heartbeats()
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"postgresql", "broker", "quota_redis", "beat", "worker"}
    assert all(check["ok"] for check in body["checks"].values())


def test_beat_older_than_three_ticks_makes_health_503(client, settings):
    _fresh_heartbeats(age_seconds=settings.HEALTH_BEAT_MAX_AGE_SECONDS + 30)
    response = client.get("/healthz")
    assert response.status_code == 503
    beat = response.json()["checks"]["beat"]
    assert beat["ok"] is False
    assert f"more than {settings.HEALTH_BEAT_MAX_AGE_SECONDS} s" in beat["detail"]


def test_beat_never_seen_makes_health_503(client):
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["beat"]["detail"] == "never seen"


def test_quota_redis_down_makes_health_503_and_only_that_check_fails(client, settings):
    _fresh_heartbeats()
    settings.QUOTA_REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    response = client.get("/healthz")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["quota_redis"]["ok"] is False
    assert "ConnectionError" in checks["quota_redis"]["detail"]
    assert checks["broker"]["ok"] and checks["postgresql"]["ok"]


def test_broker_down_makes_health_503(client, settings):
    _fresh_heartbeats()
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{free_port()}/0"
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["broker"]["ok"] is False


def test_stale_worker_is_reported_but_does_not_take_web_out_of_rotation(client, settings):
    record_heartbeat(Heartbeat.Source.BEAT)
    record_heartbeat(
        Heartbeat.Source.WORKER,
        timezone.now() - datetime.timedelta(seconds=settings.HEALTH_BEAT_MAX_AGE_SECONDS * 2),
    )
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["checks"]["worker"] == {
        "ok": False,
        "critical": False,
        "detail": response.json()["checks"]["worker"]["detail"],
    }
    assert "more than" in response.json()["checks"]["worker"]["detail"]
