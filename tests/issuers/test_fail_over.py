"""workers/order_run.fail_over on the database: the order ends without a failure counted, the domain
avoids the issuer and is checked again at once; failed again by an issuer it already avoided (every
issuer it may use failed it lately), it is paced to once a minute instead of ordering in a loop."""

from __future__ import annotations

import datetime
import uuid

import pytest
from django.utils import timezone

from certificates.models import Order, OrderState
from config.issuers import IssuerSetting
from domains.models import Domain, DomainStatus
from tests.callbacks import task_sends
from tests.factories import AcmeAccountFactory, DomainFactory, OrderFactory
from workers.order_run import fail_over

pytestmark = pytest.mark.django_db

PRIMARY = IssuerSetting("primary", "https://primary.test/dir", ("letsencrypt.org",))
SECOND = IssuerSetting("second", "https://second.test/dir", ("pki.goog",), limits="none")


@pytest.fixture(autouse=True)
def two_issuers(settings):
    settings.ACME_ISSUERS = [PRIMARY, SECOND]


def _held_order(**domain_fields) -> tuple[Order, uuid.UUID]:
    domain = DomainFactory(status=DomainStatus.CREATING, **domain_fields)
    held = uuid.uuid4()
    order = OrderFactory(
        domain=domain,
        account=AcmeAccountFactory(directory_url=PRIMARY.directory_url),
        lease_token=held,
        lease_until=timezone.now() + datetime.timedelta(minutes=2),
    )
    return order, held


def test_a_first_failure_avoids_the_issuer_and_checks_the_domain_again_at_once(
    django_capture_on_commit_callbacks,
):
    order, held = _held_order()

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert fail_over(order, held, "could not reach the CA: ConnectionError").startswith("failed over")

    order.refresh_from_db()
    assert order.state == OrderState.INVALID and "next certificate authority" in order.problem
    domain = Domain.objects.get(pk=order.domain_id)
    assert domain.avoid_issuers == ["primary"] and domain.consecutive_failures == 0
    assert domain.claim_token is not None, "its check was claimed"
    assert len(task_sends(callbacks)) == 1


def test_failed_again_by_an_issuer_it_already_avoids_the_domain_waits_a_minute(
    django_capture_on_commit_callbacks,
):
    order, held = _held_order(
        avoid_issuers=["second", "primary"], avoid_issuers_until=timezone.now() + datetime.timedelta(hours=1)
    )

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        fail_over(order, held, "could not reach the CA: ConnectionError")

    domain = Domain.objects.get(pk=order.domain_id)
    assert domain.avoid_issuers == ["second", "primary"]
    assert 55 <= (domain.next_attempt_at - timezone.now()).total_seconds() <= 60
    assert task_sends(callbacks) == []
