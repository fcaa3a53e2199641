"""Tasks on the `default` queue."""

from celery import shared_task

from workers.heartbeat import record_heartbeat
from workers.models import Heartbeat


@shared_task(name="workers.tasks.housekeeping.heartbeat", acks_late=True, time_limit=30, soft_time_limit=20)
def heartbeat() -> None:
    """Stamps the worker heartbeat; beat sends it every 30 s, /healthz reads its age."""
    record_heartbeat(Heartbeat.Source.WORKER)
