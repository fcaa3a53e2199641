"""Records that beat ticked and that a worker ran, so that /healthz can tell a dead beat from a live one.

A dead beat is silent: nothing fails, certificates just stop being renewed. So the leading beat
stamps the database every time it sends a task, from inside the beat process itself, and a standby
beat stamps its own source while it waits (workers/beat_scheduler.py).
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


def stamp_from_beat(source: str) -> None:
    """record_heartbeat for the beat process: a failure is logged, never raised."""
    try:
        # Beat runs no tasks, so nothing else notices a connection a PostgreSQL restart broke.
        drop_broken_connections()
        record_heartbeat(source)
    except Exception:
        # Never let the heartbeat stop beat from sending the task itself.
        logger.exception("could not record beat's heartbeat (%s)", source)


@beat_init.connect
def _mark_beat_process(sender=None, **kwargs) -> None:
    # No stamp here: a starting beat may be a standby, and only the leader's sends say beat works.
    global _in_beat
    _in_beat = True


@before_task_publish.connect
def _stamp_beat_on_publish(sender=None, **kwargs) -> None:
    if _in_beat:
        stamp_from_beat(Heartbeat.Source.BEAT)
