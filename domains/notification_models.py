"""Email notifications (issue 16): each user's choices and the events waiting for their next mail;
imported by domains.models.

An app's owner hears of the events of their apps; a staff user who asks for it (`all_apps`) of
every app's. Without a NotificationSettings row a user gets the defaults (DEFAULT_EMAIL_EVENTS,
the NOTIFICATION_DIGEST_SECONDS digest) at their account's address. The fan-out
(workers/webhook_delivery.py, with the webhooks') writes one EmailNotification per event and user;
the mailer (workers/notification_mail.py) sends each user's waiting ones as one mail.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.utils import timezone

# What a user is mailed about unless they choose: what someone must act on or should know went
# wrong. Issuances, renewals and in-use domains are there to choose (webhooks carry every type).
DEFAULT_EMAIL_EVENTS = (
    "domain.action_required",
    "domain.failing",
    "certificate.renewal_failed",
    "certificate.expiring",
    "certificate.expired",
    "custom_certificate.expiring",
)
# The longest digest window a user may choose (a week).
MAX_DIGEST_SECONDS = 7 * 24 * 3600


def default_email_events() -> list[str]:
    return list(DEFAULT_EMAIL_EVENTS)


class NotificationSettings(models.Model):
    """One user's email choices, and the state of their mails."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="notification_settings",
    )
    email_enabled = models.BooleanField(default=True)
    # The event types mailed (an empty list: none).
    event_types = ArrayField(models.CharField(max_length=40), default=default_email_events, blank=True)
    # No two mails closer than this; None: NOTIFICATION_DIGEST_SECONDS; 0: each run's events at once.
    digest_seconds = models.PositiveIntegerField(null=True, blank=True)
    # Staff only: the events of every app, not just of the apps the user owns.
    all_apps = models.BooleanField(default=False)
    last_mailed_at = models.DateTimeField(null=True, blank=True, editable=False)
    # After a failed send (the SMTP server down or refusing), no try before this.
    mail_retry_at = models.DateTimeField(null=True, blank=True, editable=False)
    mail_failures = models.PositiveIntegerField(default=0, editable=False)
    last_mail_error = models.TextField(blank=True, default="", editable=False)
    created = models.DateTimeField(default=timezone.now, editable=False)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "notification settings"
        verbose_name_plural = "notification settings"

    def __str__(self) -> str:
        return f"notifications of {self.user}"

    @property
    def digest(self) -> int:
        return settings.NOTIFICATION_DIGEST_SECONDS if self.digest_seconds is None else self.digest_seconds


class EmailNotification(models.Model):
    """One event waiting for (or sent in) one user's mail."""

    # No index of its own: the unique (user, event) begins with it.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="email_notifications", db_index=False
    )
    event = models.ForeignKey("domains.Event", on_delete=models.CASCADE, related_name="email_notifications")
    # The event's, for the mail's order.
    seq = models.BigIntegerField()
    created = models.DateTimeField(default=timezone.now, editable=False)
    # When the mail that carried it left; None while it waits.
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-seq"]
        constraints = [
            models.UniqueConstraint(fields=["user", "event"], name="email_notification_once"),
        ]
        indexes = [
            # The mailer: WHERE sent_at IS NULL, per user in seq order (and the users with any).
            models.Index(
                fields=["user", "seq"],
                name="email_notification_waiting_idx",
                condition=models.Q(sent_at=None),
            ),
        ]

    def __str__(self) -> str:
        return f"event {self.event_id} for {self.user_id}"
