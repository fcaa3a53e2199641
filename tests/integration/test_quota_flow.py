"""Let's Encrypt's limits in the real flow: a real beat sweeping every second, a real worker,
Pebble, and the quota Redis, which these tests stop and restart, and a proxy that answers newOrder
with Let's Encrypt's 429s."""

from __future__ import annotations

import datetime
import itertools
import os
import time
import uuid

import pytest
from django.utils import timezone

from certificates.models import Order, QuotaKind, QuotaOverride
from devstack.acme_proxy import AcmeProxy
from devstack.processes import ManagedProcess, tcp_open
from domains import quota_policy
from domains.models import Domain, DomainStatus
from domains.services import create_domain
from tests.conftest import start_celery_worker
from tests.factories import CertificateFactory, DomainFactory
from tests.integration.beat import restore_schedule, start_beat
from tests.integration.pointing import point_at_platform
from tests.integration.polling import wait_for
from workers import domain_checks

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

SWEEP_EVERY = 1.0
# What one sweep needs after its tick, besides the interval: the task's trip through the broker,
# the DNS check and the spend (measured well under this here).
SWEEP_SLACK = 1.5
QUOTA_PORT = int(os.environ["CERTWRIGHT_TEST_QUOTA_PORT"])


def _registered_domain() -> str:
    return f"quota-{uuid.uuid4().hex[:10]}.com"


def _limit(registered_domain: str, capacity: int, period_seconds: int) -> None:
    QuotaOverride.objects.create(
        kind=QuotaKind.REGISTERED_DOMAIN,
        subject=registered_domain,
        capacity=capacity,
        period_seconds=period_seconds,
        reason="test",
    )


def _start_beat_sweeping_every_second() -> ManagedProcess:
    restore_schedule({"workers.tasks.dns.sweep_due_domains": SWEEP_EVERY})
    return start_beat("beat-quota")


def _pointed(pebble_stack, names: list[str], app) -> None:
    for name in names:
        point_at_platform(pebble_stack.challtestsrv, app, name)


def test_six_domains_under_a_limit_of_three_get_three_now_and_each_other_one_when_its_token_arrives(
    issuance_stack, app
):
    registered = _registered_domain()
    _limit(registered, capacity=3, period_seconds=12)  # one token every 4 s
    names = [f"site{i}.{registered}" for i in range(6)]
    _pointed(issuance_stack, names, app)
    beat = _start_beat_sweeping_every_second()
    try:
        domains = [create_domain(app, name) for name in names]
        ids = [d.pk for d in domains]
        booked: dict[int, datetime.datetime] = {}
        messages: dict[int, str] = {}
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            rows = list(
                Domain.objects.filter(pk__in=ids).values_list("pk", "status", "next_attempt_at", "last_error")
            )
            for pk, status, next_at, error in rows:
                if status == DomainStatus.CREATING and next_at and "certificate limit" in error:
                    booked.setdefault(pk, next_at)
                    messages.setdefault(pk, error)
            if all(status == DomainStatus.IN_USE for _, status, _, _ in rows):
                break
            time.sleep(0.05)
    finally:
        beat.stop()
    statuses = dict(Domain.objects.filter(pk__in=ids).values_list("pk", "status"))
    assert set(statuses.values()) == {DomainStatus.IN_USE}, (statuses, beat.log_tail())
    assert len(booked) == 3, booked
    for message in messages.values():
        assert f"certificate limit for {registered} reached; next attempt at" in message
        assert "at most 3 certificates per registered domain per 12 seconds" in message
    orders = {
        order.domain_id: order.created
        for order in Order.objects.filter(domain_id__in=ids, state="valid").order_by("created")
    }
    assert len(orders) == 6
    immediate = sorted(orders[pk] for pk in ids if pk not in booked)
    waiters = sorted(booked, key=booked.get)
    token_times = [booked[pk] for pk in waiters]
    # The k-th waiter was booked at the k-th next token: one interval (4 s) apart.
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(token_times)]
    assert all(3.9 <= gap <= 4.1 for gap in gaps), gaps
    # The first waiter's token is one interval after the first grant. An order's `created` is the
    # time its check began, before the DNS pre-flight and the grant: on a loaded machine that is
    # earlier, so the upper bound allows the sweep's lateness the waiters are allowed below.
    assert 3.5 <= (token_times[0] - immediate[0]).total_seconds() <= 4 + SWEEP_EVERY + SWEEP_SLACK
    lateness = [round((orders[pk] - booked[pk]).total_seconds(), 3) for pk in waiters]
    print(f"waiters ordered this long after their tokens arrived (s): {lateness}")
    for pk in waiters:
        late = (orders[pk] - booked[pk]).total_seconds()
        # Never before its token; within one sweep interval after it.
        assert 0 <= late <= SWEEP_EVERY + SWEEP_SLACK, (pk, late)


