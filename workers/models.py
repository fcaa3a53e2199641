"""Liveness records of the background processes, read by /healthz, and beat's leader lease."""

from django.db import models


class Heartbeat(models.Model):
    """The last time a background process was seen doing its job."""

    class Source(models.TextChoices):
        BEAT = "beat", "Celery beat (last tick that sent a task)"
        BEAT_STANDBY = "beat_standby", "Celery beat standby (last tick while another beat leads)"
        WORKER = "worker", "Celery worker (last heartbeat task run)"

    source = models.CharField(max_length=20, choices=Source.choices, primary_key=True)
    at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.source} at {self.at:%Y-%m-%d %H:%M:%S}"


class BeatLease(models.Model):
    """The one row saying which beat process sends the periodic tasks (workers/beat_lease.py).

    A beat leads while `expires_at`, on PostgreSQL's clock, is in the future; `term` grows by one at
    every change of holder, and a periodic run is claimed only under the holder's current term.
    The row is written only by workers/beat_lease.py's statements; the admin shows it read-only.
    """

    SINGLETON_ID = 1

    id = models.PositiveSmallIntegerField(primary_key=True, default=SINGLETON_ID)
    # host:pid:random token, unique per beat process (a pid repeats across containers).
    holder = models.CharField(max_length=300)
    host = models.CharField(max_length=255)
    pid = models.IntegerField()
    term = models.BigIntegerField()
    acquired_at = models.DateTimeField()
    renewed_at = models.DateTimeField()
    expires_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(id=1), name="beat_lease_single_row"),
        ]

    def __str__(self) -> str:
        return f"beat on {self.host} (pid {self.pid}), term {self.term}"
