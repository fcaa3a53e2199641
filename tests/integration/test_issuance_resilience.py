"""Issuance survives what Let's Encrypt and real machines do: slow validation, rejected nonces,
no authorization reuse, and workers killed with SIGKILL mid-order."""

from __future__ import annotations

import pytest
from django.utils import timezone

from certificates.acme_client import client_for, get_account, place_order
from certificates.keys import generate_private_key_pem, make_csr_pem
from certificates.models import Certificate, Order, OrderState
from domains.models import Domain, DomainStatus
from domains.services import create_domain
from tests.conftest import RUN_DIR, start_celery_worker
from tests.integration.pointing import point_at_platform
from tests.integration.polling import status_of, unique_name, wait_for
from workers import order_run

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.mark.parametrize(
    "pebble_env",
    [
        pytest.param({"PEBBLE_VA_NOSLEEP": "0", "PEBBLE_VA_SLEEPTIME": "5"}, id="random-validation-sleeps"),
        pytest.param({"PEBBLE_WFE_NONCEREJECT": "30"}, id="30-percent-bad-nonces"),
        pytest.param({"PEBBLE_AUTHZREUSE": "0"}, id="no-authorization-reuse"),
    ],
)
def test_issuance_reaches_in_use_under_pebble_variant(
    pebble_variant, web_server, celery_worker, app, pebble_env
):
    stack = pebble_variant(pebble_env)
    name = unique_name()
    point_at_platform(stack.challtestsrv, app, name)
    domain = create_domain(app, name)
    wait_for(lambda: status_of(domain) == DomainStatus.IN_USE, timeout=90, what="in_use")
    assert Certificate.objects.filter(domain=domain).count() == 1


def _pebble_log_since(offset: int) -> str:
    with (RUN_DIR / "pebble" / "logs" / "pebble.log").open("rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")


def _pebble_log_size() -> int:
    return (RUN_DIR / "pebble" / "logs" / "pebble.log").stat().st_size


def _fill_first_page_of_orders() -> None:
    """Three pending orders of the platform's account placed first: Pebble lists an account's orders
    three to a page, so the lost order is found only by following the list's next pages."""
    acme = client_for(get_account())
    for _ in range(3):
        name = unique_name()
        place_order(acme, make_csr_pem(generate_private_key_pem("ec256"), [name]))


@pytest.mark.parametrize(
    "failpoint", ["before_order_committed", "after_order_committed", "while_polling", "after_finalize"]
)
def test_worker_killed_mid_order_is_continued_by_the_redrive_alone(
    without_session_worker, pebble_stack, web_server, app, failpoint
):
    name = unique_name()
    point_at_platform(pebble_stack.challtestsrv, app, name)
    if failpoint == "before_order_committed":
        _fill_first_page_of_orders()
    log_offset = _pebble_log_size()
    doomed = start_celery_worker(f"worker-crash-{failpoint}", extra_env={"CERTWRIGHT_FAILPOINTS": failpoint})
    domain = create_domain(app, name)
    doomed.popen.wait(timeout=60)
    assert doomed.popen.returncode == -9, "the worker was not killed at the failpoint"
    order = Order.objects.get(domain=domain)
    assert order.state in (OrderState.PENDING, OrderState.VALIDATING, OrderState.FINALIZING)
    assert status_of(domain) == DomainStatus.CREATING

    # A fresh worker, with default broker settings: nothing redelivers the lost task but the re-drive.
    survivor = start_celery_worker(f"worker-after-{failpoint}")
    try:

        def redrive_once_the_lease_expires():
            order_run.redrive_expired()
            return status_of(domain) == DomainStatus.IN_USE

        wait_for(redrive_once_the_lease_expires, timeout=60, interval=0.5, what="in_use after the re-drive")
    finally:
        survivor.stop()
    assert Certificate.objects.filter(domain=domain).count() == 1
    assert Order.objects.filter(domain=domain).count() == 1
    pebble_log = _pebble_log_since(log_offset)
    assert pebble_log.count("Issued certificate serial") == 1
    # Killed after the CA took the order but before its URL was committed: the re-drive continues
    # that order rather than placing a second one.
    assert pebble_log.count("Added order") == 1
    assert Order.objects.get(domain=domain).state == OrderState.VALID
    assert Domain.objects.get(pk=domain.pk).last_checked_at <= timezone.now()
