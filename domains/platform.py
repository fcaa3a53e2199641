"""The platform's own certificate: `*.<domain_suffix>` of every region, so that each app answers at
`<app>.<suffix>` over HTTPS.

Each region has one app that belongs to the platform (owned by the platform's user, with a name no
customer can take), holding one Domain, `*.<suffix>`. It goes through the same pipeline as any
domain (pre-flight, ordering over DNS-01, renewal, backoff, quota, statuses, the routers' feed), and
the routers serve it for `<app>.<suffix>` as a wildcard one label up (certificates/serving.py).
Its ownership is proven by definition: the suffix is the platform's. Its DNS-01 record is published
directly at `_acme-challenge.<suffix>` when the suffix lies in DNS01_ZONE, else it waits for the same
one-time CNAME delegation a customer's wildcard does (certificates/dns01.py).

`ensure_platform_domains` makes the rows match the regions: it is idempotent and cheap (two queries
when nothing is to do), so the admin, `manage.py platform_certificates` and beat's tick all call it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from domains.models import App, Domain, Region
from domains.names import InvalidDomainName
from domains.services import DomainNameTaken, create_domain, delete_domain

# Neither can be had by a customer: user names are checked against `[\w.@+-]+` (the customer
# command, the admin's forms) and app names against APP_NAME_VALIDATOR, which refuse brackets and
# underscores; the platform creates its own rows without those checks.
PLATFORM_USERNAME = "(platform)"
PLATFORM_APP_NAME = "_platform"


class PlatformDomainRefused(Exception):
    """The platform's name of a region cannot be a domain (taken by a customer, or not a name)."""


@dataclass(frozen=True)
class PlatformChange:
    """What ensuring one region's platform domain did."""

    region: str
    name: str
    # "created", "replaced <old names>", "removed", or a refusal in words.
    what: str


def platform_domain_name(region: Region) -> str:
    """The platform's certificate name for `region`: `*.<domain_suffix>`."""
    return "*." + region.domain_suffix.strip().strip(".").lower()


def platform_user() -> AbstractBaseUser:
    """The platform's own user, made on first use: inactive, no usable password, no token."""
    user, created = get_user_model().objects.get_or_create(
        username=PLATFORM_USERNAME, defaults={"is_active": False}
    )
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


def platform_apps() -> QuerySet[App]:
    """The platform's apps, one per region."""
    return App.objects.filter(name=PLATFORM_APP_NAME, owner__username=PLATFORM_USERNAME)


def platform_domains() -> QuerySet[Domain]:
    """The platform's domains, one per region (`*.<suffix>`)."""
    return Domain.objects.filter(app__in=platform_apps())


def is_platform_app(app: App) -> bool:
    return app.name == PLATFORM_APP_NAME and app.owner.get_username() == PLATFORM_USERNAME


def _region_in_step(region: Region, held: dict[int, set[str]]) -> bool:
    return held.get(region.pk) == {platform_domain_name(region)}


def ensure_platform_domains(now: datetime | None = None) -> list[PlatformChange]:
    """Gives every region its platform domain `*.<suffix>` and replaces one whose suffix changed;
    returns what changed (nothing, usually). A region goes with remove_platform_domain first (its
    platform app protects it, as any app does)."""
    now = now or timezone.now()
    held: dict[int, set[str]] = {}
    for region_id, name in platform_domains().values_list("app__region_id", "name"):
        held.setdefault(region_id, set()).add(name)
    changes = []
    for region in Region.objects.all():
        if not _region_in_step(region, held):
            change = ensure_platform_domain(region, now)
            if change is not None:
                changes.append(change)
    return changes


def ensure_platform_domain(region: Region, now: datetime | None = None) -> PlatformChange | None:
    """Gives `region` its platform domain, replacing any other name its platform app holds (a
    suffix that changed); None when it was already in step. A refusal is returned, not raised, so
    that one region's problem never stops the others (the sweep calls this for every region)."""
    now = now or timezone.now()
    wanted = platform_domain_name(region)
    try:
        with transaction.atomic():
            # Two callers at once (the admin and beat's tick) wait for each other here.
            locked = Region.objects.select_for_update().filter(pk=region.pk).first()
            if locked is None:
                return None
            wanted = platform_domain_name(locked)
            app, _ = App.objects.get_or_create(
                region=locked, name=PLATFORM_APP_NAME, defaults={"owner": platform_user(), "created": now}
            )
            old = list(Domain.objects.filter(app=app).exclude(name=wanted).order_by("pk"))
            for domain in old:
                delete_domain(domain, now)
            if Domain.objects.filter(app=app, name=wanted).exists():
                if not old:
                    return None
            else:
                domain = create_domain(app, wanted, now=now, platform_owned=True)
                # The suffix is the platform's: there is nothing for it to prove.
                Domain.objects.filter(pk=domain.pk).update(ownership_verified_at=now)
    except (DomainNameTaken, InvalidDomainName) as exc:
        return PlatformChange(region.name, wanted, f"refused: {exc}")
    what = "replaced " + ", ".join(d.name for d in old) if old else "created"
    return PlatformChange(region.name, wanted, what)


def remove_platform_domain(region: Region, now: datetime | None = None) -> bool:
    """Deletes the platform app of `region` and its domain (orders cancelled, keys purged), as the
    region goes away; returns whether there was one."""
    with transaction.atomic():
        apps = list(platform_apps().filter(region=region).select_for_update())
        for app in apps:
            for domain in Domain.objects.filter(app=app):
                delete_domain(domain, now)
            app.delete()
    return bool(apps)
