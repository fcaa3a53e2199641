"""Notification mails (workers/notification_mail.py) through a real SMTP server (aiosmtpd, the
suite's `smtp`): what the mails say of each event (plain text and HTML), who gets them, the
gathering and the digest that turn a burst into one mail, and retries when the server refuses."""

from __future__ import annotations

import datetime

import pytest
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from certificates.models import CertificateSource
from domains.models import DomainStatus, Event
from domains.notification_models import EmailNotification, NotificationSettings
from domains.notifications import update_notifications
from domains.status import change_status
from tests.factories import AppFactory, CertificateFactory, DomainFactory, UserFactory
from workers import webhook_delivery
from workers.expiry_events import record_expiry_events
from workers.notification_mail import send_due

pytestmark = pytest.mark.django_db

DAY = datetime.timedelta(days=1)


def _owner(name="alice", **fields):
    return UserFactory(username=name, email=f"{name}@customer.example", **fields)


def _fan_out() -> None:
    """The fan-out of a delivery run (workers/webhook_delivery.dispatch), which queues the mails."""
    while webhook_delivery.dispatch()[0]:
        pass


def _section(text: str, domain: str) -> str:
    """What the plain-text mail says under the domain's heading."""
    return text.split(f"== {domain} ")[1].split("\n== ")[0]


def _fail(domain, why: str) -> None:
    assert change_status(domain.pk, DomainStatus.FAILING, why, last_error=f"Failed: {why}")
    assert change_status(domain.pk, DomainStatus.CREATING, "retrying")


def test_an_action_required_mail_names_the_domain_the_reason_the_records_and_what_to_do(smtp):
    owner = _owner()
    domain = DomainFactory(
        app=AppFactory(owner=owner, name="shop"), name="*.shop.example", status=DomainStatus.PENDING_DNS
    )
    assert change_status(
        domain.pk,
        DomainStatus.ACTION_REQUIRED,
        "dns-01",
        last_error="Add the CNAME record for _acme-challenge.",
    )
    _fan_out()

    assert send_due() == {"sent": 1}

    (mail,) = smtp.wait_for(1)
    assert mail.recipients == ["alice@customer.example"]
    assert mail.subject == "[Certwright] *.shop.example needs you to act"
    event = Event.objects.get(domain_id=domain.pk)
    assert event.records, "a wildcard waiting for DNS has records to add"
    for body in (mail.part("text/plain"), mail.part("text/html")):
        assert "*.shop.example" in body
        assert "Add the CNAME record for _acme-challenge." in body
        assert "Records to add at your DNS provider" in body
        for record in event.records:
            assert record.split()[0] in body
        assert "certwright -a shop domains-retry *.shop.example" in body
    assert "<pre" in mail.part("text/html")
    assert EmailNotification.objects.get(user=owner).sent_at is not None


def test_an_expiring_custom_certificate_mail_says_whether_lets_encrypt_takes_over(smtp):
    now = timezone.now()
    owner = _owner()
    app = AppFactory(owner=owner, name="blog")
    covered = DomainFactory(app=app, name="covered.example", status=DomainStatus.NOT_USED)
    CertificateFactory(
        domain=covered, source=CertificateSource.CUSTOM, not_before=now - 300 * DAY, not_after=now + 20 * DAY
    )
    CertificateFactory(domain=covered, not_before=now - 10 * DAY, not_after=now + 80 * DAY)
    alone = DomainFactory(
        app=app, name="alone.example", status=DomainStatus.DISABLED, letsencrypt_enabled=False
    )
    CertificateFactory(
        domain=alone, source=CertificateSource.CUSTOM, not_before=now - 300 * DAY, not_after=now + 5 * DAY
    )
    assert record_expiry_events(now) == 2
    _fan_out()

    assert send_due() == {"sent": 1}

    (mail,) = smtp.wait_for(1)
    assert mail.subject == "[Certwright] 2 updates on 2 domains"
    text = mail.part("text/plain")
    assert "has an uploaded certificate about to end" in text
    assert "No action is needed: Certwright's Let's Encrypt certificate is served when it ends" in _section(
        text, "covered.example"
    )
    assert "Upload a renewed certificate before then" in _section(text, "alone.example")
    assert "within 30 days" in text and "within 7 days" in text


