"""Webhook delivery runs (workers/webhook_delivery.py), on the `default` queue: asked for when a
transaction writes events (domains/enqueue.deliver_webhooks_soon), and by beat every 15 s as a
backstop (a lost message, retries coming due)."""

import logging

import redis
from celery import shared_task
from django.conf import settings

from domains.enqueue import WEBHOOK_KICK_KEY
from domains.quota_policy import get_quota
from workers import webhook_delivery

logger = logging.getLogger(__name__)

# How many delivery runs are going (INCR at a run's start, DECR at its end).
RUNNING_KEY = "webhooks:running"


@shared_task(name="workers.tasks.webhooks.deliver_webhooks", time_limit=300, soft_time_limit=270)
def deliver_webhooks() -> dict:
    """Fans out new events and sends what is due. Safe to run many at once: the fan-out is one
    run's at a time, and each delivery is claimed by one run; at most WEBHOOK_PARALLEL_RUNS run
    at once (a run asked for beyond that ends at once: those running loop until nothing is due,
    and beat's next tick catches an event that came as the last of them ended)."""
    client = get_quota().client
    try:
        # Runs asked for from now on are sent again: an event committed after this line is either
        # seen by this run or asks for the next one.
        client.delete(WEBHOOK_KICK_KEY)
        running = client.incr(RUNNING_KEY)
        # A run killed without its DECR is forgotten after this long.
        client.expire(RUNNING_KEY, 600)
    except redis.RedisError:
        logger.debug("could not count webhook runs", exc_info=True)
        return dict(webhook_delivery.deliver())
    try:
        if running > settings.WEBHOOK_PARALLEL_RUNS:
            return {"skipped": 1}

        asked = False

        def more_hands() -> None:
            # One helper per run at most: each helper that also finds a full batch asks for its
            # own, so runs grow to the cap as the backlog asks, and no run queues helpers that the
            # worker's processes cannot start (they would each start only to find nothing left).
            nonlocal asked
            if asked:
                return
            try:
                if int(client.get(RUNNING_KEY) or 0) < settings.WEBHOOK_PARALLEL_RUNS:
                    deliver_webhooks.delay()
                    asked = True
            except redis.RedisError:
                pass

        return dict(webhook_delivery.deliver(more_hands=more_hands))
    finally:
        try:
            client.decr(RUNNING_KEY)
        except redis.RedisError:
            logger.debug("could not count webhook runs", exc_info=True)
