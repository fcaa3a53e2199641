"""State changes of regions, apps and domains. Views, admin actions and commands call these."""

from __future__ import annotations

from datetime import datetime

from django.db import IntegrityError, transaction
from django.utils import timezone

from domains.models import App, Domain, DomainStatus, Region
from domains.names import InvalidDomainName, normalize_domain_name


class DomainNameTaken(Exception):
    """The name is already attached to an app (first come, first served across the platform)."""


def platform_suffixes() -> list[str]:
    """Names that belong to the platform itself: every region's app suffix and CNAME target."""
    suffixes: set[str] = set()
    for suffix, target in Region.objects.values_list("domain_suffix", "cname_target"):
        suffixes.add(suffix)
        if target:
            suffixes.add(target)
    return sorted(suffixes)


def clean_domain_name(raw: str) -> str:
    """The normalized name, or InvalidDomainName naming the rule it breaks (platform names included)."""
    return normalize_domain_name(raw, reserved_suffixes=platform_suffixes())


def create_domain(
    app: App, raw_name: str, *, letsencrypt: bool = True, now: datetime | None = None
) -> Domain:
    """Attaches a custom domain to `app`; its first check is due at once.

    Raises InvalidDomainName for a bad name and DomainNameTaken when another domain row has it.
    """
    now = now or timezone.now()
    name = clean_domain_name(raw_name)
    domain = Domain(
        app=app,
        name=name,
        letsencrypt_enabled=letsencrypt,
        status=DomainStatus.PENDING_DNS if letsencrypt else DomainStatus.DISABLED,
        next_attempt_at=now if letsencrypt else None,
    )
    try:
        with transaction.atomic():
            domain.save(force_insert=True)
    except IntegrityError as exc:
        if "domain_name_unique" in str(exc):
            raise DomainNameTaken(f"{name} is already in use by another app") from None
        raise
    return domain


def set_letsencrypt(domain: Domain, enabled: bool, *, now: datetime | None = None) -> bool:
    """Turns Let's Encrypt on (the check is due at once, backoff reset) or off; returns whether it changed."""
    now = now or timezone.now()
    rows = Domain.objects.filter(pk=domain.pk, letsencrypt_enabled=not enabled)
    if enabled:
        changed = rows.update(
            letsencrypt_enabled=True,
            status=DomainStatus.PENDING_DNS,
            consecutive_failures=0,
            next_attempt_at=now,
            last_error="",
            updated=now,
        )
    else:
        changed = rows.update(
            letsencrypt_enabled=False, status=DomainStatus.DISABLED, next_attempt_at=None, updated=now
        )
    domain.refresh_from_db()
    return changed == 1


__all__ = [
    "DomainNameTaken",
    "InvalidDomainName",
    "clean_domain_name",
    "create_domain",
    "platform_suffixes",
    "set_letsencrypt",
]
