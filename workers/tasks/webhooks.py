"""Webhook delivery runs (workers/webhook_delivery.py), on the `default` queue: asked for when a
transaction writes events (domains/enqueue.deliver_webhooks_soon), and by beat every 15 s as a
backstop (a lost message, retries coming due)."""

import logging

import redis
from celery import shared_task

from domains.enqueue import WEBHOOK_KICK_KEY
from domains.quota_policy import get_quota
from workers import webhook_delivery

logger = logging.getLogger(__name__)


@shared_task(name="workers.tasks.webhooks.deliver_webhooks", time_limit=300, soft_time_limit=270)
def deliver_webhooks() -> dict:
    """Fans out new events and sends what is due. Safe to run many at once: the fan-out is one
    run's at a time, and each delivery is claimed by one run."""
    try:
        # Runs asked for from now on are sent again: an event committed after this line is either
        # seen by this run or asks for the next one.
        get_quota().client.delete(WEBHOOK_KICK_KEY)
    except redis.RedisError:
        logger.debug("could not clear the webhook run marker", exc_info=True)
    return dict(webhook_delivery.deliver())
