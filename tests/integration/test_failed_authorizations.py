"""Let's Encrypt's failed-authorization limit in the real flow: Pebble fails HTTP-01 for real (the
name points at an ingress address where nothing answers), a real worker runs the orders, and the
quota Redis counts the failures."""

from __future__ import annotations

import datetime
import re
import uuid

import pytest
from django.utils import timezone

from certificates.models import Challenge, Order, OrderState
from domains.models import Domain, DomainStatus, Region
from domains.quota_policy import failed_authz_bucket, get_quota, when
from domains.services import create_domain, retry_now
from tests.conftest import RUN_DIR
from tests.integration.pointing import point_at_platform
from tests.integration.polling import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

PEBBLE_LOG = RUN_DIR / "pebble" / "logs" / "pebble.log"


def _validations_of(name: str, offset: int) -> int:
    """The challenges of `name` Pebble validated after `offset` in its log (one per order it got;
    Pebble logs several attempts of each, with the challenge's token in the URL)."""
    with PEBBLE_LOG.open("rb") as log:
        log.seek(offset)
        text = log.read().decode(errors="replace")
    return len(set(re.findall(rf"Attempting to validate w/ HTTP: http://{re.escape(name)}:\d+/\S+", text)))


def _describe(domain: Domain) -> str:
    row = Domain.objects.filter(pk=domain.pk).values("status", "next_attempt_at", "last_error").first()
    orders = list(Order.objects.filter(domain=domain).values_list("state", "problem"))
    return f"{row}; orders {orders}"


def test_the_sixth_order_of_a_name_failing_validation_within_an_hour_is_not_sent_and_waits_for_its_token(
    issuance_stack, challtestsrv, app
):
    name = f"www.failing-{uuid.uuid4().hex[:10]}.com"
    # The pre-flight accepts 127.0.0.2 (an ingress address), but nothing answers HTTP-01 there.
    Region.objects.filter(pk=app.region_id).update(ingress_ipv4=["127.0.0.1", "127.0.0.2"])
    point_at_platform(challtestsrv, app, name, addresses=("127.0.0.2",))
    offset = PEBBLE_LOG.stat().st_size

    domain = create_domain(app, name)
    for attempt in range(1, 6):
        if attempt > 1:
            # What "retry now" does (a customer's, or the backoff running out): check and order again.
            assert retry_now(Domain.objects.get(pk=domain.pk)) == f"{name}: checking now"
        wait_for(
            lambda n=attempt: (
                Order.objects.filter(domain=domain, state=OrderState.INVALID).count() == n
                and Domain.objects.filter(pk=domain.pk, status=DomainStatus.FAILING).exists()
            ),
            timeout=60,
            what=f"failed order {attempt}",
            describe=lambda: _describe(domain),
        )
    assert Challenge.objects.filter(order__domain=domain, authorization_status="invalid").count() == 5
    assert _validations_of(name, offset) == 5
    account_id = Order.objects.filter(domain=domain).values_list("account_id", flat=True).first()
    assert get_quota().peek(failed_authz_bucket(name, account_id)).tokens_left == 0

    # The sixth: checked, but no order is placed; it waits for the next token (12 minutes after the
    # first failure at most), saying so.
    checked_after = timezone.now()
    assert retry_now(Domain.objects.get(pk=domain.pk)) == f"{name}: checking now"
    waiting = wait_for(
        lambda: Domain.objects.filter(
            pk=domain.pk, status=DomainStatus.CREATING, last_checked_at__gte=checked_after
        ).first(),
        timeout=30,
        what="the sixth check to wait for its token",
        describe=lambda: _describe(domain),
    )
    assert waiting.last_error == (
        f"5 failed validations of {name} in the last hour: Let's Encrypt allows 5; "
        f"next attempt at {when(waiting.next_attempt_at)}"
    )
    first_failure = (
        Order.objects.filter(domain=domain).order_by("finished").values_list("finished", flat=True)[0]
    )
    assert (
        checked_after < waiting.next_attempt_at <= first_failure + datetime.timedelta(minutes=12, seconds=1)
    )
    assert Order.objects.filter(domain=domain).count() == 5
    assert not Order.objects.filter(domain=domain, state__in=[OrderState.PENDING]).exists()
    assert _validations_of(name, offset) == 5
