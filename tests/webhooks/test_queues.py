"""The delivery queues (domains.webhook_models.WebhookQueue): one per endpoint and domain with a
pending delivery, claimed instead of the deliveries, with a cursor that a redelivery moves back,
removed with its last delivery; and the queue lock that keeps a fan-out and a write from losing a
delivery between them. Against a real receiver on 127.0.0.3."""

from __future__ import annotations

import datetime
import json
import threading
import time

import pytest
from django.db import connection, connections, transaction
from django.utils import timezone

from domains.models import DomainStatus, Event
from domains.status import change_status
from domains.webhook_models import DeliveryState, WebhookDelivery, WebhookQueue
from domains.webhooks import create_endpoint, payload_bodies, redeliver, retry_now
from tests.factories import DomainFactory
from tests.webhook_receiver import Answer
from workers import webhook_delivery

pytestmark = pytest.mark.django_db


def _fail(domain, why):
    assert change_status(domain.pk, DomainStatus.FAILING, why, last_error=f"Failed: {why}")
    assert change_status(domain.pk, DomainStatus.CREATING, "retrying")


def _reasons(receiver, domain) -> list[str]:
    return [e["data"]["reason"] for e in receiver.events() if e["data"]["domain"] == domain.name]


def test_a_queue_is_made_per_endpoint_and_domain_and_removed_with_its_last_delivery(receiver):
    one = DomainFactory(status=DomainStatus.CREATING)
    two = DomainFactory(app=one.app, status=DomainStatus.CREATING)
    endpoint, _ = create_endpoint(one.app, receiver.url)
    for n in range(3):
        _fail(one, f"one {n}")
    _fail(two, "two")

    webhook_delivery.dispatch()

    queues = {q.domain_id: q for q in WebhookQueue.objects.filter(endpoint=endpoint)}
    assert set(queues) == {one.pk, two.pk}
    first = WebhookDelivery.objects.filter(endpoint=endpoint, domain_id=one.pk).order_by("seq").first()
    assert queues[one.pk].after_seq == first.seq - 1 and queues[one.pk].lease_until is None

    webhook_delivery.deliver()

    assert _reasons(receiver, one) == ["Failed: one 0", "Failed: one 1", "Failed: one 2"]
    assert not WebhookQueue.objects.exists()


def test_a_failing_delivery_holds_its_queue_until_its_retry_and_the_claim_skips_it(receiver):
    stuck = DomainFactory(status=DomainStatus.CREATING)
    endpoint, _ = create_endpoint(stuck.app, receiver.url)
    receiver.answer = Answer(status=503)
    for n in range(30):
        _fail(stuck, f"stuck {n}")
    webhook_delivery.deliver()
    assert len(receiver.requests) == 1

    queue = WebhookQueue.objects.get(endpoint=endpoint, domain_id=stuck.pk)
    head = WebhookDelivery.objects.filter(endpoint=endpoint).order_by("seq").first()
    # The queue waits out the head's backoff; its 29 others are not due before it.
    assert queue.next_attempt_at == head.next_attempt_at > timezone.now()
    assert queue.lease_until is None and queue.after_seq == head.seq - 1
    batch = webhook_delivery.claim()
    assert batch.deliveries == [] and batch.empty_queues == []

    # Another domain of the app goes meanwhile.
    receiver.answer = Answer(status=204)
    other = DomainFactory(app=stuck.app, status=DomainStatus.CREATING)
    _fail(other, "other")
    webhook_delivery.deliver()
    assert _reasons(receiver, other) == ["Failed: other"]

    # Sent now: the stuck queue empties in order.
    assert retry_now(endpoint) == 1
    webhook_delivery.deliver()
    assert _reasons(receiver, stuck) == ["Failed: stuck 0"] + [f"Failed: stuck {n}" for n in range(30)]
    assert retry_now(endpoint) == 0


def test_a_redelivery_moves_the_cursor_back_and_goes_before_the_queues_later_deliveries(receiver):
    domain = DomainFactory(status=DomainStatus.CREATING)
    endpoint, _ = create_endpoint(domain.app, receiver.url)
    _fail(domain, "old")
    webhook_delivery.deliver()
    old = WebhookDelivery.objects.get(endpoint=endpoint)
    assert old.state == DeliveryState.DELIVERED and not WebhookQueue.objects.exists()

    # Later events wait behind a failing one; the old one is redelivered meanwhile.
    receiver.answer = Answer(status=500)
    _fail(domain, "new 1")
    _fail(domain, "new 2")
    webhook_delivery.deliver()
    redeliver(old)
    queue = WebhookQueue.objects.get(endpoint=endpoint)
    assert queue.after_seq == old.seq - 1

    receiver.answer = Answer(status=204)
    webhook_delivery.deliver()

    assert _reasons(receiver, domain) == [
        "Failed: old",
        "Failed: new 1",
        "Failed: old",
        "Failed: new 1",
        "Failed: new 2",
    ]
    assert set(WebhookDelivery.objects.values_list("state", flat=True)) == {DeliveryState.DELIVERED}
    assert not WebhookQueue.objects.exists()


