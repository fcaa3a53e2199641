"""Each user's email notification choices (issue 16): read with the defaults filled in, and changed
only through update_notifications, which the API, the CLI (through the API) and the admin use."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction

from domains.notification_models import MAX_DIGEST_SECONDS, NotificationSettings
from domains.webhooks import WebhookRefused, validate_event_types


class NotificationsRefused(ValueError):
    """A choice that cannot be made, with the field it is about."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def notification_settings(user) -> NotificationSettings:
    """The user's choices: their row, or an unsaved one holding the defaults."""
    found = NotificationSettings.objects.filter(user=user).first()
    return found if found is not None else NotificationSettings(user=user)


def event_types_of(values: Iterable[str]) -> list[str]:
    """The event types named, in the catalogue's order; NotificationsRefused names an unknown one."""
    try:
        return validate_event_types(values)
    except WebhookRefused as exc:
        raise NotificationsRefused("events", str(exc)) from None


def digest_of(value) -> int | None:
    """A digest window in seconds (None: the platform's default), between 0 and a week."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise NotificationsRefused("digest_seconds", "digest_seconds is a whole number of seconds, or null.")
    if not 0 <= value <= MAX_DIGEST_SECONDS:
        raise NotificationsRefused(
            "digest_seconds",
            f"digest_seconds must be between 0 and {MAX_DIGEST_SECONDS} (a week), not {value}.",
        )
    return value


_UNSET = object()


def update_notifications(
    user,
    *,
    email_enabled: bool | None = None,
    event_types: Iterable[str] | None = None,
    digest_seconds=_UNSET,
    all_apps: bool | None = None,
) -> NotificationSettings:
    """Changes what is given of the user's choices (validated all first: nothing is half-saved)
    and returns them. Only staff may hear of every app's events."""
    types = event_types_of(event_types) if event_types is not None else None
    digest = digest_of(digest_seconds) if digest_seconds is not _UNSET else _UNSET
    if all_apps and not user.is_staff:
        raise NotificationsRefused("all_apps", "Only staff users can be mailed about every app's events.")
    with transaction.atomic():
        NotificationSettings.objects.get_or_create(user=user)
        found = NotificationSettings.objects.select_for_update().get(user=user)
        if email_enabled is not None:
            found.email_enabled = email_enabled
        if types is not None:
            found.event_types = types
        if digest is not _UNSET:
            found.digest_seconds = digest
        if all_apps is not None:
            found.all_apps = all_apps
        found.save()
    return found
