"""An issuance stack whose CA is the test ACME proxy (devstack/acme_proxy.py) in front of the session's
Pebble: ARI, profiles, `replaces` checks, pauses and 429s, which Pebble 2.4 lacks.

Use it by naming the fixture (registered in tests/conftest.py through `pytest_plugins`)::

    pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

    def test_a_moved_window_renews_with_replaces(proxied_issuance, app):
        proxy = proxied_issuance.proxy
        domain = create_domain(app, name)           # issued through the proxy by the stack's worker
        ...
        proxy.move_all_windows(past, past + hour)   # or set_window(cert.ari_cert_id, ...)
        ...
        assert all(order["replaces"] for order in proxy.orders[1:])

The test must be transactional (`django_db(transaction=True)`): the worker is another process, and
the proxy reads the account's key from the database when an order names a profile
(devstack/acme_account_keys.py). What it gives:
- `proxied_issuance.proxy`: the AcmeProxy (its `directory_url` is ACME_DIRECTORY_URL in the test
  process, through pytest-django's `settings`, and in the worker's environment);
- `proxied_issuance.worker`: a Celery worker of its own on every queue (the session worker is
  stopped for the test, by `without_session_worker`), stopped afterwards;
- `proxied_issuance.pebble`: the session's PebbleStack (its challtestsrv for DNS records);
- the web responder (`web_server`), where Pebble validates HTTP-01.
Pebble's own validity (`certificateValidityPeriod`, devstack/pebble.py) is 90 days, `classic`'s;
orders naming a profile get the profile's lifetime from the proxy.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from certificates.directory import forget_directories
from devstack.acme_account_keys import from_database
from devstack.acme_proxy import AcmeProxy
from devstack.pebble import PebbleStack
from devstack.processes import ManagedProcess
from tests.conftest import start_celery_worker


@dataclass
class ProxiedIssuance:
    proxy: AcmeProxy
    worker: ManagedProcess
    pebble: PebbleStack


@pytest.fixture
def proxied_issuance(pebble_stack, web_server, without_session_worker, settings):
    """Pebble behind a fresh proxy, a worker whose ACME_DIRECTORY_URL is the proxy, and the test
    process pointed at it too (see the module's docstring). Each proxy is a new CA: the test
    process's cached directories (profiles, renewalInfo) are forgotten before and after."""
    forget_directories()
    with AcmeProxy.in_front_of(pebble_stack, account_key=from_database) as proxy:
        settings.ACME_DIRECTORY_URL = proxy.directory_url
        worker = start_celery_worker("worker-proxied", extra_env={"ACME_DIRECTORY_URL": proxy.directory_url})
        try:
            yield ProxiedIssuance(proxy=proxy, worker=worker, pebble=pebble_stack)
        finally:
            worker.stop()
            forget_directories()
