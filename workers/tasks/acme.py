"""Tasks on the `acme` queue: one order step per task, the re-drive, and cleanup at the CA."""

import logging

import requests
from acme import errors, messages
from celery import shared_task

from certificates.acme_client import get_account
from certificates.models import AcmeAccount
from certificates.revocation import RevocationDeferred, RevocationRefused, leaf_of, revoke_pem
from certificates.revocation_queue import claim_expired
from domains.enqueue import revoke_owed_later
from domains.revocations import attempt_owed, give_up, revoke_stored
from workers import acme_steps, order_run
from workers.db_sessions import RETRY_WHILE_DATABASE_DOWN, DatabaseLost, retry_countdown

logger = logging.getLogger(__name__)


@shared_task(
    name="workers.tasks.acme.advance_order",
    bind=True,
    acks_late=True,
    time_limit=90,
    soft_time_limit=75,
    **RETRY_WHILE_DATABASE_DOWN,
)
def advance_order(self, order_id: int, token: str | None, step: str = "") -> str:
    """Runs the order's next step; `step` only labels the task in Flower (the row decides)."""
    try:
        outcome = order_run.run_step(int(order_id), token)
    except DatabaseLost as lost:
        # Sent again with the lease this task holds, so the order goes on as soon as PostgreSQL is back.
        raise self.retry(
            args=[order_id, lost.held, step], exc=lost, countdown=retry_countdown(self.request.retries)
        ) from lost
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


@shared_task(name="workers.tasks.acme.revoke_owed", acks_late=True, time_limit=90, soft_time_limit=75)
def revoke_owed(revocation_id: int, token: str) -> str:
    """Attempts an owed revocation (certificates/revocation_queue.py) that `token` holds;
    idempotent: a settled one, or one sent again meanwhile, is left alone."""
    outcome = attempt_owed(int(revocation_id), str(token))
    logger.info("revocation %s: %s", revocation_id, outcome)
    return outcome


@shared_task(name="workers.tasks.acme.redrive_revocations", time_limit=60, soft_time_limit=50)
def redrive_revocations() -> int:
    """Beat's tick: sends again the owed revocations whose lease expired (a lost message, a dead
    worker, or a retry that is due)."""
    claimed = claim_expired()
    for revocation_id, token in claimed:
        # Claimed and committed already: sent now, outside any transaction.
        revoke_owed_later(revocation_id, token)
    if claimed:
        logger.info("re-drove %d owed revocation(s)", len(claimed))
    return len(claimed)


# Messages sent before owed revocations existed (revoke_certificate, revoke_pem) are still served.
# A revocation the CA cannot take now is asked again after 30 s, doubling to an hour, for about
# ten hours in all; then it is given up, logged, and written to the domain's history.
REVOKE_RETRIES = 14


def _revoke_countdown(retries: int) -> int:
    return min(30 * 2**retries, 3600)


@shared_task(
    name="workers.tasks.acme.revoke_certificate",
    bind=True,
    acks_late=True,
    max_retries=REVOKE_RETRIES,
    time_limit=90,
    soft_time_limit=75,
)
def revoke_certificate(self, certificate_id: int, reason: str) -> str:
    """Revokes a stored certificate at its CA with `reason` (idempotent: a revoked one stays so)."""
    try:
        outcome = revoke_stored(int(certificate_id), str(reason))
    except RevocationDeferred as exc:
        if self.request.retries >= REVOKE_RETRIES:
            give_up(int(certificate_id), str(reason), f"{exc}, {REVOKE_RETRIES + 1} times")
            return f"gave up: {exc}"
        logger.info("certificate %s: revocation deferred: %s", certificate_id, exc)
        raise self.retry(countdown=_revoke_countdown(self.request.retries)) from None
    logger.info("certificate %s: %s", certificate_id, outcome)
    return outcome


@shared_task(
    name="workers.tasks.acme.revoke_pem",
    bind=True,
    acks_late=True,
    max_retries=REVOKE_RETRIES,
    time_limit=90,
    soft_time_limit=75,
)
def revoke_pem_task(self, account_id: int, leaf_pem: str, reason: str) -> str:
    """Revokes a certificate whose row is gone (its domain was deleted), by its PEM, signed by
    the account that issued it."""
    try:
        leaf = leaf_of(str(leaf_pem))
        account = AcmeAccount.objects.filter(pk=int(account_id)).first()
        if account is not None and not account.account_url:
            try:
                account = get_account(account.directory_url)
            except (requests.RequestException, errors.ClientError, errors.NonceError, messages.Error) as exc:
                # The CA out of reach now: retried like any revocation it cannot take now.
                raise RevocationDeferred(
                    f"the account could not be registered again: {type(exc).__name__}: {exc}"
                ) from None
        outcome = revoke_pem(account, leaf, str(reason))
    except RevocationRefused as exc:
        logger.error(
            "certificate with serial %x could not be revoked (%s): %s", leaf.serial_number, reason, exc
        )
        return f"refused: {exc}"
    except RevocationDeferred as exc:
        if self.request.retries >= REVOKE_RETRIES:
            logger.error(
                "certificate with serial %x could not be revoked (%s): %s", leaf.serial_number, reason, exc
            )
            return f"gave up: {exc}"
        raise self.retry(countdown=_revoke_countdown(self.request.retries)) from None
    logger.info("certificate with serial %x: %s (%s)", leaf.serial_number, outcome, reason)
    return outcome
