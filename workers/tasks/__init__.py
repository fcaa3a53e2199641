"""Celery tasks, one module per queue (webhooks: the default queue's delivery runs). Importing this
package registers them all."""

from workers.tasks import acme, dns, housekeeping, webhooks

__all__ = ["acme", "dns", "housekeeping", "webhooks"]
