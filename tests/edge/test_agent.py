"""The edge agent end to end: the real `certwright-edge run` process against a real HTTP server that
speaks the feed protocol (tests/edge/feed_stub.py), driving the files driver, whose output on disk is
what these tests read."""

from __future__ import annotations

import datetime
import json
import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

from tests.edge.conftest import wait_for
from tests.edge.feed_stub import TOKEN, candidate


def files_index(directory: Path) -> dict:
    try:
        return json.loads((directory / "index.json").read_text())
    except FileNotFoundError:
        return {}


def served_fingerprint(directory: Path, name: str) -> str | None:
    entry = files_index(directory).get(name)
    return entry["fingerprint"] if entry else None


def test_the_agent_takes_a_snapshot_then_follows_changes_into_the_files_driver(
    feed, start_agent, pki, tmp_path
):
    www = candidate(pki, "www.example.com")
    api = candidate(pki, "api.example.com", source="custom")
    feed.publish("www.example.com", [www])
    feed.publish("api.example.com", [api])
    out = tmp_path / "files"
    agent = start_agent(feed, "--driver", "files", "--files-dir", str(out))
    agent.wait_for_cursor(2)
    assert feed.count("snapshot") == 1
    assert served_fingerprint(out, "www.example.com") == www["fingerprint"]
    assert (out / "api.example.com.pem").read_text() == api["pem"]

    wildcard = candidate(pki, "*.apps.example.com")
    seq = feed.publish("*.apps.example.com", [wildcard])
    agent.wait_for_cursor(seq)
    assert (out / "_wildcard.apps.example.com.pem").read_text() == wildcard["pem"]
    replaced = candidate(pki, "www.example.com", source="custom")
    feed.publish("www.example.com", [replaced, www])
    seq = feed.publish("api.example.com", [])
    agent.wait_for_cursor(seq)

    index = files_index(out)
    assert set(index) == {"www.example.com", "*.apps.example.com"}
    assert index["www.example.com"]["fingerprint"] == replaced["fingerprint"]
    assert index["www.example.com"]["source"] == "custom"
    assert (out / "www.example.com.pem").read_text() == replaced["pem"]
    assert not (out / "api.example.com.pem").exists()
    assert feed.count("snapshot") == 1
    assert agent.alive()
    log = agent.log_since_start()
    assert f"applied www.example.com: {replaced['fingerprint'][:16]} (custom" in log
    assert "applied api.example.com: nothing" in log


def test_a_restarted_agent_resumes_from_its_cursor_without_a_snapshot(feed, start_agent, pki, tmp_path):
    feed.publish("www.example.com", [candidate(pki, "www.example.com")])
    out = tmp_path / "files"
    agent = start_agent(feed, "--driver", "files", "--files-dir", str(out))
    agent.wait_for_cursor(1)
    agent.stop()
    # Changes committed while the agent is away reach it from its cursor after the restart.
    later = candidate(pki, "shop.example.com")
    seq = feed.publish("shop.example.com", [later])

    agent = start_agent(feed, "--driver", "files", "--files-dir", str(out), store=agent.store)
    agent.wait_for_cursor(seq)
    assert served_fingerprint(out, "shop.example.com") == later["fingerprint"]
    assert served_fingerprint(out, "www.example.com") is not None
    assert feed.count("snapshot") == 1
    assert "changes after=1" in feed.requests


def test_the_router_keeps_serving_from_the_store_while_certwright_is_down(feed, start_agent, pki, tmp_path):
    feed.publish("www.example.com", [candidate(pki, "www.example.com")])
    out = tmp_path / "files"
    agent = start_agent(feed, "--driver", "files", "--files-dir", str(out), wait=1)
    agent.wait_for_cursor(1)
    # The store's cursor moves before the driver has written its files: wait for the index too.
    agent.wait_until(
        lambda: served_fingerprint(out, "www.example.com") is not None, timeout=15, what="the files written"
    )
    before = {path.name: path.read_bytes() for path in out.iterdir()}

    feed.down = True
    agent.wait_for_log("answered HTTP 503; serving from the store")
    time.sleep(3)  # several retries
    assert agent.alive()
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before
    # Logged once per change of state, not once per retry.
    assert agent.log_since_start().count("HTTP 503") == 1

    # A restart while Certwright is down serves the store too (the driver starts from it).
    agent.stop()
    agent = start_agent(feed, "--driver", "files", "--files-dir", str(out), store=agent.store, wait=1)
    agent.wait_for_log("the router serves 1 names")
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before

    feed.down = False
    seq = feed.publish("shop.example.com", [candidate(pki, "shop.example.com")])
    agent.wait_for_cursor(seq, timeout=20)
    assert served_fingerprint(out, "shop.example.com") is not None
    assert feed.count("snapshot") == 1
    assert "connected to" in agent.log_since_start()


def test_a_cursor_beyond_the_feed_takes_a_snapshot_that_replaces_the_store(feed, start_agent, pki, tmp_path):
    for name in ("a.example.com", "b.example.com", "c.example.com"):
        feed.publish(name, [candidate(pki, name)])
    out = tmp_path / "files"
    agent = start_agent(feed, "--driver", "files", "--files-dir", str(out), wait=1)
    agent.wait_for_cursor(3)

    # The database was restored from a backup: b is gone, d is new, and the feed restarts at 1.
    feed.forget_history()
    feed.state.names.pop("b.example.com")
    feed.state.names["d.example.com"] = [candidate(pki, "d.example.com")]
    feed.publish("e.example.com", [candidate(pki, "e.example.com")])
    agent.wait_for_log("snapshot: 4 names at cursor 1", timeout=20)
    agent.wait_for_cursor(1)

    assert set(files_index(out)) == {"a.example.com", "c.example.com", "d.example.com", "e.example.com"}
    assert not (out / "b.example.com.pem").exists()
    stored = sorted(path.name for path in (agent.store / "current" / "names").iterdir())
    assert stored == [f"{n}.example.com.json" for n in "acde"]
    assert feed.count("snapshot") == 2


