"""Sends tasks by name, after the current transaction commits (a task must see what it is told about).

The layers run api -> workers -> domains -> certificates: the services of this layer hand work to
the workers by task name, so they never import the task modules (which import them).
"""

from __future__ import annotations

from functools import partial

from django.db import transaction

from config.celery import app

CHECK_DOMAINS = "workers.tasks.dns.check_domains"
RENEW_CERTIFICATES = "workers.tasks.dns.renew_certificates"
CHECK_RENEWAL_INFO = "workers.tasks.dns.check_renewal_info"
ADVANCE_ORDER = "workers.tasks.acme.advance_order"
DEACTIVATE_AUTHORIZATIONS = "workers.tasks.acme.deactivate_authorizations"
REVOKE_OWED = "workers.tasks.acme.revoke_owed"
DELIVER_WEBHOOKS = "workers.tasks.webhooks.deliver_webhooks"
# Set for a second when a delivery run is asked for; the run deletes it as it starts, so that a
# burst of events asks for one run, and an event written after a run started asks for the next.
WEBHOOK_KICK_KEY = "webhooks:kick"


def _send(name: str, args: list, countdown: float = 0) -> None:
    transaction.on_commit(partial(app.send_task, name, args=args, countdown=countdown or None))


def check_domains_later(domain_ids: list[int], token: str) -> None:
    """Checks these claimed domains (DNS, then an order) once the claim is committed."""
    _send(CHECK_DOMAINS, [domain_ids, token])


def renew_certificates_later(certificate_ids: list[int], token: str) -> None:
    """Renews these claimed certificates (pre-flight, then orders) once the claim is committed."""
    _send(RENEW_CERTIFICATES, [certificate_ids, token])


def check_renewal_info_later(certificate_ids: list[int], lease: str) -> None:
    """Asks the CA's renewal information (ARI) of these claimed certificates once the claim is
    committed; `lease` (ISO 8601) is the claim's token."""
    _send(CHECK_RENEWAL_INFO, [certificate_ids, lease])


def advance_order_later(order_id: int, token: str, step: str, delay: float = 0) -> None:
    """Runs the order's next step after `delay` seconds; `step` is informational (Flower shows it)."""
    _send(ADVANCE_ORDER, [order_id, token, step], countdown=delay)


def deactivate_authorizations_later(account_id: int, authorization_urls: list[str]) -> None:
    _send(DEACTIVATE_AUTHORIZATIONS, [account_id, authorization_urls])


def revoke_owed_later(revocation_id: int, token: str) -> None:
    """Attempts this owed revocation (certificates/revocation_queue.py) once the transaction that
    wrote or claimed it commits; `token` is its lease token."""
    _send(REVOKE_OWED, [revocation_id, token])


def deliver_webhooks_soon() -> None:
    """Once the current transaction commits (it wrote events): a webhook delivery run, unless one
    was asked for and has not started yet."""
    transaction.on_commit(_kick_webhooks)


def _kick_webhooks() -> None:
    import redis

    from domains.quota_policy import get_quota

    try:
        if not get_quota().client.set(WEBHOOK_KICK_KEY, "1", nx=True, px=1000):
            return
    except redis.RedisError:
        pass  # without the marker, every kick asks: more runs, none missed
    app.send_task(DELIVER_WEBHOOKS)