def test_an_expiring_lets_encrypt_certificate_is_mailed_with_what_to_check(smtp):
    now = timezone.now()
    owner = _owner()
    domain = DomainFactory(
        app=AppFactory(owner=owner, name="api"), name="api.example", status=DomainStatus.IN_USE
    )
    CertificateFactory(domain=domain, not_before=now - 87 * DAY, not_after=now + 2 * DAY)
    assert record_expiry_events(now) == 1
    _fan_out()

    send_due()

    (mail,) = smtp.wait_for(1)
    assert mail.subject == "[Certwright] api.example has a certificate about to end"
    assert "Nothing valid follows it yet" in mail.part("text/plain")
    assert "certwright -a api domains-show api.example" in mail.part("text/html")


def test_a_burst_on_a_bad_night_is_one_mail_and_later_events_wait_for_the_digest(smtp, settings):
    settings.NOTIFICATION_DIGEST_SECONDS = 3600
    owner = _owner()
    app = AppFactory(owner=owner, name="shop")
    domains = [DomainFactory(app=app, status=DomainStatus.CREATING) for _ in range(10)]
    for round_ in range(4):
        for domain in domains:
            _fail(domain, f"the CA answered 500 (round {round_})")
    _fan_out()
    now = timezone.now()

    assert send_due(now) == {"sent": 1}
    (mail,) = smtp.wait_for(1)
    assert mail.subject == "[Certwright] 40 updates on 10 domains"
    # One line per domain, saying how often it failed; the latest reason is the one shown.
    text = mail.part("text/plain")
    assert text.count("cannot get a certificate") == 10
    assert text.count("; 4 times since") == 10
    assert "(round 3)" in text and "(round 0)" not in text

    # Another failure half an hour later waits for the hour to end: no second mail yet.
    _fail(domains[0], "still 500")
    _fan_out()
    assert send_due(now + datetime.timedelta(minutes=30)) == {}
    assert len(smtp.mails) == 1
    assert send_due(now + datetime.timedelta(minutes=61)) == {"sent": 1}
    assert "still 500" in smtp.wait_for(2)[1].part("text/plain")


def test_a_mail_lists_at_most_the_cap_and_says_how_many_more(smtp, settings):
    settings.NOTIFICATION_MAX_EVENTS = 5
    owner = _owner()
    app = AppFactory(owner=owner)
    for domain in [DomainFactory(app=app, status=DomainStatus.CREATING) for _ in range(8)]:
        _fail(domain, "nope")
    _fan_out()

    send_due()

    (mail,) = smtp.wait_for(1)
    assert mail.subject == "[Certwright] 8 updates on 8 domains"
    assert mail.part("text/plain").count("cannot get a certificate") == 5
    assert "and 3 more updates" in mail.part("text/plain")
    assert not EmailNotification.objects.filter(sent_at=None).exists()


def test_the_first_event_is_gathered_for_a_while_before_it_is_mailed(smtp, settings):
    settings.NOTIFICATION_GATHER_SECONDS = 60
    owner = _owner()
    _fail(DomainFactory(app=AppFactory(owner=owner), status=DomainStatus.CREATING), "nope")
    _fan_out()
    now = timezone.now()

    assert send_due(now) == {}
    assert send_due(now + datetime.timedelta(seconds=61)) == {"sent": 1}
    smtp.wait_for(1)


def test_only_the_chosen_event_types_are_mailed_and_not_to_someone_who_turned_mail_off(smtp):
    picky, silent, defaults = _owner("picky"), _owner("silent"), _owner("plain")
    update_notifications(picky, event_types=["domain.in_use"])
    update_notifications(silent, email_enabled=False)
    for user in (picky, silent, defaults):
        domain = DomainFactory(app=AppFactory(owner=user), status=DomainStatus.CREATING)
        _fail(domain, "nope")
        assert change_status(domain.pk, DomainStatus.IN_USE, "issued")
    _fan_out()

    send_due()

    mails = {mail.recipients[0]: mail for mail in smtp.wait_for(2)}
    assert set(mails) == {"picky@customer.example", "plain@customer.example"}
    assert "is served over HTTPS" in mails["picky@customer.example"].subject
    # The defaults are what someone must act on: in_use is not among them.
    assert "cannot get a certificate" in mails["plain@customer.example"].subject
    assert not EmailNotification.objects.filter(user=silent).exists()


def test_a_choice_changed_after_the_fan_out_drops_what_is_no_longer_wanted(smtp):
    owner = _owner()
    _fail(DomainFactory(app=AppFactory(owner=owner), status=DomainStatus.CREATING), "nope")
    _fan_out()
    update_notifications(owner, event_types=["certificate.expired"])

    assert send_due() == {"dropped": 1}
    assert smtp.mails == []
    assert not EmailNotification.objects.exists()


