"""Notification mails (issue 16): each user's waiting events (domains.EmailNotification, written
by the fan-out of workers/webhook_delivery.py) as one mail, in plain text and HTML, through Django's
email backend.

A user is mailed once their first waiting event has waited NOTIFICATION_GATHER_SECONDS (a burst
of changes at once goes in one mail) and their last mail is older than their digest window
(NOTIFICATION_DIGEST_SECONDS unless they chose another), with one line per domain and type however
often it happened: one bad night is a handful of mails, not one per event. Each user's mail is
written under their settings row's lock (another run skips them) and marked sent in the
transaction that sent it: a failed send leaves the events waiting, retried with backoff (1 minute
doubling to an hour). Events the user no longer wants (their choices changed, their address went)
are dropped, not mailed. A run keeps one connection to the mail server for all its mails, and
stops at the first sign that the server itself is down.
"""

from __future__ import annotations

import datetime
import logging
import smtplib
import socket
import time
from collections import Counter
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import EmailMultiAlternatives, get_connection
from django.db import connection, transaction
from django.template.loader import render_to_string
from django.utils import timezone

from domains.notification_models import EmailNotification, NotificationSettings
from domains.notification_text import Told, tell

logger = logging.getLogger(__name__)

# Users mailed per run, at most.
USERS_PER_RUN = 200
# The first wait after a failed send, doubled after each until the cap.
RETRY_FIRST = datetime.timedelta(minutes=1)
RETRY_CAP = datetime.timedelta(hours=1)
# How much of an SMTP error a user's settings keep.
ERROR_CHARS = 500

_DUE = """
SELECT w.user_id FROM (
    SELECT user_id, min(created) AS first FROM domains_emailnotification
    WHERE sent_at IS NULL GROUP BY user_id
) w
LEFT JOIN domains_notificationsettings s ON s.user_id = w.user_id
WHERE w.first <= %(gathered)s
  AND (s.last_mailed_at IS NULL
       OR s.last_mailed_at <= %(now)s - make_interval(secs => COALESCE(s.digest_seconds, %(digest)s)))
  AND (s.mail_retry_at IS NULL OR s.mail_retry_at <= %(now)s)
ORDER BY w.first
LIMIT %(limit)s
"""


def due_users(now: datetime.datetime, limit: int = USERS_PER_RUN) -> list[int]:
    """The users whose waiting events are due to be mailed, longest waiting first."""
    gathered = now - datetime.timedelta(seconds=settings.NOTIFICATION_GATHER_SECONDS)
    with connection.cursor() as cursor:
        cursor.execute(
            _DUE,
            {
                "now": now,
                "gathered": gathered,
                "digest": settings.NOTIFICATION_DIGEST_SECONDS,
                "limit": limit,
            },
        )
        return [row[0] for row in cursor.fetchall()]


@dataclass(frozen=True)
class Mail:
    subject: str
    text: str
    html: str


def collapse(told: list[Told]) -> list[Told]:
    """One line per domain and type: the latest event's, counting the earlier ones (a domain that
    failed four times in the night is one line saying so), in the order of the latest."""
    lines: dict[tuple[str, str], Told] = {}
    for item in told:
        earlier = lines.pop((item.domain, item.type), None)
        if earlier is not None:
            item.times = earlier.times + 1
            item.first_when = earlier.first_when or earlier.when
        lines[(item.domain, item.type)] = item
    return list(lines.values())


def compose(told: list[Told], user_name: str, limit: int) -> Mail:
    """The mail of `told` (in order), repeats collapsed: the first `limit` lines, and how many more
    there were."""
    domains = {item.domain for item in told}
    if len(told) == 1:
        subject = told[0].headline
    elif len(domains) == 1:
        subject = f"{told[0].domain}: {len(told)} updates"
    else:
        subject = f"{len(told)} updates on {len(domains)} domains"
    lines = collapse(told)
    more = max(len(lines) - limit, 0)
    told = lines[:limit]
    grouped: dict[str, list[Told]] = {}
    for item in told:
        grouped.setdefault(item.domain, []).append(item)
    context = {
        "user_name": user_name,
        "groups": sorted(grouped.items()),
        "more": more,
        "base_url": settings.PUBLIC_BASE_URL,
    }
    return Mail(
        subject=f"{settings.EMAIL_SUBJECT_PREFIX}{subject}",
        text=render_to_string("notifications/mail.txt", context),
        html=render_to_string("notifications/mail.html", context),
    )


