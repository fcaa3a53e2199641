"""Which CA profile a domain's certificates are ordered under, and whether the CA offers it.

A domain may choose a profile (`Domain.acme_profile`); otherwise the platform's ACME_PROFILE
applies; both empty: the CA's default, and the order names no profile. A choice is checked against
the profiles the CA's directory offers (`meta.profiles`) when it is made, and the platform's
setting when an order is placed (workers/acme_steps.py), since the CA may change its offer.
"""

from __future__ import annotations

import re

from django.conf import settings

from certificates.directory import DirectoryUnavailable, directory

# Let's Encrypt's names are short lowercase words (classic, tlsserver, shortlived); the column
# holds 64 characters. Anything else is refused before the CA is asked.
PROFILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


PROFILE_HELP = (
    "The CA profile its Let's Encrypt certificates are ordered under, one the CA offers (Let's Encrypt: "
    "classic 90 days, tlsserver 45 days, shortlived 160 hours); empty for the platform's default "
    "(ACME_PROFILE). A change applies from the next certificate, the next renewal included."
)


class ProfileRefused(ValueError):
    """The profile is not one the CA offers (or not a profile name at all): the user must choose
    another. The message names what the CA offers."""


class ProfileUnchecked(Exception):
    """The CA's directory could not be read, so the profile could not be checked: try later."""


def effective_profile(chosen: str) -> str:
    """The profile an order of a domain whose own choice is `chosen` asks for ("" = the CA's default)."""
    return chosen or settings.ACME_PROFILE


def offered_text(profiles: dict[str, str]) -> str:
    """The CA's offer in words, for messages."""
    if not profiles:
        return "the CA offers no profiles (leave it empty for the CA's default)"
    return "the CA offers " + ", ".join(sorted(profiles))


def check_profile(name: str, directory_url: str | None = None) -> str:
    """The profile `name`, stripped, if the CA at `directory_url` (default ACME_DIRECTORY_URL)
    offers it; "" (the platform's default) is always accepted. Raises ProfileRefused or
    ProfileUnchecked."""
    name = name.strip()
    if not name:
        return ""
    if not PROFILE_NAME.match(name):
        raise ProfileRefused(
            f"{name[:64]!r} is not a profile name (letters, digits, '.', '_' and '-', at most 64 characters)"
        )
    try:
        offered = directory(directory_url).profiles
    except DirectoryUnavailable as exc:
        raise ProfileUnchecked(
            f"the profile {name!r} could not be checked: the CA's directory is unreachable ({exc}); "
            "try again later"
        ) from None
    if name not in offered:
        raise ProfileRefused(f"the CA does not offer the profile {name!r}: {offered_text(offered)}")
    return name


def not_offered_message(profile: str, chosen: str, offered: dict[str, str]) -> str:
    """Why an order was not placed: its profile (the domain's `chosen` one, or ACME_PROFILE's) is
    not offered by the CA, with what to change."""
    if chosen:
        where = "chosen for this domain"
        fix = "choose an offered profile (or the platform's default) for the domain"
    else:
        where = "set by the platform's ACME_PROFILE setting"
        fix = "the operator must change ACME_PROFILE, or the domain must choose an offered profile"
    return f"the CA does not offer the profile {profile!r} {where}: {offered_text(offered)}; {fix}"


def platform_profile_problem(timeout: float | None = None) -> str | None:
    """What is wrong with ACME_PROFILE, in words for the operator (None: nothing, or unset).
    Raises ProfileUnchecked when the CA cannot be asked."""
    profile = settings.ACME_PROFILE
    if not profile:
        return None
    try:
        offered = directory(**({"timeout": timeout} if timeout else {})).profiles
    except DirectoryUnavailable as exc:
        raise ProfileUnchecked(f"ACME_PROFILE={profile!r} could not be checked: {exc}") from None
    if profile in offered:
        return None
    return (
        f"ACME_PROFILE={profile!r} is not offered by the CA at {settings.ACME_DIRECTORY_URL}: "
        f"{offered_text(offered)}; every order of a domain without its own profile fails until it is changed"
    )