def test_an_incomplete_snapshot_is_discarded_and_asked_again(feed, start_agent, pki, tmp_path):
    for index in range(5):
        feed.publish(f"n{index}.example.com", [candidate(pki, f"n{index}.example.com")])
    feed.cut_snapshot_after = 3
    out = tmp_path / "files"
    agent = start_agent(feed, "--driver", "files", "--files-dir", str(out))
    agent.wait_for_log("was cut after 3 names")
    feed.cut_snapshot_after = None
    feed.omit_end_line = True
    # The second stream ends cleanly but without its end line; the third request shows it was refused.
    wait_for(lambda: feed.count("snapshot") >= 3, what="a third snapshot request")
    # Nothing of the incomplete snapshots reached the store or the router.
    assert agent.cursor() is None
    assert list((agent.store / "current" / "names").iterdir()) == []
    assert not out.exists() or files_index(out) == {}

    feed.omit_end_line = False
    agent.wait_for_cursor(5, timeout=20)
    assert len(files_index(out)) == 5

    # The incomplete snapshots' generations are gone: only the published one is left. (Checked
    # here, not while the stub still cuts streams: the third request's generation may be filling
    # at any moment then. The old generation goes just after the switch, hence the wait.)
    def generations() -> list[str]:
        return sorted(p.name for p in agent.store.iterdir() if p.name.startswith("gen-"))

    wait_for(
        lambda: generations() == [os.readlink(agent.store / "current")],
        timeout=10,
        what="one generation, the published one",
    )


def test_store_files_are_written_0600_and_atomically(feed, start_agent, pki, tmp_path):
    feed.publish("www.example.com", [candidate(pki, "www.example.com")])
    out = tmp_path / "files"
    agent = start_agent(feed, "--driver", "files", "--files-dir", str(out))
    agent.wait_for_cursor(1)
    seq = feed.publish("shop.example.com", [candidate(pki, "shop.example.com")])
    agent.wait_for_cursor(seq)

    names = agent.store / "current" / "names"
    for path in [*names.iterdir(), *out.glob("*.pem")]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(agent.store.stat().st_mode) == 0o700
    # No temporary file is left behind by an atomic write.
    assert not [p for p in [*names.iterdir(), *out.iterdir()] if p.name.endswith(".tmp")]
    status = subprocess.run(
        [sys.executable, "-m", "edge.main", "status", "--store", str(agent.store)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"cursor: {seq}\nnames: 2\nlast sync: " in status


def test_the_agent_switches_at_a_custom_certificates_expiry_by_its_own_clock(
    feed, start_agent, pki, tmp_path
):
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    expiry = now + datetime.timedelta(seconds=4)
    custom = candidate(pki, "www.example.com", source="custom", not_after=expiry)
    letsencrypt = candidate(pki, "www.example.com")
    feed.publish("www.example.com", [custom, letsencrypt])
    out = tmp_path / "files"
    # The long-poll waits 55 s: the switch cannot come from the feed.
    agent = start_agent(feed, "--driver", "files", "--files-dir", str(out))
    agent.wait_for_cursor(1)
    assert served_fingerprint(out, "www.example.com") == custom["fingerprint"]

    wait_for(
        lambda: served_fingerprint(out, "www.example.com") == letsencrypt["fingerprint"],
        timeout=10,
        what="the switch to Let's Encrypt's certificate",
    )
    switched = time.time()
    assert switched - expiry.timestamp() < 1.0
    line = re.search(
        r"switched www\.example\.com to (\w+) .* at (\S+) \(due (\S+)\)", agent.log_since_start()
    )
    assert line, agent.log_since_start()
    assert letsencrypt["fingerprint"].startswith(line.group(1))
    applied = datetime.datetime.fromisoformat(line.group(2))
    due = datetime.datetime.fromisoformat(line.group(3))
    assert due == expiry
    assert datetime.timedelta(0) <= applied - due < datetime.timedelta(seconds=1)
    assert feed.count("snapshot") == 1
    assert len([r for r in feed.requests if r.startswith("changes")]) == 1


def test_a_refused_token_is_logged_clearly_and_the_router_keeps_serving(feed, start_agent, pki, tmp_path):
    feed.publish("www.example.com", [candidate(pki, "www.example.com")])
    out = tmp_path / "files"
    agent = start_agent(feed, "--driver", "files", "--files-dir", str(out), wait=2)
    agent.wait_for_cursor(1)
    feed.refuse = True
    agent.wait_for_log("refused the token (HTTP 401")
    assert "check the token" in agent.log_since_start()
    assert served_fingerprint(out, "www.example.com") is not None
    assert agent.alive()


def test_the_token_never_appears_in_the_log(feed, start_agent, pki, tmp_path):
    feed.publish("www.example.com", [candidate(pki, "www.example.com")])
    agent = start_agent(feed, "--driver", "files", "--files-dir", str(tmp_path / "files"), wait=1)
    agent.wait_for_cursor(1)
    feed.down = True
    agent.wait_for_log("serving from the store")
    feed.down = False
    feed.refuse = True
    agent.wait_for_log("refused the token")
    agent.stop()
    log = agent.log_path.read_text()
    assert TOKEN not in log
    assert "PRIVATE KEY" not in log
    assert "the router serves 1 names" in log