class MailServerDown(Exception):
    """The mail server could not be reached or dropped the connection: the run stops (the users
    after this one wait for the next run rather than each for EMAIL_TIMEOUT now)."""


# Failures of the server itself, not of one mail (a refused recipient, a refused message).
_SERVER_DOWN = (
    smtplib.SMTPConnectError,
    smtplib.SMTPServerDisconnected,
    ConnectionError,
    TimeoutError,
    socket.gaierror,
)


def mail_user(user_id: int, now: datetime.datetime | None = None, mail_connection=None) -> str:
    """Mails the user their waiting events when due (over `mail_connection`, one of Django's
    backends, when given: a run keeps one open); returns what happened: "sent", "dropped"
    (nothing left they want), "busy" (another run has them), "not_due" or "failed". Raises
    MailServerDown, after recording the failure, when the server itself failed."""
    now = now or timezone.now()
    user = get_user_model().objects.filter(pk=user_id).first()
    if user is None:
        return "dropped"
    NotificationSettings.objects.get_or_create(user=user)
    error, down = None, False
    with transaction.atomic():
        choices = NotificationSettings.objects.select_for_update(skip_locked=True).filter(user=user).first()
        if choices is None:
            return "busy"
        if choices.mail_retry_at and choices.mail_retry_at > now:
            return "not_due"
        if choices.last_mailed_at and choices.last_mailed_at > now - datetime.timedelta(
            seconds=choices.digest
        ):
            return "not_due"
        waiting = (
            EmailNotification.objects.filter(user=user, sent_at=None).select_related("event").order_by("seq")
        )
        wanted, unwanted = [], []
        for item in waiting:
            keep = (
                user.is_active
                and bool(user.email)
                and choices.email_enabled
                and item.event.type in choices.event_types
            )
            (wanted if keep else unwanted).append(item)
        if unwanted:
            EmailNotification.objects.filter(pk__in=[item.pk for item in unwanted]).delete()
        if not wanted:
            return "dropped"
        mail = compose(
            [tell(item.event) for item in wanted],
            user.get_full_name() or user.username,
            settings.NOTIFICATION_MAX_EVENTS,
        )
        message = EmailMultiAlternatives(
            mail.subject, mail.text, None, [user.email], connection=mail_connection
        )
        message.attach_alternative(mail.html, "text/html")
        try:
            if mail_connection is not None:
                # Opened here (once per run: it stays open), or send() would open and close it.
                mail_connection.open()
            message.send()
        except Exception as exc:  # the backend's errors: SMTP, sockets, an API's
            error = f"{type(exc).__name__}: {exc}"[:ERROR_CHARS]
            down = isinstance(exc, _SERVER_DOWN)
        else:
            EmailNotification.objects.filter(pk__in=[item.pk for item in wanted]).update(sent_at=now)
            NotificationSettings.objects.filter(pk=choices.pk).update(
                last_mailed_at=now, mail_retry_at=None, mail_failures=0, last_mail_error=""
            )
            return "sent"
    # The send failed: the events wait, and the user is tried again after a while.
    failures = choices.mail_failures + 1
    wait = min(RETRY_FIRST * 2 ** (failures - 1), RETRY_CAP)
    NotificationSettings.objects.filter(pk=choices.pk).update(
        mail_failures=failures, mail_retry_at=now + wait, last_mail_error=error
    )
    logger.warning("could not mail user %s their %d event(s): %s", user_id, len(wanted), error)
    if down:
        raise MailServerDown(error)
    return "failed"


def send_due(now: datetime.datetime | None = None, budget_seconds: float = 240.0) -> Counter:
    """Mails every user whose waiting events are due, over one connection to the mail server,
    until `budget_seconds` have passed or the server is down (the rest wait for the next run)."""
    now = now or timezone.now()
    started = time.monotonic()
    counts: Counter = Counter()
    due = due_users(now)
    if not due:
        return counts
    mail_connection = get_connection()
    try:
        for user_id in due:
            if time.monotonic() - started > budget_seconds:
                break
            try:
                counts[mail_user(user_id, now, mail_connection)] += 1
            except MailServerDown:
                counts["failed"] += 1
                break
    finally:
        try:
            mail_connection.close()
        except Exception:  # closing a broken connection: nothing left to do
            logger.debug("closing the mail connection failed", exc_info=True)
    return counts
