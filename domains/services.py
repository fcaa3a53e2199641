"""State changes of regions, apps and domains. Views, admin actions and commands call these."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from certificates.dns01 import WILDCARD_MESSAGE, parked_wildcard
from domains.claims import claim_check_now, redrive_order_of, renew_now
from domains.custom_certificates import install_custom_certificate
from domains.enqueue import check_domains_later
from domains.events import record_event, record_status_event
from domains.issuer_choice import pin_issuer
from domains.models import (
    SWEPT_STATUSES,
    App,
    Domain,
    DomainEvent,
    DomainStatus,
    EventType,
    Region,
    WaitingOn,
)
from domains.names import InvalidDomainName, normalize_domain_name
from domains.orders import cancel_orders_of
from domains.ownership import ownership_token
from domains.pauses import DomainPaused, retry_refusal
from domains.profiles import ProfileRefused, ProfileUnchecked, check_profile
from domains.records import dns_records_to_add
from domains.revocations import revoke_on_delete
from domains.status import NOTHING_SERVED, change_status, settle_status


class DomainNameTaken(Exception):
    """The name is already attached to an app (first come, first served across the platform)."""


class DomainLimitReached(Exception):
    """The app has as many domains as APP_DOMAIN_LIMIT allows."""


def check_room_for_a_domain(app: App, *, lock: bool = True) -> None:
    """Raises DomainLimitReached when `app` has APP_DOMAIN_LIMIT domains. With `lock` (inside the
    adding transaction), the app's row is locked first, so two concurrent additions cannot both
    pass the count."""
    if lock:
        App.objects.select_for_update().filter(pk=app.pk).first()
    limit = settings.APP_DOMAIN_LIMIT
    if Domain.objects.filter(app_id=app.pk).count() >= limit:
        raise DomainLimitReached(
            f"{app.name} already has {limit} domains, the most an app may have (APP_DOMAIN_LIMIT)"
        )


def platform_suffixes() -> list[str]:
    """Names that belong to the platform itself: every region's app suffix and CNAME target, and
    the DNS-01 zone (where Certwright publishes challenge records, domains/platform.py's directly)."""
    suffixes: set[str] = {settings.DNS01_ZONE} if settings.DNS01_ZONE else set()
    for suffix, target in Region.objects.values_list("domain_suffix", "cname_target"):
        suffixes.add(suffix)
        if target:
            suffixes.add(target)
    return sorted(suffixes)


def clean_domain_name(raw: str) -> str:
    """The normalized name, or InvalidDomainName naming the rule it breaks (platform names included)."""
    return normalize_domain_name(raw, reserved_suffixes=platform_suffixes())


def create_domain(
    app: App,
    raw_name: str,
    *,
    letsencrypt: bool = True,
    now: datetime | None = None,
    platform_owned: bool = False,
    profile: str = "",
) -> Domain:
    """Attaches a custom domain to `app`; its first check is sent as soon as the row is committed.

    Raises InvalidDomainName for a bad name, DomainNameTaken when another domain row has it, and
    DomainLimitReached when the app has APP_DOMAIN_LIMIT domains already; `profile` (the CA profile
    its certificates are ordered under, "" for the platform's default) is checked with the CA first:
    ProfileRefused when the CA does not offer it, ProfileUnchecked when the CA cannot be asked.
    Wildcards are checked like any name, plus their DNS-01 delegation (certificates/dns01.py), or
    wait in `action_required` when the platform has no DNS01_ZONE. `platform_owned` is for the
    platform's own names only (domains/platform.py): it skips the rule reserving them, nothing else.
    """
    now = now or timezone.now()
    name = normalize_domain_name(raw_name) if platform_owned else clean_domain_name(raw_name)
    profile = check_profile(profile)
    token = uuid.uuid4() if letsencrypt and not parked_wildcard(name) else None
    if not letsencrypt:
        status, reason, error = DomainStatus.DISABLED, "created with Let's Encrypt disabled", NOTHING_SERVED
        waiting_on = ""
    elif token is None:
        status, reason, error = DomainStatus.ACTION_REQUIRED, WILDCARD_MESSAGE, WILDCARD_MESSAGE
        waiting_on = WaitingOn.DNS01
    else:
        status, reason, error = DomainStatus.PENDING_DNS, "domain added; checking its DNS", ""
        waiting_on = WaitingOn.DNS
    domain = Domain(
        app=app,
        name=name,
        letsencrypt_enabled=letsencrypt,
        acme_profile=profile,
        status=status,
        last_error=error,
        waiting_on=waiting_on,
        claim_token=token,
        # The first check is claimed by this creation: due again only if it is lost.
        next_attempt_at=now + timedelta(seconds=settings.DOMAIN_CHECK_LEASE_SECONDS) if token else None,
        created=now,
    )
    try:
        with transaction.atomic():
            check_room_for_a_domain(app)
            domain.save(force_insert=True)
            DomainEvent.objects.create(
                domain=domain, created=now, from_status="", to_status=status, reason=reason
            )
            record_status_event(domain.pk, "", status, reason, error, now)
            if token is not None:
                check_domains_later([domain.pk], str(token))
    except IntegrityError as exc:
        if "domain_name_unique" in str(exc):
            owner = Domain.objects.filter(name=name).values_list("app_id", flat=True).first()
            if owner == app.pk:
                raise DomainNameTaken(f"{name} is already a domain of {app.name}") from None
            raise DomainNameTaken(f"{name} is already in use by another app") from None
        raise
    return domain


def add_domain(
    app: App,
    raw_name: str,
    *,
    letsencrypt: bool = True,
    cert: bytes | None = None,
    key: bytes | None = None,
    chain: bytes | None = None,
    passphrase: str | bytes | None = None,
    now: datetime | None = None,
    profile: str = "",
    issuer: str = "",
) -> Domain:
    """create_domain, with a custom certificate installed in the same transaction when `cert` is
    given, pinned to `issuer` when one is named: a rejected certificate (UploadRejected) or an
    unknown issuer (UnknownIssuer) adds no domain."""
    with transaction.atomic():
        domain = create_domain(app, raw_name, letsencrypt=letsencrypt, now=now, profile=profile)
        if issuer:
            pin_issuer(domain, issuer)
        if cert is not None:
            install_custom_certificate(domain, cert, key=key, chain=chain, passphrase=passphrase, now=now)
    domain.refresh_from_db()
    return domain


def move_domain(domain: Domain, app: App, now: datetime | None = None) -> bool:
    """Moves the domain to another app (staff only, in the API); its DNS must now point at that
    app, so a domain waiting for its check is checked again at once. Raises DomainLimitReached."""
    now = now or timezone.now()
    with transaction.atomic():
        check_room_for_a_domain(app)
        # The new app proves ownership afresh, with its own token.
        moved = (
            Domain.objects.filter(pk=domain.pk)
            .exclude(app_id=app.pk)
            .update(
                app=app,
                updated=now,
                ownership_token=ownership_token(app.pk, domain.name),
                ownership_verified_at=None,
            )
        )
        if moved:
            DomainEvent.objects.create(
                domain_id=domain.pk,
                created=now,
                from_status=domain.status,
                to_status=domain.status,
                reason=f"moved from app {domain.app.name} to app {app.name}",
            )
            claim_check_now(domain.pk, reset_backoff=True, now=now)
    domain.refresh_from_db()
    return bool(moved)


def delete_domain(domain: Domain, now: datetime | None = None) -> None:
    """Deletes the domain in any state: its order stops, its tokens stop being served at once, its
    pending authorizations are deactivated at the CA, and its keys and certificates are purged;
    with REVOKE_ON_DELETE, its Let's Encrypt certificates are revoked at the CA after commit. A
    `domain.deleted` event outlives it."""
    now = now or timezone.now()
    with transaction.atomic():
        locked = Domain.objects.select_for_update().filter(pk=domain.pk).first()
        if locked is None:
            return
        cancel_orders_of(domain.pk, now)
        revoke_on_delete(domain.pk, now)
        # Before the row goes: the event keeps the domain's name, app and last status.
        record_event(EventType.DOMAIN_DELETED, domain.pk, now, reason="domain deleted", to_status="")
        locked.delete()


def retry_now(domain: Domain, now: datetime | None = None) -> str:
    """Continues the domain's order, or checks it, or renews its certificate, at once, with the
    backoff reset; says what it did. Raises DomainPaused when the CA paused the name (only an
    operator's unpause lifts that: domains/pauses.py)."""
    now = now or timezone.now()
    if Domain.objects.filter(pk=domain.pk).exclude(ca_unpause_url="").exists():
        raise DomainPaused(retry_refusal(domain.name))
    if redrive_order_of(domain.pk, now):
        return f"{domain.name}: continuing its order now"
    if domain.status in (DomainStatus.IN_USE, DomainStatus.NOT_USED) or (
        domain.status == DomainStatus.FAILING and domain.next_attempt_at is None
    ):
        # Served (or its certificate expired): "retry" means renew now, backoff reset.
        if renew_now(domain.pk, now):
            return f"{domain.name}: renewing its certificate now"
    if domain.status in SWEPT_STATUSES:
        # A domain waiting for its quota token is checked again, but keeps its place in line: it
        # cannot jump ahead of the domains booked before it.
        claimed = claim_check_now(domain.pk, reset_backoff=True, now=now)
        return f"{domain.name}: checking now" if claimed else f"{domain.name}: its status changed meanwhile"
    return f"{domain.name}: nothing to retry ({domain.get_status_display()})"


def set_letsencrypt(domain: Domain, enabled: bool, *, now: datetime | None = None) -> bool:
    """Turns Let's Encrypt on (checked at once, backoff reset) or off (any order in flight is
    cancelled; the CA is never contacted again); returns whether it changed."""
    now = now or timezone.now()
    with transaction.atomic():
        locked = (
            Domain.objects.select_for_update().filter(pk=domain.pk, letsencrypt_enabled=not enabled).first()
        )
        if locked is None:
            return False
        if not enabled:
            cancel_orders_of(domain.pk, now)
            change_status(
                domain.pk,
                DomainStatus.DISABLED,
                "Let's Encrypt turned off",
                now=now,
                letsencrypt_enabled=False,
                next_attempt_at=None,
                claim_token=None,
                quota_reservation=None,
                last_error="",
            )
            # Its Let's Encrypt certificates are served no more: say whether anything still is.
            settle_status(domain.pk, "Let's Encrypt turned off", now)
        elif parked_wildcard(locked.name):
            change_status(
                domain.pk,
                DomainStatus.ACTION_REQUIRED,
                WILDCARD_MESSAGE,
                now=now,
                letsencrypt_enabled=True,
                consecutive_failures=0,
                last_error=WILDCARD_MESSAGE,
                waiting_on=WaitingOn.DNS01,
            )
        else:
            token = uuid.uuid4()
            change_status(
                domain.pk,
                DomainStatus.PENDING_DNS,
                "Let's Encrypt turned on; checking its DNS",
                now=now,
                letsencrypt_enabled=True,
                consecutive_failures=0,
                last_error="",
                waiting_on=WaitingOn.DNS,
                claim_token=token,
                next_attempt_at=now + timedelta(seconds=settings.DOMAIN_CHECK_LEASE_SECONDS),
            )
            check_domains_later([domain.pk], str(token))
    domain.refresh_from_db()
    return True


def set_profile(domain: Domain, profile: str, *, now: datetime | None = None) -> bool:
    """Sets the CA profile the domain's certificates are ordered under ("" = the platform's default),
    once the CA confirmed it offers it (ProfileRefused, ProfileUnchecked); it applies from the next
    order, the next renewal included. Returns whether it changed."""
    now = now or timezone.now()
    profile = check_profile(profile)
    with transaction.atomic():
        locked = Domain.objects.select_for_update().filter(pk=domain.pk).exclude(acme_profile=profile).first()
        if locked is None:
            return False
        Domain.objects.filter(pk=domain.pk).update(acme_profile=profile, updated=now)
        before = locked.acme_profile or "the platform's default"
        after = profile or "the platform's default"
        DomainEvent.objects.create(
            domain_id=domain.pk,
            created=now,
            from_status=locked.status,
            to_status=locked.status,
            reason=f"CA profile changed from {before} to {after}: it applies from the next certificate",
        )
    domain.refresh_from_db()
    return True


__all__ = [
    "WILDCARD_MESSAGE",
    "DomainLimitReached",
    "DomainNameTaken",
    "DomainPaused",
    "InvalidDomainName",
    "ProfileRefused",
    "ProfileUnchecked",
    "add_domain",
    "check_room_for_a_domain",
    "clean_domain_name",
    "create_domain",
    "delete_domain",
    "dns_records_to_add",
    "move_domain",
    "platform_suffixes",
    "retry_now",
    "set_letsencrypt",
    "set_profile",
]
