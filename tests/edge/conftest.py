"""Fixtures of the edge agent's tests: the feed stub and the real `certwright-edge` command run as a
subprocess (its log under the run's logs/, where the suite's leak check reads it)."""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path

import pytest

from devstack.ports import free_port
from devstack.processes import ManagedProcess
from tests.edge.feed_stub import TOKEN, FeedStub
from tests.edge.haproxy_process import start_haproxy

RUN_DIR = Path(os.environ["CERTWRIGHT_TEST_RUN_DIR"])
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def haproxy(tmp_path):
    """A real HAProxy from the shipped configuration, empty: (process, HTTPS port, the agent's
    options to drive it)."""
    https_port = free_port()
    process, socket_path, crt_list, cert_dir = start_haproxy(
        tmp_path / "haproxy", https_port, free_port(), free_port()
    )
    options = ["--driver", "haproxy", "--haproxy-socket", socket_path]
    options += ["--haproxy-crt-list", crt_list, "--haproxy-cert-dir", cert_dir]
    yield process, https_port, options
    process.stop()


@pytest.fixture
def feed():
    stub = FeedStub()
    yield stub
    stub.close()


class Agent(ManagedProcess):
    """`certwright-edge run` as a real process; its stderr (the log) goes to logs/<name>.log."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], store: Path) -> None:
        super().__init__(name, argv, RUN_DIR / "logs", env=env)
        self.store = store

    def wait_for_log(self, text: str, timeout: float = 15.0, count: int = 1) -> None:
        self.wait_until(
            lambda: self.log_since_start().count(text) >= count, timeout=timeout, what=f"logging {text!r}"
        )

    def cursor(self) -> int | None:
        link = self.store / "current"
        try:
            return json.loads((link / "cursor").read_text())["cursor"]
        except (FileNotFoundError, ValueError):
            return None

    def wait_for_cursor(self, cursor: int, timeout: float = 15.0) -> None:
        """Until the store's cursor is `cursor` and the driver has started: at boot, the snapshot's
        cursor is written before the router is given what the snapshot lists."""
        self.wait_until(
            lambda: self.cursor() == cursor and "the router serves" in self.log_since_start(),
            timeout=timeout,
            what=f"at cursor {cursor}, serving",
        )


@pytest.fixture
def start_agent(tmp_path):
    """Starts `python -m edge.main run` against a feed with the driver options given; stops it after."""
    started: list[Agent] = []

    def start(
        feed: FeedStub | str, *driver: str, store: Path | None = None, token: str = TOKEN, wait: int = 55
    ):
        url = feed if isinstance(feed, str) else feed.url
        store = store or tmp_path / "store"
        token_file = tmp_path / "token"
        token_file.write_text(token + "\n")
        name = f"edge-{uuid.uuid4().hex[:8]}"
        argv = [sys.executable, "-m", "edge.main", "run", "--url", url, "--token-file", str(token_file)]
        argv += ["--store", str(store), "--wait", str(wait), *driver]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        agent = Agent(name, argv, env, store)
        agent.start()
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop()


def wait_for(predicate, timeout: float = 15.0, what: str = "the condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
