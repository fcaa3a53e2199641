"""The fan-out's backlog (domains.EventBacklog): every event, whatever statement inserts it, waits
there from its insert's transaction until one fan-out takes it off; an event whose transaction
commits after a later one was fanned out is still fanned out; a delivery per event and endpoint,
never two. Against a real receiver on 127.0.0.3."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, connections, transaction

from domains.models import DomainStatus, Event, EventBacklog
from domains.status import change_status
from domains.webhook_models import WebhookDelivery
from domains.webhooks import create_endpoint
from tests.factories import DomainFactory
from workers import webhook_delivery

_RAW_INSERT = """
INSERT INTO domains_event (id, created, type, app_id, app_name, domain_id, domain_name, from_status,
    to_status, reason, records, data, dedupe_key)
SELECT gen_random_uuid(), now(), 'domain.failing', d.app_id, 'app', d.id, d.name, 'creating',
    'failing', 'raw ' || n, '[]'::jsonb, '{}'::jsonb,
    CASE WHEN %(key)s = '' THEN '' ELSE %(key)s || n END
FROM domains_domain d, generate_series(1, %(count)s) AS n
WHERE d.id = %(domain)s
ON CONFLICT (dedupe_key) WHERE dedupe_key <> '' DO NOTHING
"""


def _raw_events(domain, count: int, key: str = "") -> None:
    with connection.cursor() as cursor:
        cursor.execute(_RAW_INSERT, {"domain": domain.pk, "count": count, "key": key})


@pytest.mark.django_db
def test_events_of_every_statement_wait_in_the_backlog_and_are_fanned_out_once(receiver):
    domain = DomainFactory(status=DomainStatus.CREATING)
    endpoint, _ = create_endpoint(domain.app, receiver.url)
    assert change_status(domain.pk, DomainStatus.FAILING, "one row", last_error="Failed: one row")
    _raw_events(domain, 3)  # many rows in one statement
    _raw_events(domain, 2, key="expiry-")
    _raw_events(domain, 2, key="expiry-")  # both keys there already: nothing inserted

    events = {event.seq: str(event.id) for event in Event.objects.all()}
    assert len(events) == 6
    assert {row.seq: str(row.event_id) for row in EventBacklog.objects.all()} == events

    assert webhook_delivery.dispatch() == (6, 6, 0)
    assert not EventBacklog.objects.exists()
    assert webhook_delivery.dispatch() == (0, 0, 0)
    delivered = WebhookDelivery.objects.filter(endpoint=endpoint).values_list("seq", flat=True)
    assert sorted(delivered) == sorted(events)


@pytest.mark.django_db(transaction=True)
def test_an_event_committed_after_a_later_one_was_fanned_out_is_fanned_out_too(receiver):
    """Seqs are drawn at insert, not at commit: a transaction may commit its event after another's
    later seq was fanned out. The backlog holds it until it commits, so no cursor over seqs could
    have passed it by."""
    early = DomainFactory(status=DomainStatus.CREATING)
    late = DomainFactory(app=early.app, status=DomainStatus.CREATING)
    create_endpoint(early.app, receiver.url)
    inserted, go_on, done = threading.Event(), threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def slow_writer():
        try:
            with transaction.atomic():
                _raw_events(early, 1)
                inserted.set()
                go_on.wait(10)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()
            done.set()

    threading.Thread(target=slow_writer).start()
    assert inserted.wait(10)
    _raw_events(late, 1)
    assert webhook_delivery.dispatch()[0] == 1
    go_on.set()
    assert done.wait(10) and errors == []

    (first,) = Event.objects.filter(domain_id=early.pk)
    (second,) = Event.objects.filter(domain_id=late.pk)
    assert first.seq < second.seq
    assert webhook_delivery.dispatch()[0] == 1
    assert set(WebhookDelivery.objects.values_list("event_id", flat=True)) == {first.id, second.id}
    webhook_delivery.deliver()
    assert {entry["data"]["id"] for entry in receiver.events()} == {str(first.id), str(second.id)}


@pytest.mark.django_db
def test_an_event_put_back_in_the_backlog_is_not_sent_twice_and_stops_no_fan_out(receiver):
    domain = DomainFactory(status=DomainStatus.CREATING)
    create_endpoint(domain.app, receiver.url)
    assert change_status(domain.pk, DomainStatus.FAILING, "first", last_error="Failed: first")
    webhook_delivery.deliver()
    (event,) = Event.objects.all()
    EventBacklog.objects.create(
        seq=event.seq, event_id=event.id, app_id=event.app_id, domain_id=event.domain_id, type=event.type
    )
    assert change_status(domain.pk, DomainStatus.IN_USE, "second")

    assert webhook_delivery.dispatch() == (2, 1, 0)
    webhook_delivery.deliver()
    assert [entry["data"]["reason"] for entry in receiver.events()] == ["Failed: first", "second"]


@pytest.mark.django_db
def test_an_event_deleted_by_hand_before_its_fan_out_is_passed_over_and_stops_no_fan_out(receiver):
    domain = DomainFactory(status=DomainStatus.CREATING)
    create_endpoint(domain.app, receiver.url)
    assert change_status(domain.pk, DomainStatus.FAILING, "gone", last_error="Failed: gone")
    assert change_status(domain.pk, DomainStatus.IN_USE, "kept")
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM domains_event WHERE type = 'domain.failing'")

    assert webhook_delivery.dispatch() == (2, 1, 0)
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # the foreign keys' check, as at commit
    webhook_delivery.deliver()
    assert [entry["data"]["reason"] for entry in receiver.events()] == ["kept"]
