"""Liveness records of the background processes, read by /healthz."""

from django.db import models


class Heartbeat(models.Model):
    """The last time a background process was seen doing its job."""

    class Source(models.TextChoices):
        BEAT = "beat", "Celery beat (last tick that sent a task)"
        WORKER = "worker", "Celery worker (last heartbeat task run)"

    source = models.CharField(max_length=20, choices=Source.choices, primary_key=True)
    at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.source} at {self.at:%Y-%m-%d %H:%M:%S}"
