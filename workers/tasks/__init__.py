"""Celery tasks, one module per queue (webhooks and notifications: the default queue's delivery and
mail runs). Importing this package registers them all."""

from workers.tasks import acme, dns, housekeeping, notifications, webhooks

__all__ = ["acme", "dns", "housekeeping", "notifications", "webhooks"]
