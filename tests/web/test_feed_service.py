"""The routers' long-poll and snapshot as routers meet them: over HTTP, from the feed service
(gunicorn's ASGI worker, devstack/commands.py feed_command) on the test database. A change wakes the
waiting routers through PostgreSQL's NOTIFY; a revoked token's wait is cut; a hundred waiting routers
hold no database connection each; the snapshot streams as JSON lines."""

from __future__ import annotations

import json
import threading
import time

import pytest
import requests
from django.db import connection
from django.test import Client

from api.models import ApiToken
from api.routers import create_router_token
from api.tokens import revoke_token
from certificates.feed import feed_end
from certificates.models import Certificate
from tests.factories import CertificateFactory, DomainFactory, RegionFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]


def _poll(feed_server, token: str, after: int, wait: float, out: dict) -> None:
    started = time.monotonic()
    answer = requests.get(
        f"{feed_server.url}/routers/v1/changes",
        params={"after": after, "wait": wait},
        headers={"Authorization": f"Bearer {token}"},
        timeout=wait + 30,
    )
    out["status"], out["body"], out["at"] = answer.status_code, answer.content, time.monotonic()
    out["took"] = out["at"] - started


def test_a_waiting_router_is_answered_as_soon_as_a_change_commits(feed_server):
    token = create_router_token("edge-wait")
    domain = DomainFactory(name="wait.example.com")
    after = feed_end()
    out: dict = {}
    poller = threading.Thread(target=_poll, args=(feed_server, token, after, 30, out))
    poller.start()
    time.sleep(1.0)
    assert "status" not in out, "the long-poll answered before anything changed"
    CertificateFactory(domain=domain)  # commits (transaction=True): the trigger notifies at commit
    committed = time.monotonic()
    poller.join(timeout=10)
    assert out["status"] == 200
    body = json.loads(out["body"])
    assert [c["name"] for c in body["changes"]] == ["wait.example.com"]
    assert out["at"] - committed < 1.0, f"answered {out['at'] - committed:.2f} s after the commit"


def test_a_wait_with_nothing_new_ends_empty_with_the_same_cursor(feed_server):
    token = create_router_token("edge-idle")
    after = feed_end()
    out: dict = {}
    _poll(feed_server, token, after, 1.5, out)
    assert out["status"] == 200 and json.loads(out["body"]) == {"cursor": after, "changes": []}
    assert 1.4 < out["took"] < 5