def test_with_the_quota_redis_down_nothing_is_ordered_and_issuance_resumes_from_postgresql(
    pebble_stack, web_server, without_session_worker, redis_servers, app
):
    registered = _registered_domain()
    _limit(registered, capacity=3, period_seconds=3600)
    first = [f"early{i}.{registered}" for i in range(2)]
    later = [f"late{i}.{registered}" for i in range(3)]
    _pointed(pebble_stack, first + later, app)
    worker = start_celery_worker("worker-quota-down", extra_env={"QUOTA_UNAVAILABLE_RETRY_SECONDS": "1"})
    beat = _start_beat_sweeping_every_second()
    quota_server = redis_servers["quota"]
    try:
        early = [create_domain(app, name) for name in first]
        wait_for(
            lambda: (
                Domain.objects.filter(pk__in=[d.pk for d in early], status=DomainStatus.IN_USE).count() == 2
            ),
            what="the first two certificates",
        )
        quota_server.stop()
        waiting = [create_domain(app, name) for name in later]
        ids = [d.pk for d in waiting]
        wait_for(
            lambda: (
                Domain.objects.filter(pk__in=ids, last_error__contains="could not be checked").count() == 3
            ),
            what="the three new domains to wait for the quota store",
        )
        time.sleep(3)  # three more sweeps with the store still down
        assert not Order.objects.filter(domain_id__in=ids).exists()
        assert set(Domain.objects.filter(pk__in=ids).values_list("status", "consecutive_failures")) == {
            (DomainStatus.CREATING, 0)
        }
        quota_server.start()
        quota_server.wait_until(lambda: tcp_open("127.0.0.1", QUOTA_PORT), what="listening again")

        def settled():
            rows = dict(Domain.objects.filter(pk__in=ids).values_list("pk", "status"))
            limited = Domain.objects.filter(
                pk__in=ids, last_error__contains=f"certificate limit for {registered}"
            )
            return list(rows.values()).count(DomainStatus.IN_USE) == 1 and limited.count() == 2

        # Rebuilt from the two certificates in PostgreSQL: one token left of three, not a full bucket.
        wait_for(settled, timeout=45, what="one more certificate and two domains waiting for tokens")
        time.sleep(2)
        assert Order.objects.filter(domain_id__in=ids).count() == 1
    finally:
        beat.stop()
        worker.stop()
        if not tcp_open("127.0.0.1", QUOTA_PORT):
            quota_server.start()


