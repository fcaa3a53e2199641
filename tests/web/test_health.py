"""/healthz: each dependency with its own state; non-200 when one is down or beat is stale."""

from __future__ import annotations

import datetime

import pytest
from django.utils import timezone

from certificates.issuers import record_ca_failure
from devstack.ports import free_port
from workers.heartbeat import record_heartbeat
from workers.models import BeatLease, Heartbeat

pytestmark = pytest.mark.django_db


def _fresh_heartbeats(age_seconds: float = 5) -> None:
    at = timezone.now() - datetime.timedelta(seconds=age_seconds)
    record_heartbeat(Heartbeat.Source.BEAT, at)
    record_heartbeat(Heartbeat.Source.BEAT_STANDBY, at)
    record_heartbeat(Heartbeat.Source.WORKER, at)
    _lease(expires_in_seconds=15)


def _lease(expires_in_seconds: float) -> BeatLease:
    now = timezone.now()
    expires_at = now + datetime.timedelta(seconds=expires_in_seconds)
    return BeatLease.objects.update_or_create(
        id=BeatLease.SINGLETON_ID,
        defaults={
            "holder": "beat-1:4242:0a0b0c0d",
            "host": "beat-1",
            "pid": 4242,
            "term": 7,
            "acquired_at": now - datetime.timedelta(hours=1),
            "renewed_at": expires_at - datetime.timedelta(seconds=20),
            "expires_at": expires_at,
        },
    )[0]


def test_healthy_stack_answers_200_and_names_each_dependency(client):
    _fresh_heartbeats()
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {
        "postgresql",
        "broker",
        "quota_redis",
        "beat",
        "beat_standby",
        "beat_leader",
        "worker",
        "issuer_letsencrypt",
    }
    assert all(check["ok"] for check in body["checks"].values())


def test_an_issuer_failing_on_its_side_is_named_but_keeps_health_200(client, settings):
    _fresh_heartbeats()
    settings.ISSUER_BREAKER_FAILURES = 1
    record_ca_failure(settings.ACME_DIRECTORY_URL, "could not reach the CA: ConnectionError")

    response = client.get("/healthz")

    assert response.status_code == 200
    issuer = response.json()["checks"]["issuer_letsencrypt"]
    assert not issuer["ok"] and not issuer["critical"]
    assert "failing on its side" in issuer["detail"] and "ConnectionError" in issuer["detail"]


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


def test_healthz_names_the_leading_beat_and_stays_200(client):
    _fresh_heartbeats()
    response = client.get("/healthz")
    assert response.status_code == 200
    leader = response.json()["checks"]["beat_leader"]
    assert leader["ok"] is True
    assert leader["detail"].startswith("beat-1 pid 4242 (term 7) leads since ")


def test_no_beat_leading_is_said_but_does_not_take_web_out_of_rotation_during_a_takeover(client):
    _fresh_heartbeats()
    _lease(expires_in_seconds=-12)
    response = client.get("/healthz")
    assert response.status_code == 200
    leader = response.json()["checks"]["beat_leader"]
    assert leader == {"ok": False, "critical": False, "detail": leader["detail"]}
    assert leader["detail"].startswith("no beat leads: beat-1 pid 4242 (term 7)'s lease ended 1")


def test_no_beat_ever_led_is_said(client):
    _fresh_heartbeats()
    BeatLease.objects.all().delete()
    assert (
        client.get("/healthz").json()["checks"]["beat_leader"]["detail"] == "no beat leads: none has ever run"
    )


def test_a_missing_standby_is_reported_but_does_not_take_web_out_of_rotation(client):
    _fresh_heartbeats()
    Heartbeat.objects.filter(source=Heartbeat.Source.BEAT_STANDBY).delete()
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["checks"]["beat_standby"] == {
        "ok": False,
        "critical": False,
        "detail": "never seen",
    }