def test_revoking_a_router_token_cuts_its_open_long_poll_with_a_401(feed_server):
    token = create_router_token("edge-revoked")
    out: dict = {}
    poller = threading.Thread(target=_poll, args=(feed_server, token, feed_end(), 30, out))
    poller.start()
    time.sleep(1.0)
    revoked = time.monotonic()
    revoke_token(ApiToken.objects.get(name="edge-revoked"))
    poller.join(timeout=10)
    assert out["status"] == 401 and b"revoked" in out["body"]
    assert out["at"] - revoked < 1.0
    again = requests.get(
        f"{feed_server.url}/routers/v1/changes", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert again.status_code == 401


def _connections_to_test_database() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
        return cursor.fetchone()[0]


def test_a_hundred_waiting_routers_hold_no_database_connection_each_and_all_get_the_change(
    feed_server, settings
):
    token = create_router_token("edge-fleet")
    domain = DomainFactory(name="fleet.example.com")
    after = feed_end()
    idle = _connections_to_test_database()
    outs = [{} for _ in range(100)]
    pollers = [threading.Thread(target=_poll, args=(feed_server, token, after, 30, out)) for out in outs]
    for poller in pollers:
        poller.start()
    time.sleep(3.0)
    assert not any(outs), "a long-poll answered before anything changed"
    # One feed process, one worker: a hundred open requests, and no connection each.
    waiting = _connections_to_test_database()
    assert waiting <= idle + 3
    # The change wakes all hundred at once: they take turns at the database, a few at a time.
    peak, sampling = [0], threading.Event()

    def sample() -> None:
        from django.db import connections

        try:
            while not sampling.is_set():
                peak[0] = max(peak[0], _connections_to_test_database())
        finally:
            connections.close_all()

    sampler = threading.Thread(target=sample)
    sampler.start()
    CertificateFactory(domain=domain)
    committed = time.monotonic()
    for poller in pollers:
        poller.join(timeout=20)
    sampling.set()
    sampler.join()
    assert [out.get("status") for out in outs] == [200] * 100
    assert all(json.loads(out["body"])["changes"][0]["name"] == "fleet.example.com" for out in outs)
    assert max(out["at"] for out in outs) - committed < 5.0
    # Besides those of the wait (the listener's among them) and the sampler's own: at most
    # FEED_DATABASE_CONNECTIONS, and two closed ones whose backends have not exited yet.
    assert peak[0] <= waiting + 1 + settings.FEED_DATABASE_CONNECTIONS + 2, (peak[0], waiting)


def test_a_router_of_another_region_keeps_waiting_through_a_change_it_may_not_see(feed_server):
    here, there = (
        RegionFactory(name="here", domain_suffix="here.example-paas.io"),
        RegionFactory(name="there", domain_suffix="there.example-paas.io"),
    )
    token = create_router_token("edge-here", regions=[here.id])
    elsewhere = DomainFactory(name="else.example.com", app__region=there)
    out: dict = {}
    poller = threading.Thread(target=_poll, args=(feed_server, token, feed_end(), 2.5, out))
    poller.start()
    time.sleep(0.8)
    CertificateFactory(domain=elsewhere)
    poller.join(timeout=10)
    assert out["status"] == 200 and json.loads(out["body"])["changes"] == []
    assert out["took"] > 2.4, "the change of another region ended the wait"


def test_a_cursor_beyond_the_end_of_the_feed_gets_409_asking_for_a_snapshot(feed_server):
    token = create_router_token("edge-restored")
    answer = requests.get(
        f"{feed_server.url}/routers/v1/changes",
        params={"after": feed_end() + 1000},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert answer.status_code == 409 and "snapshot" in answer.text


@pytest.mark.parametrize("wait", ["-1", "61", "nan", "soon"])
def test_a_wait_out_of_range_is_a_400_naming_it(feed_server, wait):
    token = create_router_token("edge-bad-wait")
    answer = requests.get(
        f"{feed_server.url}/routers/v1/changes",
        params={"wait": wait},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert answer.status_code == 400 and "wait" in answer.text


def _lines(body: bytes) -> list[dict]:
    return [json.loads(line) for line in body.splitlines()]


def test_the_snapshot_streams_each_served_name_in_order_with_the_cursor_and_an_end_line(feed_server):
    here, there = (
        RegionFactory(name="snap-here", domain_suffix="snap-here.example-paas.io"),
        RegionFactory(name="snap-there", domain_suffix="snap-there.example-paas.io"),
    )
    names = [f"s{i:03}.example.com" for i in range(250)]
    for name in names:
        CertificateFactory(domain=DomainFactory(name=name, app__region=here))
    CertificateFactory(domain=DomainFactory(name="other.example.com", app__region=there))
    DomainFactory(name="nothing.example.com", app__region=here)  # nothing served: not listed
    token = create_router_token("edge-snap", regions=[here.id])
    with requests.get(
        f"{feed_server.url}/routers/v1/snapshot",
        headers={"Authorization": f"Bearer {token}"},
        stream=True,
        timeout=30,
    ) as answer:
        assert answer.status_code == 200
        assert answer.headers["Content-Type"] == "application/x-ndjson"
        assert "Content-Length" not in answer.headers  # streamed, not built whole
        lines = _lines(answer.raw.read())
    assert lines[0] == {"cursor": feed_end()}
    assert [line["name"] for line in lines[1:-1]] == names
    assert all(len(line["candidates"]) == 1 for line in lines[1:-1])
    first = Certificate.objects.get(domain__name="s000.example.com")
    assert lines[1]["candidates"][0]["pem"].endswith(first.private_key.reveal().decode() + "\n")
    assert lines[-1] == {"end": True, "names": 250}


def test_the_snapshot_under_the_sync_web_server_streams_the_same_lines():
    CertificateFactory(domain=DomainFactory(name="sync.example.com"))
    token = create_router_token("edge-sync")
    answer = Client(HTTP_AUTHORIZATION=f"Bearer {token}").get("/routers/v1/snapshot")
    assert answer.status_code == 200 and answer.streaming
    lines = _lines(b"".join(answer.streaming_content))
    assert lines[0] == {"cursor": feed_end()} and lines[-1]["end"] is True
    assert "sync.example.com" in [line.get("name") for line in lines]


def test_the_snapshot_refuses_a_customers_token_and_no_token():
    assert Client().get("/routers/v1/snapshot").status_code == 401
