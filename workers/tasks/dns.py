"""Tasks on the `dns` queue: the periodic sweep and the chunked checks it fans out."""

from celery import shared_task

from workers import domain_checks, renewals


@shared_task(name="workers.tasks.dns.sweep_due_domains", time_limit=60, soft_time_limit=50)
def sweep_due_domains() -> int:
    """Beat's tick (every 60 s): claims due domains and sends their checks."""
    return domain_checks.sweep()


@shared_task(name="workers.tasks.dns.check_domains", acks_late=True, time_limit=120, soft_time_limit=100)
def check_domains(domain_ids: list[int], token: str) -> dict:
    """Checks the claimed domains; idempotent, since only rows still carrying `token` are touched."""
    return domain_checks.check_claimed([int(i) for i in domain_ids], token)


@shared_task(name="workers.tasks.dns.sweep_due_renewals", time_limit=60, soft_time_limit=50)
def sweep_due_renewals() -> int:
    """Beat's tick (every 60 s): claims certificates due for renewal and sends their renewals."""
    return renewals.sweep_renewals()


@shared_task(name="workers.tasks.dns.renew_certificates", acks_late=True, time_limit=120, soft_time_limit=100)
def renew_certificates(certificate_ids: list[int], token: str) -> dict:
    """Renews the claimed certificates; idempotent, since only rows still carrying `token` change."""
    return renewals.renew_claimed([int(i) for i in certificate_ids], token)
