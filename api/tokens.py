"""Creating, checking and revoking API tokens."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import secrets

from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone

from api.models import ApiToken

# `cwt_` tells a Certwright token apart in a leak scanner or a log; the 12 characters after it
# find the row, the whole string is checked against the stored digest.
TOKEN_PREFIX = "cwt_"  # noqa: S105 (a marker, not a secret)
LOOKUP_LENGTH = 12


class InvalidTokenName(ValueError):
    """A token name that cannot be stored; the message says why."""


def check_token_name(name: str) -> str:
    """`name` as it is stored (trimmed; "unnamed" when blank); raises InvalidTokenName when it is too
    long or holds control characters (PostgreSQL refuses NUL: a 500 otherwise)."""
    name = name.strip()
    limit = ApiToken._meta.get_field("name").max_length
    if len(name) > limit:
        raise InvalidTokenName(f"a token name has at most {limit} characters (this one has {len(name)})")
    if not name.isprintable():
        raise InvalidTokenName("a token name cannot hold control characters")
    return name or "unnamed"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(user: AbstractBaseUser, name: str) -> tuple[ApiToken, str]:
    """Creates a token for `user`; returns the row and the token, which is shown once and never
    stored. Raises InvalidTokenName for a name check_token_name refuses."""
    name = check_token_name(name)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken.objects.create(
        user=user,
        name=name,
        prefix=token[: len(TOKEN_PREFIX) + LOOKUP_LENGTH],
        digest=_digest(token),
    )
    return row, token


def check_token(token: str, now: datetime.datetime | None = None) -> ApiToken | None:
    """The active token row matching `token`, or None; records when it was last used (at most once
    a minute, so that reads do not all write)."""
    token = token.strip()
    if not token.startswith(TOKEN_PREFIX) or len(token) < len(TOKEN_PREFIX) + LOOKUP_LENGTH + 8:
        return None
    now = now or timezone.now()
    digest = _digest(token)
    for row in ApiToken.objects.select_related("user").filter(
        prefix=token[: len(TOKEN_PREFIX) + LOOKUP_LENGTH], revoked__isnull=True
    ):
        if hmac.compare_digest(row.digest, digest):
            if row.last_used is None or now - row.last_used > datetime.timedelta(minutes=1):
                ApiToken.objects.filter(pk=row.pk).update(last_used=now)
            return row
    return None


def revoke_token(row: ApiToken, now: datetime.datetime | None = None) -> bool:
    """Revokes the token at once; returns whether it was active."""
    return bool(
        ApiToken.objects.filter(pk=row.pk, revoked__isnull=True).update(revoked=now or timezone.now())
    )


def revoke_by_prefix(rows, prefix: str, what: str = "token") -> ApiToken:
    """Revokes the one active token among `rows` whose first characters are `prefix`; raises
    LookupError naming the problem when none or several match."""
    found = list(rows.filter(prefix__startswith=prefix, revoked__isnull=True)[:2])
    if len(found) != 1:
        raise LookupError(
            f"no active {what} starts with {prefix}"
            if not found
            else f"several {what}s start with {prefix}: give more characters"
        )
    revoke_token(found[0])
    return found[0]
