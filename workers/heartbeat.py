"""Records that beat ticked and that a worker ran, so that /healthz can tell a dead beat from a live one.

A dead beat is silent: nothing fails, certificates just stop being renewed. So beat stamps the
database every time it sends a task, from inside the beat process itself.
"""

from __future__ import annotations

import logging
from datetime import datetime

from celery.signals import beat_init, before_task_publish
from django.utils import timezone

from workers.db_sessions import drop_broken_connections
from workers.models import Heartbeat

logger = logging.getLogger(__name__)

_in_beat = False


def record_heartbeat(source: str, now: datetime | None = None) -> None:
    """Upserts the heartbeat row of `source` (Heartbeat.Source) at `now`."""
    Heartbeat.objects.update_or_create(source=source, defaults={"at": now or timezone.now()})


@beat_init.connect
def _mark_beat_process(sender=None, **kwargs) -> None:
    global _in_beat
    _in_beat = True
    _stamp_beat()


@before_task_publish.connect
def _stamp_beat_on_publish(sender=None, **kwargs) -> None:
    if _in_beat:
        _stamp_beat()


def _stamp_beat() -> None:
    try:
        # Beat runs no tasks, so nothing else notices a connection a PostgreSQL restart broke.
        drop_broken_connections()
        record_heartbeat(Heartbeat.Source.BEAT)
    except Exception:
        # Never let the heartbeat stop beat from sending the task itself.
        logger.exception("could not record beat's heartbeat")
