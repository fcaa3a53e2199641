"""Celery tasks, one module per queue. Importing this package registers them all."""

from workers.tasks import acme, dns, housekeeping

__all__ = ["acme", "dns", "housekeeping"]
