"""Tasks on the `dns` queue: the periodic sweep and the chunked checks it fans out."""

import datetime
import logging

from celery import shared_task

from domains.platform import ensure_platform_domains
from workers import ari_checks, domain_checks, renewals
from workers.db_sessions import RETRY_WHILE_DATABASE_DOWN

logger = logging.getLogger(__name__)


@shared_task(name="workers.tasks.dns.sweep_due_domains", time_limit=60, soft_time_limit=50)
def sweep_due_domains() -> int:
    """Beat's tick (every 60 s): claims due domains and sends their checks; then gives any region
    made without the admin its platform certificate domain (two queries when all are in step)."""
    claimed = domain_checks.sweep()
    for change in ensure_platform_domains():
        logger.info("platform certificate of region %s: %s %s", change.region, change.name, change.what)
    return claimed


@shared_task(
    name="workers.tasks.dns.check_domains",
    acks_late=True,
    time_limit=120,
    soft_time_limit=100,
    **RETRY_WHILE_DATABASE_DOWN,
)
def check_domains(domain_ids: list[int], token: str) -> dict:
    """Checks the claimed domains; idempotent, since only rows still carrying `token` are touched."""
    return domain_checks.check_claimed([int(i) for i in domain_ids], token)


@shared_task(name="workers.tasks.dns.sweep_due_renewals", time_limit=60, soft_time_limit=50)
def sweep_due_renewals() -> int:
    """Beat's tick (every 60 s): claims certificates due for renewal and sends their renewals."""
    return renewals.sweep_renewals()


@shared_task(
    name="workers.tasks.dns.renew_certificates",
    acks_late=True,
    time_limit=120,
    soft_time_limit=100,
    **RETRY_WHILE_DATABASE_DOWN,
)
def renew_certificates(certificate_ids: list[int], token: str) -> dict:
    """Renews the claimed certificates; idempotent, since only rows still carrying `token` change."""
    return renewals.renew_claimed([int(i) for i in certificate_ids], token)


@shared_task(name="workers.tasks.dns.sweep_ari_checks", time_limit=60, soft_time_limit=50)
def sweep_ari_checks() -> int:
    """Beat's tick (every 60 s): claims certificates due for an ARI check and sends their checks."""
    return ari_checks.sweep_ari()


@shared_task(name="workers.tasks.dns.check_renewal_info", acks_late=True, time_limit=600, soft_time_limit=570)
def check_renewal_info(certificate_ids: list[int], lease: str) -> dict:
    """Checks the claimed certificates' renewal information; idempotent, since only rows still
    carrying the claim's `lease` are written."""
    return ari_checks.check_claimed_and_renew(
        [int(i) for i in certificate_ids], datetime.datetime.fromisoformat(lease)
    )
