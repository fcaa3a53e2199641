"""Notification mail end to end, through the real workers, Pebble's DNS and a real SMTP server: a
domain that waits for its ownership record mails its owner what to add."""

from __future__ import annotations

import pytest

from domains.models import Domain, DomainStatus
from domains.notification_models import EmailNotification
from domains.ownership import ownership_token
from domains.services import create_domain
from tests.integration.polling import unique_name, wait_for
from workers.tasks.notifications import send_notification_mails

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_a_domain_waiting_for_its_ownership_record_mails_its_owner_the_record(
    issuance_stack, challtestsrv, app, smtp
):
    app.owner.email = "owner@customer.example"
    app.owner.save()
    name = unique_name()
    challtestsrv.add_a(name, ["127.0.0.1"])

    domain = create_domain(app, name)
    wait_for(
        lambda: Domain.objects.get(pk=domain.pk).status == DomainStatus.ACTION_REQUIRED,
        what="action required",
    )
    # The commit that wrote the event asked for a delivery run, whose fan-out queues the mail.
    wait_for(
        lambda: EmailNotification.objects.filter(user=app.owner).exists(), timeout=20, what="the mail queued"
    )
    send_notification_mails.delay()  # as beat does every 30 s

    (mail,) = smtp.wait_for(1, timeout=30)
    assert mail.recipients == ["owner@customer.example"]
    assert mail.subject == f"[Certwright] {name} needs you to act"
    text = mail.part("text/plain")
    assert f'_certwright-challenge.{name}. TXT "{ownership_token(app.pk, name)}"' in text
    assert f"certwright -a {app.name} domains-retry {name}" in text
    assert name in mail.part("text/html")
    wait_for(
        lambda: not EmailNotification.objects.filter(user=app.owner, sent_at=None).exists(),
        what="the mail marked sent",
    )
