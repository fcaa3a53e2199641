"""The agent in this process, for what needs a hand on the driver: a driver that refuses a name is
retried until it takes it, without stopping the agent or delaying other names; a malformed feed
entry is skipped with a message and the rest applied."""

from __future__ import annotations

import logging
import threading

import pytest

from edge.agent import Agent
from edge.drivers import DriverError
from edge.drivers.files import FilesDriver
from edge.feed import Feed
from edge.store import Store
from tests.edge.conftest import wait_for
from tests.edge.feed_stub import TOKEN, candidate


class RefusingFirst(FilesDriver):
    """The files driver, refusing each of `names` the first `times` times it is applied."""

    def __init__(self, directory, names: set[str], times: int = 2) -> None:
        super().__init__(directory)
        self.refusals = {name: times for name in names}
        self.calls: list[str] = []
        self.threads: set[str] = set()

    def apply(self, name, served):
        self.calls.append(name)
        self.threads.add(threading.current_thread().name)
        if self.refusals.get(name, 0) > 0:
            self.refusals[name] -= 1
            raise DriverError("the router's socket is busy")
        super().apply(name, served)


@pytest.fixture
def run_agent(tmp_path):
    agents = []

    def run(feed, driver) -> Agent:
        agent = Agent(Feed(feed.url, TOKEN), Store(tmp_path / "store"), driver, wait=2)
        thread = threading.Thread(target=agent.run, name="edge-sync", daemon=True)
        thread.start()
        agents.append((agent, thread))
        return agent

    yield run
    for agent, thread in agents:
        agent.close()
        thread.join(10)


def test_a_name_the_driver_refuses_is_retried_until_applied_and_others_go_on(
    feed, run_agent, pki, tmp_path, caplog
):
    caplog.set_level(logging.INFO, logger="certwright.edge")
    feed.publish("www.example.com", [candidate(pki, "www.example.com")])
    driver = RefusingFirst(tmp_path / "files", {"busy.example.com"}, times=2)
    agent = run_agent(feed, driver)
    wait_for(lambda: agent.cursor == 1, what="the snapshot")

    busy = candidate(pki, "busy.example.com")
    feed.publish("busy.example.com", [busy])
    shop = candidate(pki, "shop.example.com")
    seq = feed.publish("shop.example.com", [shop])
    wait_for(lambda: agent.cursor == seq, what="the changes")
    assert (tmp_path / "files" / "shop.example.com.pem").read_text() == shop["pem"]

    # Retried with backoff (1 s, then 2 s) by the timer thread.
    wait_for(lambda: (tmp_path / "files" / "busy.example.com.pem").exists(), timeout=10, what="the retry")
    assert (tmp_path / "files" / "busy.example.com.pem").read_text() == busy["pem"]
    assert driver.calls.count("busy.example.com") == 3
    assert "the driver could not apply busy.example.com: the router's socket is busy" in caplog.text
    assert "applied busy.example.com" in caplog.text
    assert driver.threads <= {"edge-sync", "edge-timer"}


def test_a_malformed_feed_entry_is_skipped_with_a_message_and_the_rest_applied(
    feed, run_agent, pki, tmp_path, caplog
):
    good = candidate(pki, "good.example.com")
    feed.publish("good.example.com", [good])
    feed.publish("Bad_Name.example.com", [candidate(pki, "bad.example.com")])
    broken = {**candidate(pki, "broken.example.com"), "not_after": "next tuesday"}
    feed.publish("broken.example.com", [broken])
    agent = run_agent(feed, FilesDriver(tmp_path / "files"))
    wait_for(lambda: agent.cursor == 3, what="the snapshot")

    assert sorted(agent.index) == ["good.example.com"]
    assert "skipped a feed entry for Bad_Name.example.com: not a host name" in caplog.text
    assert "skipped a feed entry for broken.example.com: not_after is not an ISO 8601 time" in caplog.text
    seq = feed.publish("later.example.com", [candidate(pki, "later.example.com")])
    wait_for(lambda: agent.cursor == seq, what="a later change")
    assert (tmp_path / "files" / "later.example.com.pem").exists()
