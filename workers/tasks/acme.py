"""Tasks on the `acme` queue: one order step per task, the re-drive, and cleanup at the CA."""

import logging

from celery import shared_task

from workers import acme_steps, order_run

logger = logging.getLogger(__name__)


@shared_task(name="workers.tasks.acme.advance_order", acks_late=True, time_limit=90, soft_time_limit=75)
def advance_order(order_id: int, token: str | None, step: str = "") -> str:
    """Runs the order's next step; `step` only labels the task in Flower (the row decides)."""
    outcome = order_run.run_step(int(order_id), token)
    logger.info("order %s (%s): %s", order_id, step, outcome)
    return outcome


@shared_task(name="workers.tasks.acme.redrive_orders", time_limit=60, soft_time_limit=50)
def redrive_orders() -> int:
    """Beat's tick: continues orders whose lease expired (a lost task or a dead worker)."""
    return order_run.redrive_expired()


@shared_task(
    name="workers.tasks.acme.deactivate_authorizations", acks_late=True, time_limit=120, soft_time_limit=100
)
def deactivate_authorizations(account_id: int, authorization_urls: list[str]) -> int:
    """Deactivates a deleted domain's pending authorizations at the CA."""
    return acme_steps.deactivate_authorizations(int(account_id), list(authorization_urls))