def test_an_owner_without_an_address_gets_nothing_queued(smtp):
    owner = UserFactory(username="nomail", email="")
    _fail(DomainFactory(app=AppFactory(owner=owner), status=DomainStatus.CREATING), "nope")
    _fan_out()

    assert not EmailNotification.objects.exists()
    assert send_due() == {}


def test_a_staff_user_who_asks_hears_of_every_apps_events(smtp):
    operator = _owner("ops", is_staff=True)
    update_notifications(operator, all_apps=True)
    _fail(
        DomainFactory(
            app=AppFactory(owner=_owner("cust")), name="their.example", status=DomainStatus.CREATING
        ),
        "x",
    )
    _fan_out()

    send_due()

    assert sorted(mail.recipients[0] for mail in smtp.wait_for(2)) == [
        "cust@customer.example",
        "ops@customer.example",
    ]


def test_a_staff_user_who_owns_the_app_and_asks_for_every_apps_hears_of_each_event_once(smtp):
    operator = _owner("ops", is_staff=True)
    update_notifications(operator, all_apps=True)
    _fail(
        DomainFactory(app=AppFactory(owner=operator), name="own.example", status=DomainStatus.CREATING), "x"
    )
    _fan_out()

    (event,) = Event.objects.filter(domain_name="own.example")
    assert list(EmailNotification.objects.values_list("user_id", "event_id")) == [(operator.pk, event.id)]


def test_a_customer_cannot_ask_for_every_apps_events():
    customer = _owner()
    with pytest.raises(ValueError, match="Only staff users"):
        update_notifications(customer, all_apps=True, email_enabled=False)
    # Nothing of the refused change was saved.
    assert not NotificationSettings.objects.filter(user=customer, email_enabled=False).exists()


def test_a_refusing_smtp_server_leaves_the_events_waiting_and_retries_with_backoff(smtp):
    owner = _owner()
    _fail(DomainFactory(app=AppFactory(owner=owner), status=DomainStatus.CREATING), "nope")
    _fan_out()
    smtp.refuse = True
    now = timezone.now()

    assert send_due(now) == {"failed": 1}
    choices = NotificationSettings.objects.get(user=owner)
    assert choices.mail_failures == 1 and "451" in choices.last_mail_error
    assert choices.mail_retry_at == now + datetime.timedelta(minutes=1)
    assert EmailNotification.objects.get(user=owner).sent_at is None
    assert send_due(now + datetime.timedelta(seconds=30)) == {}

    smtp.refuse = False
    assert send_due(now + datetime.timedelta(seconds=61)) == {"sent": 1}
    smtp.wait_for(1)
    choices.refresh_from_db()
    assert (choices.mail_failures, choices.last_mail_error, choices.mail_retry_at) == (0, "", None)


def test_an_unreachable_smtp_server_stops_the_run_after_the_first_user(smtp, settings):
    from devstack.ports import free_port

    settings.EMAIL_PORT = free_port()
    first, second = _owner("first"), _owner("second")
    for owner in (first, second):
        _fail(DomainFactory(app=AppFactory(owner=owner), status=DomainStatus.CREATING), "nope")
    _fan_out()

    assert send_due() == {"failed": 1}

    failed = NotificationSettings.objects.exclude(last_mail_error="").get()
    assert "Connection refused" in failed.last_mail_error and failed.mail_retry_at is not None
    # The other user was not tried: no backoff of theirs, their line waits for the next run.
    assert not NotificationSettings.objects.filter(mail_failures__gt=0).exclude(pk=failed.pk).exists()
    assert EmailNotification.objects.filter(sent_at=None).count() == 2


def test_one_run_mails_every_due_user_over_one_connection(smtp):
    owners = [_owner(f"user{n}") for n in range(3)]
    for owner in owners:
        _fail(DomainFactory(app=AppFactory(owner=owner), status=DomainStatus.CREATING), "nope")
    _fan_out()

    assert send_due() == {"sent": 3}

    mails = smtp.wait_for(3)
    assert sorted(mail.recipients[0] for mail in mails) == sorted(owner.email for owner in owners)
    assert len({mail.peer for mail in mails}) == 1


def test_beat_asks_for_mail_runs_every_30_seconds_on_the_default_queue():
    task = PeriodicTask.objects.get(task="workers.tasks.notifications.send_notification_mails")

    assert (task.interval.every, task.interval.period, task.queue, task.enabled) == (
        30,
        "seconds",
        "default",
        True,
    )
