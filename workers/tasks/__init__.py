"""Celery tasks, one module per queue. Importing this package registers them all."""

from workers.tasks import housekeeping

__all__ = ["housekeeping"]
