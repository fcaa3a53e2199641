"""Email notifications in the admin (domains/notification_admin.py): operators choose for a user,
staff only may hear of every app, the digest is bounded, and "mail now" skips the digest's wait."""

from __future__ import annotations

import datetime

import pytest
from django.utils import timezone

from domains.models import DomainStatus
from domains.notification_models import EmailNotification, NotificationSettings
from domains.status import change_status
from tests.factories import AppFactory, DomainFactory, UserFactory
from workers import webhook_delivery
from workers.notification_mail import send_due

pytestmark = pytest.mark.django_db
ADD = "/admin/domains/notificationsettings/add/"


def test_an_operator_chooses_a_users_events_and_digest(admin_client):
    user = UserFactory(username="carol", email="carol@customer.example")

    saved = admin_client.post(
        ADD,
        {
            "user": user.pk,
            "email_enabled": "on",
            "event_types": ["certificate.expiring", "domain.action_required"],
            "digest_seconds": "86400",
        },
    )

    assert saved.status_code == 302, saved.content.decode()[:2000]
    choices = NotificationSettings.objects.get(user=user)
    assert choices.event_types == ["domain.action_required", "certificate.expiring"]
    assert choices.digest == 86400
    listed = admin_client.get("/admin/domains/notificationsettings/").content.decode()
    assert "carol@customer.example" in listed


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"all_apps": "on"}, "Only staff users"),
        ({"digest_seconds": str(8 * 86400)}, "between 0 and 604800"),
        ({"event_types": ["domain.exploded"]}, "not one of the available choices"),
    ],
)
def test_a_bad_choice_is_a_form_error_and_nothing_is_saved(admin_client, fields, words):
    user = UserFactory(username="dave", email="dave@customer.example")

    refused = admin_client.post(ADD, {"user": user.pk, "email_enabled": "on", **fields})

    assert refused.status_code == 200
    assert words in refused.content.decode()
    assert not NotificationSettings.objects.exists()


def test_mail_now_skips_the_digests_wait(admin_client, smtp):
    owner = UserFactory(username="erin", email="erin@customer.example")
    domain = DomainFactory(app=AppFactory(owner=owner), status=DomainStatus.CREATING)
    NotificationSettings.objects.create(
        user=owner, last_mailed_at=timezone.now() - datetime.timedelta(minutes=5)
    )
    assert change_status(domain.pk, DomainStatus.FAILING, "x", last_error="Failed: x")
    webhook_delivery.dispatch()
    assert send_due() == {}
    listed = admin_client.get("/admin/domains/notificationsettings/").content.decode()
    assert '<td class="field-waiting">1</td>' in listed

    admin_client.post(
        "/admin/domains/notificationsettings/",
        {"action": "mail_now", "_selected_action": [owner.pk]},
    )

    assert send_due() == {"sent": 1}
    assert smtp.wait_for(1)[0].recipients == ["erin@customer.example"]
    assert not EmailNotification.objects.filter(sent_at=None).exists()


def test_operators_read_the_mail_lines(admin_client):
    owner = UserFactory(username="frank", email="frank@customer.example")
    domain = DomainFactory(app=AppFactory(owner=owner), name="lines.example", status=DomainStatus.CREATING)
    assert change_status(domain.pk, DomainStatus.FAILING, "x", last_error="Failed: x")
    webhook_delivery.dispatch()

    page = admin_client.get("/admin/domains/emailnotification/").content.decode()

    assert "lines.example" in page and "domain.failing" in page