def test_a_redelivery_with_no_queue_makes_one_and_is_sent(receiver):
    domain = DomainFactory(status=DomainStatus.CREATING)
    endpoint, _ = create_endpoint(domain.app, receiver.url)
    _fail(domain, "once")
    webhook_delivery.deliver()
    delivered = WebhookDelivery.objects.get(endpoint=endpoint)

    redeliver(delivered)
    assert WebhookQueue.objects.filter(endpoint=endpoint, domain_id=domain.pk).exists()
    webhook_delivery.deliver()

    assert _reasons(receiver, domain) == ["Failed: once", "Failed: once"]
    assert not WebhookQueue.objects.exists()


def test_a_queue_whose_deliveries_were_deleted_is_removed_by_the_next_claim(receiver):
    domain = DomainFactory(status=DomainStatus.CREATING)
    endpoint, _ = create_endpoint(domain.app, receiver.url)
    _fail(domain, "gone")
    webhook_delivery.dispatch()
    WebhookDelivery.objects.filter(endpoint=endpoint).delete()

    counts = webhook_delivery.deliver()

    assert counts["claimed"] == 0 and receiver.requests == []
    assert not WebhookQueue.objects.exists()


def test_the_body_is_compact_json_with_the_common_fields_winning_over_the_types_own():
    domain = DomainFactory(status=DomainStatus.CREATING)
    event = Event.objects.create(
        type="certificate.expiring",
        app_id=domain.app_id,
        app_name=domain.app.name,
        domain_id=domain.pk,
        domain_name=domain.name,
        from_status="in_use",
        to_status="in_use",
        reason='ends in 7 days: "soon" \\ é \u2028',
        records=[{"type": "CNAME", "name": "_acme-challenge", "value": "x.example"}],
        data={"days": 7, "reason": "not this one", "certificate": {"serial": "0a", "sans": ["a", "b"]}},
    )
    event.refresh_from_db()

    body = payload_bodies([event.pk])[str(event.pk)]

    parsed = json.loads(body)
    assert parsed["type"] == "certificate.expiring"
    assert parsed["timestamp"] == event.created.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert parsed["data"] == {
        "days": 7,
        "certificate": {"serial": "0a", "sans": ["a", "b"]},
        "id": str(event.pk),
        "seq": event.seq,
        "app": domain.app.name,
        "domain": domain.name,
        "from_status": "in_use",
        "to_status": "in_use",
        "reason": 'ends in 7 days: "soon" \\ é \u2028',
        "records": [{"type": "CNAME", "name": "_acme-challenge", "value": "x.example"}],
    }
    # One key once: the type's own `reason` is left out, not sent beside the common one.
    assert body.count('"reason"') == 1 and body.startswith('{"type":"certificate.expiring","timestamp":"')


@pytest.mark.django_db(transaction=True)
def test_a_fan_out_waits_for_a_write_that_ends_a_queue_so_its_new_delivery_is_not_lost(
    receiver, without_session_worker
):
    """The write that ends a queue's last delivery removes the queue. Were a fan-out to add a
    delivery to that queue while the write's statement runs (the write's snapshot would not see
    it), the queue would go and the new delivery never be sent: the fan-out waits for the queue
    lock the write holds, then makes the queue again. (No worker runs: the commits ask for runs,
    and a worker's fan-out would hold the fan-out's own lock while it waits.)"""
    domain = DomainFactory(status=DomainStatus.CREATING)
    endpoint, _ = create_endpoint(domain.app, receiver.url)
    _fail(domain, "first")
    webhook_delivery.dispatch()
    batch = webhook_delivery.claim()
    (claimed,) = batch.deliveries
    queue = WebhookQueue.objects.get(endpoint=endpoint)

    errors: list[BaseException] = []
    written, dispatched = threading.Event(), threading.Event()

    def in_thread(work, done):
        try:
            work()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()
            done.set()

    # A third transaction holds the queue's row, so that the write's statement (its snapshot taken)
    # stops at the queue until it is let go.
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM domains_webhookqueue WHERE id = %s FOR UPDATE", [queue.pk])
        threading.Thread(
            target=in_thread, args=(lambda: webhook_delivery.deliver_claimed(batch), written)
        ).start()
        _wait_for_lock_wait()

        def fan_out():
            _fail(domain, "second")
            webhook_delivery.dispatch()

        threading.Thread(target=in_thread, args=(fan_out, dispatched)).start()
        # The fan-out waits for the write's queue lock (without it, it would be done by now).
        assert not dispatched.wait(1.0)
    assert written.wait(10) and dispatched.wait(10), "the write or the fan-out did not end"
    assert errors == []

    assert WebhookDelivery.objects.get(pk=claimed.id).state == DeliveryState.DELIVERED
    second = WebhookDelivery.objects.get(endpoint=endpoint, state=DeliveryState.PENDING)
    remade = WebhookQueue.objects.get(endpoint=endpoint, domain_id=domain.pk)
    assert remade.after_seq == second.seq - 1
    webhook_delivery.deliver()
    assert _reasons(receiver, domain) == ["Failed: first", "Failed: second"]


def _wait_for_lock_wait(timeout: float = 10.0) -> None:
    """Until another connection to this database waits for a lock. (Polled from inside a
    transaction: pg_stat_activity is read afresh each time only after pg_stat_clear_snapshot.)"""
    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = current_database() AND pid <> pg_backend_pid()"
            )
            if cursor.fetchone()[0]:
                return
            time.sleep(0.05)
    raise AssertionError("no connection came to wait for a lock")
