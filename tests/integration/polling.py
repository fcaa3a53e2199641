"""Waiting for what the workers do, and names that no other test uses."""

from __future__ import annotations

import time
import uuid

from certificates.models import Certificate, CertificateSource
from domains.models import Domain, DomainStatus
from domains.webhook_models import WebhookAttempt, WebhookQueue


def unique_name(prefix: str = "www") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}.example.com"


def wait_for(predicate, timeout: float = 45, interval: float = 0.1, what: str = "condition", describe=None):
    """Polls `predicate` until it returns something true, and returns that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    found = f"; found: {describe()}" if describe else ""
    raise AssertionError(f"timed out after {timeout} s waiting for {what}{found}")


def status_of(domain: Domain) -> str | None:
    return Domain.objects.filter(pk=domain.pk).values_list("status", flat=True).first()


def issued(challtestsrv, app, name: str) -> tuple[Domain, Certificate]:
    """Points `name` at the platform, adds it to `app` and waits until Pebble's certificate is in
    use; returns the domain and that certificate."""
    from domains.services import create_domain
    from tests.integration.pointing import point_at_platform

    point_at_platform(challtestsrv, app, name)
    domain = create_domain(app, name)
    wait_for(lambda: status_of(domain) == DomainStatus.IN_USE, what=f"{name} in use")
    return domain, Certificate.objects.get(domain=domain, source=CertificateSource.LETSENCRYPT)


def wait_for_recorded_attempts(endpoint, count: int = 1, timeout: float = 10) -> None:
    """Waits until `count` attempts to `endpoint` are recorded and none of its queues is being sent:
    a receiver has a POST a moment before the worker that sent it records the answer, so what the
    receiver saw is not yet what the database (and the API, the CLI, retry_now) says."""
    wait_for(
        lambda: (
            WebhookAttempt.objects.filter(delivery__endpoint=endpoint).count() >= count
            and not WebhookQueue.objects.filter(endpoint=endpoint, lease_until__isnull=False).exists()
        ),
        timeout=timeout,
        what=f"{count} recorded attempt(s)",
    )
