"""Tasks on the `default` queue."""

from celery import shared_task

from domains.quota_policy import prune_ledger
from workers.expiry import catch_up, prune_expired_certificates
from workers.expiry_events import record_expiry_events
from workers.heartbeat import record_heartbeat
from workers.models import Heartbeat
from workers.retention import prune_history


@shared_task(name="workers.tasks.housekeeping.heartbeat", acks_late=True, time_limit=30, soft_time_limit=20)
def heartbeat() -> None:
    """Stamps the worker heartbeat; beat sends it every 30 s, /healthz reads its age."""
    record_heartbeat(Heartbeat.Source.WORKER)


@shared_task(
    name="workers.tasks.housekeeping.prune_issuances", acks_late=True, time_limit=600, soft_time_limit=540
)
def prune_issuances() -> int:
    """Deletes issuance ledger rows older than any quota rebuild needs; beat sends it hourly."""
    return prune_ledger()


@shared_task(
    name="workers.tasks.housekeeping.catch_up_expiries", acks_late=True, time_limit=120, soft_time_limit=100
)
def catch_up_expiries() -> int:
    """Beat's tick (every 60 s): domains whose served certificate expired say what is served now."""
    return catch_up()


@shared_task(
    name="workers.tasks.housekeeping.prune_certificates", acks_late=True, time_limit=600, soft_time_limit=540
)
def prune_certificates() -> int:
    """Deletes Let's Encrypt certificates long expired and replaced; beat sends it hourly."""
    return prune_expired_certificates()


@shared_task(
    name="workers.tasks.housekeeping.prune_history", acks_late=True, time_limit=900, soft_time_limit=840
)
def prune_history_task() -> dict[str, int]:
    """Deletes history older than the retention settings keep (workers/retention.py); hourly."""
    return prune_history()


@shared_task(
    name="workers.tasks.housekeeping.record_expiry_events",
    acks_late=True,
    time_limit=600,
    soft_time_limit=540,
)
def record_expiry_events_task() -> int:
    """Writes the certificates' expiry events due now, each once (workers/expiry_events.py); hourly."""
    return record_expiry_events()
