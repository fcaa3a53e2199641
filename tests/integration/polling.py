"""Waiting for what the workers do, and names that no other test uses."""

from __future__ import annotations

import time
import uuid

from certificates.models import Certificate, CertificateSource
from domains.models import Domain, DomainStatus


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
