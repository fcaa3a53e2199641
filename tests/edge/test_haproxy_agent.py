"""The real agent (`certwright-edge run --driver haproxy`) following a feed into a real HAProxy, every change
seen in a verifying TLS handshake, with no reload (HAProxy's pid never changes)."""

from __future__ import annotations

import datetime
import time

import pytest

from tests.edge.conftest import wait_for
from tests.edge.feed_stub import candidate
from tests.edge.haproxy_process import presented


@pytest.fixture
def root(pki, tmp_path):
    return pki.write_root(tmp_path / "root.pem")


def test_the_agent_drives_haproxy_through_the_feed_without_reload(feed, start_agent, pki, haproxy, root):
    process, port, options = haproxy
    www = candidate(pki, "www.example.com")
    wildcard = candidate(pki, "*.apps.example.com")
    feed.publish("www.example.com", [www])
    feed.publish("*.apps.example.com", [wildcard])
    agent = start_agent(feed, *options)
    agent.wait_for_log("the router serves 2 names")
    assert presented(port, "www.example.com", root) == www["fingerprint"]
    assert presented(port, "my-app.apps.example.com", root) == wildcard["fingerprint"]

    custom = candidate(pki, "www.example.com", source="custom")
    feed.publish("www.example.com", [custom, www])
    wait_for(
        lambda: presented(port, "www.example.com", root) == custom["fingerprint"], what="the upload served"
    )
    feed.publish("shop.example.com", [candidate(pki, "shop.example.com")])
    wait_for(lambda: presented(port, "shop.example.com", root), what="a new name served")
    feed.publish("www.example.com", [])
    wait_for(lambda: presented(port, "www.example.com", root) is None, what="the removal refused")

    # Restarted, the agent finds HAProxy in sync and uploads nothing again.
    agent.stop()
    agent = start_agent(feed, *options)
    agent.wait_for_log("HAProxy serves 2 names: 0 uploaded, 2 already in sync, 0 removed, 0 refused")
    assert presented(port, "shop.example.com", root)
    assert process.alive()
    assert "reload" not in process.log_since_start().lower()


def test_a_custom_certificate_expiring_at_t_gives_way_to_lets_encrypt_at_t_by_the_agents_timer(
    feed, start_agent, pki, haproxy, root
):
    _, port, options = haproxy
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    expiry = now + datetime.timedelta(seconds=5)
    custom = candidate(pki, "www.example.com", source="custom", not_after=expiry)
    letsencrypt = candidate(pki, "www.example.com")
    feed.publish("www.example.com", [custom, letsencrypt])
    agent = start_agent(feed, *options)
    agent.wait_for_log("the router serves 1 names")

    time.sleep(max(0.0, (expiry - datetime.timedelta(seconds=1)).timestamp() - time.time()))
    assert presented(port, "www.example.com", root) == custom["fingerprint"]
    time.sleep(max(0.0, (expiry + datetime.timedelta(seconds=2)).timestamp() - time.time()))
    assert presented(port, "www.example.com", root) == letsencrypt["fingerprint"]
    agent.wait_for_log("switched www.example.com to")
    line = next(line for line in agent.log_since_start().splitlines() if "switched www.example.com" in line)
    applied = datetime.datetime.fromisoformat(line.split(" at ")[1].split(" (due")[0])
    assert abs((applied - expiry).total_seconds()) < 1, line
