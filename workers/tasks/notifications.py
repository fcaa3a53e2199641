"""Notification mail runs (workers/notification_mail.py), on the `default` queue, asked for by beat
every 30 s: a user's first waiting event is mailed after NOTIFICATION_GATHER_SECONDS (60 s by
default), so a tick's delay is within the gathering."""

from celery import shared_task

from workers import notification_mail


@shared_task(name="workers.tasks.notifications.send_notification_mails", time_limit=300, soft_time_limit=270)
def send_notification_mails() -> dict:
    """Mails every user whose waiting events are due. Safe to run twice at once: each user's mail
    is written under their settings row's lock, which the other run skips."""
    return dict(notification_mail.send_due())
