"""The events outbox (issue 16, domains/events.py): a change of a domain's status into Action required,
Failing or In use, and a deletion, write one event each, in the transaction of the change, with the
domain's app and name kept as plain values; nothing else does, and a rolled-back change leaves none."""

from __future__ import annotations

import datetime
import uuid

import pytest
from django.db import transaction
from django.utils import timezone

from domains.models import Domain, DomainStatus, Event, EventType
from domains.ownership import ownership_record
from domains.records import dns_records_to_add
from domains.services import create_domain, delete_domain
from domains.status import StatusWrite, bulk_change_status, change_status
from tests.factories import AppFactory, DomainFactory

pytestmark = pytest.mark.django_db

NOW = datetime.datetime(2026, 11, 30, 12, 0, tzinfo=datetime.UTC)
FAILED = "Let's Encrypt could not issue the certificate: the CA is unhappy [serverInternal]"


def _events(domain_id: int | None = None) -> list[Event]:
    rows = Event.objects.order_by("seq")
    return list(rows if domain_id is None else rows.filter(domain_id=domain_id))


def test_a_change_into_failing_writes_one_event_in_the_words_of_last_error():
    domain = DomainFactory(status=DomainStatus.CREATING)

    assert change_status(
        domain.pk,
        DomainStatus.FAILING,
        "certificate order failed: the CA is unhappy",
        now=NOW,
        last_error=FAILED,
    )

    (event,) = _events()
    assert isinstance(event.id, uuid.UUID) and event.seq is not None
    assert (event.type, event.created, event.app_id, event.app_name, event.domain_id, event.domain_name) == (
        EventType.DOMAIN_FAILING,
        NOW,
        domain.app_id,
        domain.app.name,
        domain.pk,
        domain.name,
    )
    assert (event.from_status, event.to_status, event.reason) == ("creating", "failing", FAILED)
    assert event.reason == Domain.objects.get(pk=domain.pk).last_error
    assert (event.records, event.data, event.dedupe_key) == ([], {}, "")


def test_in_use_says_why_in_the_historys_words_and_lists_no_records():
    domain = DomainFactory(status=DomainStatus.CREATING)
    reason = "certificate issued by CN=Pebble Intermediate CA, valid until 2027-02-28"

    change_status(domain.pk, DomainStatus.IN_USE, reason, now=NOW, last_error="")

    (event,) = _events()
    assert (event.type, event.reason, event.records) == (EventType.DOMAIN_IN_USE, reason, [])


def test_action_required_lists_the_records_the_customer_is_shown():
    domain = DomainFactory(status=DomainStatus.PENDING_DNS)
    message = "The CAA records of example.com do not allow letsencrypt.org to issue for it."

    change_status(domain.pk, DomainStatus.ACTION_REQUIRED, message, now=NOW, last_error=message)

    (event,) = _events()
    assert (event.type, event.reason) == (EventType.DOMAIN_ACTION_REQUIRED, message)
    # The records of the admin and the API, then the ownership TXT record while it is unproven.
    expected = [*dns_records_to_add(domain), ownership_record(domain.name, domain.ownership_token)]
    assert event.records == expected
    assert event.records[0] == f"{domain.name}. CNAME {domain.app.default_hostname}."


def test_action_required_of_a_proven_domain_lists_no_ownership_record():
    domain = DomainFactory(status=DomainStatus.PENDING_DNS, ownership_verified_at=NOW)

    change_status(
        domain.pk, DomainStatus.ACTION_REQUIRED, "add a CAA record", now=NOW, last_error="add a CAA record"
    )

    assert _events()[0].records == dns_records_to_add(domain)


@pytest.mark.parametrize(
    ("before", "to"),
    [
        (DomainStatus.FAILING, DomainStatus.FAILING),
        (DomainStatus.ACTION_REQUIRED, DomainStatus.ACTION_REQUIRED),
        (DomainStatus.IN_USE, DomainStatus.IN_USE),
        (DomainStatus.IN_USE, DomainStatus.NOT_USED),
        (DomainStatus.PENDING_DNS, DomainStatus.CREATING),
        (DomainStatus.IN_USE, DomainStatus.DISABLED),
    ],
)
def test_no_event_when_the_status_does_not_change_or_needs_no_one(before, to):
    domain = DomainFactory(status=before)

    assert change_status(domain.pk, to, "whatever happened", now=NOW, last_error="something")

    assert _events() == []


def test_a_refused_change_writes_no_event():
    domain = DomainFactory(status=DomainStatus.IN_USE)

    assert not change_status(
        domain.pk, DomainStatus.FAILING, "order failed", allowed_from=[DomainStatus.CREATING], now=NOW
    )

    assert _events() == []


def test_a_rolled_back_change_leaves_no_event():
    domain = DomainFactory(status=DomainStatus.CREATING)

    with pytest.raises(RuntimeError), transaction.atomic():
        change_status(domain.pk, DomainStatus.FAILING, "order failed", now=NOW, last_error=FAILED)
        assert len(_events()) == 1  # written, inside the change's transaction
        raise RuntimeError("the caller's next step failed")

    assert _events() == []
    assert Domain.objects.get(pk=domain.pk).status == DomainStatus.CREATING