@pytest.mark.parametrize(
    ("detail", "syncs_registered_domain"),
    [
        (
            'too many certificates (50) already issued for "{registered}" in the last 168h0m0s, retry after '
            "{retry}: see https://letsencrypt.org/docs/rate-limits/#new-certificates-per-registered-domain",
            True,
        ),
        (
            "too many new orders (300) from this account in the last 3h0m0s, retry after {retry}: see "
            "https://letsencrypt.org/docs/rate-limits/#new-orders-per-account",
            False,
        ),
    ],
    ids=["certificates-per-registered-domain", "new-orders-per-account"],
)
def test_a_429_from_the_ca_schedules_the_domain_by_retry_after_and_only_the_certificate_limit_syncs(
    pebble_stack, web_server, without_session_worker, app, detail, syncs_registered_domain
):
    registered = _registered_domain()
    name = f"www.{registered}"
    _pointed(pebble_stack, [name], app)
    with AcmeProxy.in_front_of(pebble_stack) as proxy:
        worker = start_celery_worker("worker-429", extra_env={"ACME_DIRECTORY_URL": proxy.directory_url})
        try:
            retry_at = timezone.now() + datetime.timedelta(seconds=4)
            proxy.refuse_new_orders(
                detail.format(registered=registered, retry=retry_at.strftime("%Y-%m-%d %H:%M:%S UTC")),
                retry_after="4",
            )
            domain = create_domain(app, name)
            wait_for(
                lambda: "rate limit" in Domain.objects.get(pk=domain.pk).last_error,
                what="the 429 to be recorded",
                describe=lambda: Domain.objects.get(pk=domain.pk).last_error,
            )
            domain.refresh_from_db()
            assert domain.status == DomainStatus.CREATING
            assert domain.waiting_on == "quota"
            assert domain.consecutive_failures == 0, "a rate limit is not a failure"
            assert abs((domain.next_attempt_at - retry_at).total_seconds()) < 1.5
            order = Order.objects.get(domain=domain)
            assert order.state == "invalid" and "rate limited by the CA" in order.problem
            bucket = quota_policy.registered_domain_bucket(registered)
            # The refund and the sync follow the order's commit (Redis is not in the transaction).
            expected = 0 if syncs_registered_domain else 50
            wait_for(
                lambda: quota_policy.get_quota().peek(bucket).tokens_left == expected,
                timeout=5,
                what=f"{expected} tokens left in {registered}'s bucket",
                describe=lambda: quota_policy.get_quota().peek(bucket),
            )
            level = quota_policy.get_quota().peek(bucket)
            if syncs_registered_domain:
                # The CA counted certificates we did not issue: ours is empty until its retry time.
                assert 1.5 < level.next_token_in_us / 1e6 <= 4.5
            # Otherwise untouched, and the order's own token refunded (50 left).
            assert proxy.new_orders_refused == 1
            # After Retry-After, the sweep orders again, and the CA (through the proxy) issues.
            wait_for(
                lambda: (
                    domain_checks.sweep() is not None
                    and Domain.objects.get(pk=domain.pk).status == DomainStatus.IN_USE
                ),
                timeout=45,
                interval=0.5,
                what="the certificate after the retry time",
            )
            second = Order.objects.filter(domain=domain, state="valid").get()
            assert second.created >= domain.next_attempt_at
            assert proxy.new_orders_passed == 1
        finally:
            worker.stop()


def test_a_renewal_of_the_same_name_is_not_held_back_by_an_exhausted_registered_domain(
    pebble_stack, without_session_worker, app
):
    registered = _registered_domain()
    _limit(registered, capacity=1, period_seconds=3600)
    renewing, new = f"renew.{registered}", f"new.{registered}"
    _pointed(pebble_stack, [renewing, new], app)
    holder = DomainFactory(
        app=app, name=renewing, status=DomainStatus.FAILING, next_attempt_at=timezone.now()
    )
    CertificateFactory(domain=holder, sans=[renewing])
    newcomer = DomainFactory(
        app=app, name=new, status=DomainStatus.PENDING_DNS, next_attempt_at=timezone.now()
    )
    # The registered domain's only token is taken by someone else.
    bucket = quota_policy.registered_domain_bucket(registered)
    assert quota_policy.get_quota().spend("elsewhere", [bucket]).granted
    ids, token = domain_checks.claim_due()
    assert sorted(ids) == sorted([holder.pk, newcomer.pk])
    counts = domain_checks.check_claimed(ids, str(token))
    assert (counts["ordered"], counts["waiting"]) == (1, 1)
    order = Order.objects.get(domain=holder)
    assert order.is_renewal and order.quota_reservation is not None
    newcomer.refresh_from_db()
    assert newcomer.status == DomainStatus.CREATING
    assert newcomer.waiting_on == "quota"
    assert f"certificate limit for {registered} reached" in newcomer.last_error
