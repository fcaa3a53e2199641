"""The outbox's retention (workers/retention.py) with what hangs off an event: its webhook
deliveries, their attempts and its mail lines go with it. Their foreign keys are checked at
commit, which a test's transaction never reaches: SET CONSTRAINTS ALL IMMEDIATE checks them now."""

from __future__ import annotations

import datetime

import pytest
from django.db import connection
from django.utils import timezone

from domains.models import DomainStatus, Event, EventBacklog
from domains.notification_models import EmailNotification
from domains.status import change_status
from domains.webhook_models import WebhookAttempt, WebhookDelivery
from domains.webhooks import create_endpoint
from tests.factories import AppFactory, DomainFactory, UserFactory
from workers import webhook_delivery
from workers.retention import prune_history

pytestmark = pytest.mark.django_db


def test_an_old_event_goes_with_its_deliveries_attempts_and_mails(receiver):
    owner = UserFactory(username="old", email="old@customer.example")
    domain = DomainFactory(app=AppFactory(owner=owner), status=DomainStatus.CREATING)
    create_endpoint(domain.app, receiver.url)
    long_ago = timezone.now() - datetime.timedelta(days=400)
    assert change_status(domain.pk, DomainStatus.FAILING, "old", now=long_ago, last_error="old")
    assert change_status(domain.pk, DomainStatus.IN_USE, "new")
    webhook_delivery.deliver()
    assert (WebhookAttempt.objects.count(), EmailNotification.objects.count()) == (2, 1)

    assert prune_history()["outbox events"] == 1
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")

    assert [event.type for event in Event.objects.all()] == ["domain.in_use"]
    assert WebhookDelivery.objects.count() == WebhookAttempt.objects.count() == 1
    assert not EmailNotification.objects.exists()


def test_an_old_event_never_fanned_out_leaves_the_backlog_with_it(receiver):
    """Its backlog row (domains.EventBacklog) goes too: a fan-out after the retention makes no
    delivery for an event that is gone."""
    domain = DomainFactory(status=DomainStatus.CREATING)
    create_endpoint(domain.app, receiver.url)
    long_ago = timezone.now() - datetime.timedelta(days=400)
    assert change_status(domain.pk, DomainStatus.FAILING, "old", now=long_ago, last_error="old")
    assert change_status(domain.pk, DomainStatus.IN_USE, "new")
    assert EventBacklog.objects.count() == 2

    assert prune_history()["outbox events"] == 1

    (kept,) = Event.objects.all()
    assert list(EventBacklog.objects.values_list("event_id", flat=True)) == [kept.id]
    assert webhook_delivery.dispatch()[:2] == (1, 1)
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    assert list(WebhookDelivery.objects.values_list("event_id", flat=True)) == [kept.id]
