"""A revoked certificate is served by no reader of the serving rule (the API, the routers' SNI
lookup, the routers' change feed), and its revocation is a change of its name in the feed: after
revoke and replace, the new certificate is served even when it ends before the revoked one (a
shorter profile, or Let's Encrypt's shorter classic lifetimes from 2027)."""

from __future__ import annotations

import datetime

import pytest
from django.utils import timezone

from certificates.feed import changes_after
from certificates.models import ServedChange
from certificates.revocation import record_revoked
from certificates.serving import served_certificate, served_certificate_of
from tests.factories import CertificateFactory, DomainFactory

pytestmark = pytest.mark.django_db(transaction=True)

DAY = datetime.timedelta(days=1)
NAME = "www.example.com"


def _last() -> int:
    return ServedChange.objects.order_by("-seq").values_list("seq", flat=True).first() or 0


def test_after_revoke_and_replace_the_shorter_lived_new_certificate_is_served_everywhere():
    now = timezone.now()
    domain = DomainFactory(name=NAME)
    # A 90-day classic certificate, replaced on day 10 by a 160-hour shortlived one.
    old = CertificateFactory(domain=domain, not_before=now - 10 * DAY, not_after=now + 80 * DAY)
    new = CertificateFactory(domain=domain, not_before=now - DAY / 24, not_after=now + 6 * DAY)
    before = _last()

    assert record_revoked(old.pk, "keyCompromise", now)

    assert served_certificate_of(domain.pk).pk == new.pk
    assert served_certificate(NAME).pk == new.pk
    # The routers learn of it: the revocation is a change of the name, whose candidates are the
    # new certificate alone.
    changed = changes_after(before)
    assert [(change.name, [c.pk for c in change.candidates]) for change in changed.names] == [
        (NAME, [new.pk])
    ]


def test_a_second_report_of_the_same_revocation_changes_nothing_served():
    old = CertificateFactory(domain=DomainFactory(name=NAME))
    assert record_revoked(old.pk, "keyCompromise", timezone.now())
    before = _last()

    assert not record_revoked(old.pk, "keyCompromise", timezone.now())

    assert _last() == before