def test_the_bulk_writer_writes_one_event_per_change_into_action_required_and_none_else():
    app = AppFactory()
    token = uuid.uuid4()
    moved = DomainFactory(app=app, status=DomainStatus.PENDING_DNS, claim_token=token)
    stays = DomainFactory(app=app, status=DomainStatus.PENDING_DNS, claim_token=token)
    again = DomainFactory(app=app, status=DomainStatus.ACTION_REQUIRED, claim_token=token)
    creating = DomainFactory(app=app, status=DomainStatus.PENDING_DNS, claim_token=token)
    unclaimed = DomainFactory(app=app, status=DomainStatus.PENDING_DNS, claim_token=uuid.uuid4())
    caa = "The CAA records of example.com do not allow letsencrypt.org to issue. Add example.com. CAA ..."

    bulk_change_status(
        [
            StatusWrite(moved.pk, DomainStatus.ACTION_REQUIRED, caa, caa, 1, None),
            StatusWrite(stays.pk, DomainStatus.PENDING_DNS, "no A record", "no A record", 2, NOW),
            StatusWrite(again.pk, DomainStatus.ACTION_REQUIRED, caa, caa, 1, None),
            StatusWrite(creating.pk, DomainStatus.CREATING, "DNS points at the platform", "", 0, None),
            StatusWrite(unclaimed.pk, DomainStatus.ACTION_REQUIRED, caa, caa, 1, None),
        ],
        holding=token,
        now=NOW,
    )

    (event,) = _events()
    assert (event.type, event.domain_id, event.domain_name, event.app_id, event.app_name) == (
        EventType.DOMAIN_ACTION_REQUIRED,
        moved.pk,
        moved.name,
        app.pk,
        app.name,
    )
    assert (event.from_status, event.to_status, event.reason, event.created) == (
        "pending_dns",
        "action_required",
        caa,
        NOW,
    )
    assert event.records == [*dns_records_to_add(moved), ownership_record(moved.name, moved.ownership_token)]
    assert Domain.objects.get(pk=creating.pk).status == DomainStatus.CREATING


def test_the_bulk_writer_says_why_in_the_words_of_last_error():
    token = uuid.uuid4()
    domain = DomainFactory(status=DomainStatus.CREATING, claim_token=token)

    bulk_change_status(
        [StatusWrite(domain.pk, DomainStatus.FAILING, "history words", "the words of last_error", 1, NOW)],
        holding=token,
        now=NOW,
    )

    (event,) = _events()
    assert (event.type, event.reason) == (EventType.DOMAIN_FAILING, "the words of last_error")


def test_a_wildcard_created_without_a_dns01_zone_is_action_required_with_one_event(settings):
    settings.DNS01_ZONE = ""
    app = AppFactory()

    domain = create_domain(app, "*.example.com", now=NOW)

    (event,) = _events()
    assert domain.status == DomainStatus.ACTION_REQUIRED
    assert (event.type, event.from_status, event.to_status, event.domain_name) == (
        EventType.DOMAIN_ACTION_REQUIRED,
        "",
        "action_required",
        "*.example.com",
    )
    assert event.reason == Domain.objects.get(pk=domain.pk).last_error
    assert event.records == [
        *dns_records_to_add(domain),
        ownership_record(domain.name, domain.ownership_token),
    ]


def test_a_domain_created_pending_dns_writes_no_event():
    create_domain(AppFactory(), "shop.example.com", now=NOW)

    assert _events() == []


def test_a_deleted_domain_leaves_an_event_and_keeps_its_earlier_ones():
    domain = DomainFactory(status=DomainStatus.CREATING)
    app = domain.app
    change_status(domain.pk, DomainStatus.FAILING, "order failed", now=NOW, last_error=FAILED)

    delete_domain(domain, now=NOW + datetime.timedelta(minutes=1))

    assert not Domain.objects.filter(pk=domain.pk).exists()
    failing, deleted = _events(domain.pk)
    assert failing.type == EventType.DOMAIN_FAILING
    assert (deleted.type, deleted.domain_name, deleted.app_id, deleted.app_name) == (
        EventType.DOMAIN_DELETED,
        domain.name,
        app.pk,
        app.name,
    )
    assert (deleted.from_status, deleted.to_status) == ("failing", "")
    assert deleted.seq > failing.seq


def test_a_domains_events_are_in_seq_order_of_their_changes():
    domain = DomainFactory(status=DomainStatus.CREATING)
    later = timezone.now()

    change_status(domain.pk, DomainStatus.FAILING, "order failed", now=NOW, last_error=FAILED)
    change_status(domain.pk, DomainStatus.IN_USE, "certificate issued", now=later, last_error="")
    change_status(domain.pk, DomainStatus.FAILING, "expired", now=later, last_error="expired")

    assert [(e.type, e.to_status) for e in _events(domain.pk)] == [
        (EventType.DOMAIN_FAILING, "failing"),
        (EventType.DOMAIN_IN_USE, "in_use"),
        (EventType.DOMAIN_FAILING, "failing"),
    ]
