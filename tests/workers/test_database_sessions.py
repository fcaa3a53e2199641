"""A worker gets over a PostgreSQL restart by itself: once its sessions are cut (as a restart, a
failover or a proxy's restart cuts them), its next tasks open fresh ones instead of failing for
good, and a check that could not reach PostgreSQL is sent again within seconds, not after its lease."""

from __future__ import annotations

import time

import pytest
from django.utils import timezone

from certificates.acme_client import get_account
from certificates.directory import forget_directories
from certificates.models import Order
from config.celery import app as celery_app
from devstack.acme_account_keys import from_database
from devstack.acme_proxy import AcmeProxy
from domains.models import Domain, DomainStatus
from domains.services import create_domain
from tests.conftest import start_celery_worker
from tests.integration.pointing import point_at_platform
from tests.integration.polling import status_of, unique_name, wait_for
from tests.tcp_relay import database_relay
from workers.models import Heartbeat

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

HEARTBEAT = "workers.tasks.housekeeping.heartbeat"


def _send_heartbeats_until_stamped(since, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        celery_app.send_task(HEARTBEAT)
        time.sleep(0.5)
        if Heartbeat.objects.filter(source=Heartbeat.Source.WORKER, at__gt=since).exists():
            return True
    return False


def test_worker_tasks_succeed_again_after_its_database_sessions_are_cut(without_session_worker):
    relay, url = database_relay()
    worker = start_celery_worker("worker-sessions-cut", concurrency=1, extra_env={"DATABASE_URL": url})
    try:
        assert _send_heartbeats_until_stamped(timezone.now(), timeout=30), "the worker never ran a task"
        assert relay.cut() >= 1
        cut = timezone.now()
        # The first task to use the cut session outside a transaction (an order step's claim is a
        # single UPDATE) fails and leaves it broken; without dropping it, every later task fails
        # with "the connection is lost" until the process has run CELERY_DB_REUSE_MAX * 2 of them.
        celery_app.send_task("workers.tasks.acme.advance_order", args=[0, None])
        assert _send_heartbeats_until_stamped(cut, timeout=20), worker.log_tail(20)
    finally:
        worker.stop()
        relay.close()


def test_a_domain_check_that_could_not_reach_the_database_is_sent_again_within_seconds(
    without_session_worker, app
):
    relay, url = database_relay()
    relay.refusing = True
    # Created with its first check claimed (a 5-minute lease) and sent; no worker has it yet.
    domain = create_domain(app, unique_name())
    worker = start_celery_worker("worker-database-down", concurrency=1, extra_env={"DATABASE_URL": url})
    try:
        wait_for(
            lambda: "check_domains" in worker.log_since_start() and "Retry in" in worker.log_since_start(),
            timeout=30,
            what="the check to fail on the database and be retried",
            describe=worker.log_tail,
        )
        relay.refusing = False
        # Checked (its claim released) long before the lease would have let the sweep try again.
        wait_for(
            lambda: Domain.objects.filter(pk=domain.pk, claim_token__isnull=True).exists(),
            timeout=45,
            what="the check to run once PostgreSQL is back",
            describe=lambda: worker.log_tail(10),
        )
    finally:
        worker.stop()
        relay.close()


def test_an_order_step_that_lost_the_database_is_taken_over_by_its_retry_not_left_to_its_lease(
    pebble_stack, web_server, without_session_worker, app, settings
):
    relay, url = database_relay()
    forget_directories()
    with AcmeProxy.in_front_of(pebble_stack, account_key=from_database) as proxy:
        settings.ACME_DIRECTORY_URL = proxy.directory_url
        get_account(proxy.directory_url)  # registered now: the check itself needs no CA
        worker = start_celery_worker(
            "worker-order-database-lost",
            extra_env={"ACME_DIRECTORY_URL": proxy.directory_url, "DATABASE_URL": url},
        )
        try:
            name = unique_name()
            point_at_platform(pebble_stack.challtestsrv, app, name)
            # The order's first step waits on a CA that does not answer, holding the order's lease;
            # PostgreSQL goes away meanwhile, so the step cannot record the CA's 504 when it comes.
            proxy.outage.start("hang", seconds=4)
            domain = create_domain(app, name)
            wait_for(lambda: Order.objects.filter(domain=domain).exists(), timeout=20, what="an order")
            relay.refusing = True
            relay.cut()
            time.sleep(6)
            relay.refusing = False
            # Without taking the lease over, the order would wait ACME_ORDER_LEASE_SECONDS (120 s)
            # and a re-drive by beat (not running here).
            wait_for(
                lambda: status_of(domain) == DomainStatus.IN_USE,
                timeout=60,
                what=f"{name} in use",
                describe=lambda: worker.log_tail(15),
            )
        finally:
            worker.stop()
            relay.close()
            forget_directories()
