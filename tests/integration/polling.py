"""Waiting for what the workers do, and names that no other test uses."""

from __future__ import annotations

import time
import uuid

from domains.models import Domain


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
