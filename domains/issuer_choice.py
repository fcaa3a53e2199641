"""Which issuer a domain's next order may go to, as the domain records it: an issuer pinned by its
owner (or an operator), and the issuers it avoids for a while because they failed its last orders
on their side (workers/order_run.py's fail-over); the pre-flight (workers/preflight.py) reads both."""

from __future__ import annotations

import datetime

from django.conf import settings
from django.db import connection
from django.utils import timezone

from certificates.issuers import by_name, configured
from domains.models import Domain


class UnknownIssuer(ValueError):
    """A pin names no configured issuer; the message lists those there are."""


def several_issuers() -> bool:
    """Whether there is another issuer to fail over to."""
    return len(settings.ACME_ISSUERS) > 1


def avoid_issuer(domain_id: int, issuer: str, now: datetime.datetime | None = None) -> None:
    """The domain's next orders skip `issuer` (after the others it already avoids) for
    ISSUER_AVOID_SECONDS, or until a certificate is issued."""
    now = now or timezone.now()
    until = now + datetime.timedelta(seconds=settings.ISSUER_AVOID_SECONDS)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE domains_domain SET avoid_issuers = array_append(array_remove(avoid_issuers, "
            "%s::varchar), %s::varchar), avoid_issuers_until = %s WHERE id = %s",
            [issuer, issuer, until, domain_id],
        )


def clear_avoided_issuers(domain_id: int) -> None:
    """A certificate was issued: the domain's next order (its renewal) tries the issuers in order
    again, so it comes back to the primary once the primary is healthy."""
    Domain.objects.filter(pk=domain_id, avoid_issuers_until__isnull=False).update(
        avoid_issuers=[], avoid_issuers_until=None
    )


def pin_issuer(domain: Domain, name: str) -> Domain:
    """Pins `domain` to the issuer `name` ("" unpins it); raises UnknownIssuer."""
    name = (name or "").strip()
    if name and by_name(name) is None:
        known = ", ".join(issuer.name for issuer in configured())
        raise UnknownIssuer(f"{name!r} is not one of the platform's certificate authorities ({known})")
    Domain.objects.filter(pk=domain.pk).update(issuer=name, updated=timezone.now())
    domain.issuer = name
    return domain
