"""Retention of the history tables (workers/retention.py): old domain events, ended orders,
settled revocations and feed rows go; each domain's newest event and newest (valid) order, and the
feed's newest row, stay; a router whose cursor is before what the feed keeps is told to take a
snapshot."""

from __future__ import annotations

import datetime

import pytest
from django.test import Client
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from api.routers import create_router_token
from certificates.models import (
    Challenge,
    FeedHorizon,
    Order,
    OrderState,
    Revocation,
    RevocationOutcome,
    ServedChange,
)
from domains.models import DomainEvent, DomainStatus
from tests.factories import AcmeAccountFactory, CertificateFactory, DomainFactory
from workers.retention import prune_history

# The feed's rows are written at commit.
pytestmark = pytest.mark.django_db(transaction=True)

DAY = datetime.timedelta(days=1)


def _ago(days: float) -> datetime.datetime:
    return timezone.now() - days * DAY


def _event(domain, days_ago: float, reason: str) -> DomainEvent:
    return DomainEvent.objects.create(
        domain=domain, created=_ago(days_ago), to_status=DomainStatus.IN_USE, reason=reason
    )


def _order(domain, account, state: str, finished_days_ago: float | None) -> Order:
    finished = None if finished_days_ago is None else _ago(finished_days_ago)
    order = Order.objects.create(
        domain=domain,
        account=account,
        state=state,
        names=[domain.name],
        created=_ago((finished_days_ago or 0) + 0.01),
        finished=finished,
    )
    Challenge.objects.create(
        order=order, identifier=domain.name, authorization_url=f"https://ca.test/authz/{order.pk}"
    )
    return order


def test_events_older_than_the_retention_go_but_each_domains_newest_stays(settings):
    settings.HISTORY_RETENTION_DAYS = 90
    busy, quiet = DomainFactory(), DomainFactory()
    old = [_event(busy, 200, "issued"), _event(busy, 120, "renewed")]
    recent = _event(busy, 10, "renewed again")
    only = _event(quiet, 400, "issued long ago")

    pruned = prune_history()

    assert pruned["domain events"] == 2
    assert set(DomainEvent.objects.filter(domain__in=[busy, quiet])) == {recent, only}
    assert not DomainEvent.objects.filter(pk__in=[e.pk for e in old]).exists()


def test_ended_orders_go_with_their_challenges_except_the_newest_and_the_newest_valid_of_a_domain(settings):
    settings.HISTORY_RETENTION_DAYS = 90
    domain, account = DomainFactory(), AcmeAccountFactory()
    first_valid = _order(domain, account, OrderState.VALID, 300)
    failed = _order(domain, account, OrderState.INVALID, 250)
    newest_valid = _order(domain, account, OrderState.VALID, 200)
    newest = _order(domain, account, OrderState.INVALID, 150)
    other = DomainFactory()
    recent = _order(other, account, OrderState.INVALID, 30)
    in_flight = _order(other, account, OrderState.PENDING, None)
    Order.objects.filter(pk=in_flight.pk).update(created=_ago(500))

    pruned = prune_history()

    assert pruned["ended orders"] == 2
    assert set(Order.objects.all()) == {newest_valid, newest, recent, in_flight}
    assert not Challenge.objects.filter(order_id__in=[first_valid.pk, failed.pk]).exists()
    assert Challenge.objects.filter(order_id=newest_valid.pk).exists()


def test_settled_revocations_go_after_the_retention_and_pending_ones_stay(settings):
    settings.HISTORY_RETENTION_DAYS = 90

    def revocation(outcome: str, settled_days_ago: float | None) -> Revocation:
        pending = outcome == RevocationOutcome.PENDING
        return Revocation.objects.create(
            domain_name="www.example.com",
            serial="01",
            leaf_pem="-----BEGIN CERTIFICATE-----\n",
            reason="cessationOfOperation",
            outcome=outcome,
            lease_until=timezone.now() if pending else None,
            created=_ago(settled_days_ago or 400),
            settled_at=None if pending else _ago(settled_days_ago),
        )

    gone = revocation(RevocationOutcome.REVOKED, 100)
    kept = [revocation(RevocationOutcome.REVOKED, 20), revocation(RevocationOutcome.PENDING, None)]

    assert prune_history()["settled revocations"] == 1
    assert set(Revocation.objects.all()) == set(kept)
    assert not Revocation.objects.filter(pk=gone.pk).exists()


def _feed_rows() -> list[int]:
    return list(ServedChange.objects.order_by("seq").values_list("seq", flat=True))


def test_old_feed_rows_go_except_the_newest_and_a_cursor_before_them_is_told_to_take_a_snapshot(settings):
    settings.FEED_RETENTION_DAYS = 7
    for _ in range(3):
        CertificateFactory()
    rows = _feed_rows()
    ServedChange.objects.update(created=_ago(8))
    before_all = rows[0] - 1
    router = Client(HTTP_AUTHORIZATION=f"Bearer {create_router_token('edge-1')}")
    assert router.get("/routers/v1/changes", {"after": before_all}).status_code == 200

    assert prune_history()["feed rows"] == len(rows) - 1

    assert _feed_rows() == [rows[-1]]
    assert FeedHorizon.objects.get().pruned_through == rows[-2]
    refused = router.get("/routers/v1/changes", {"after": before_all})
    assert refused.status_code == 409
    assert "snapshot" in refused.text and "FEED_RETENTION_DAYS" in refused.text
    # A router that had read the pruned rows goes on.
    assert router.get("/routers/v1/changes", {"after": rows[-2]}).status_code == 200
    answer = router.get("/routers/v1/changes", {"after": rows[-1]})
    assert answer.status_code == 200 and answer.json()["changes"] == []


def test_the_feed_keeps_rows_younger_than_its_retention_and_refuses_no_cursor(settings):
    settings.FEED_RETENTION_DAYS = 7
    CertificateFactory()
    CertificateFactory()
    rows = _feed_rows()

    assert prune_history()["feed rows"] == 0
    assert _feed_rows() == rows and not FeedHorizon.objects.exists()
    router = Client(HTTP_AUTHORIZATION=f"Bearer {create_router_token('edge-1')}")
    assert router.get("/routers/v1/changes", {"after": 0}).status_code == 200


def test_a_walk_in_small_batches_prunes_what_one_batch_does(settings):
    settings.HISTORY_RETENTION_DAYS = 90
    domains = [DomainFactory() for _ in range(3)]
    for domain in domains:
        for days in (300, 200, 100):
            _event(domain, days, "old")
        _event(domain, 1, "new")

    assert prune_history(batch=2)["domain events"] == 9
    assert DomainEvent.objects.filter(domain__in=domains).count() == 3


@pytest.mark.django_db(transaction=False)
def test_beat_sends_the_history_prune_hourly_on_the_default_queue():
    task = PeriodicTask.objects.get(name="Prune history")
    assert task.task == "workers.tasks.housekeeping.prune_history"
    assert task.interval.every == 3600 and task.queue == "default"
