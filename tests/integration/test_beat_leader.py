"""Two real beats on the shipped lease settings: one leads and sends each periodic run once; when the
leader is killed, or cut off from PostgreSQL while its broker still works, the standby takes over and
the task is still sent once per interval, never twice.

A probe task every second goes to a queue no worker consumes; the test takes each message off the
broker as it arrives and reads the leader's term and the claimed run time from its headers.
"""

from __future__ import annotations

import json
import signal
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.db.models.functions import Now
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from devstack.processes import ManagedProcess
from tests.conftest import celery_subprocess_env
from tests.integration.beat import start_beat
from tests.integration.tcp_relay import FreezableRelay
from workers.beat_lease import LeaseTimings
from workers.models import BeatLease, Heartbeat

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

PROBE_QUEUE = "beat-probe"
INTERVAL = timedelta(seconds=1)
TIMINGS = LeaseTimings(settings.BEAT_LEADER_LEASE_SECONDS)


@dataclass(frozen=True)
class Sent:
    term: int
    run_at: datetime
    received: float  # time.monotonic() in this process


class Probe:
    """The probe's messages, in the order the broker delivered them."""

    def __init__(self, broker_redis) -> None:
        self.redis = broker_redis
        self.sent: list[Sent] = []
        interval, _ = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.SECONDS)
        task = "workers.tasks.housekeeping.heartbeat"
        PeriodicTask.objects.create(name="Beat probe", task=task, interval=interval, queue=PROBE_QUEUE)

    def receive_until(self, done, timeout: float, what: str) -> list[Sent]:
        deadline = time.monotonic() + timeout
        while not done(self.sent):
            assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s; received {self.sent}"
            popped = self.redis.brpop([PROBE_QUEUE], timeout=1)
            if popped:
                headers = json.loads(popped[1])["headers"]
                run_at = datetime.fromisoformat(headers["beat_run_at"])
                self.sent.append(Sent(headers["beat_leader_term"], run_at, time.monotonic()))
        return self.sent

    def receive_for(self, seconds: float) -> list[Sent]:
        until = time.monotonic() + seconds
        return self.receive_until(lambda _: time.monotonic() >= until, seconds + 5, "waiting")


def _assert_sent_once_per_interval(sent: list[Sent]) -> None:
    runs = [message.run_at for message in sent]
    assert len(set(runs)) == len(runs), "a run was sent twice"
    gaps = [later - earlier for earlier, later in pairwise(sorted(runs))]
    assert all(gap >= INTERVAL for gap in gaps), f"two sends within one interval: {min(gaps)}"


def _wait_until_leading(beat: ManagedProcess, timeout: float = TIMINGS.takeover_bound + 10) -> int:
    def leads() -> bool:
        return BeatLease.objects.filter(pid=beat.pid, expires_at__gt=Now()).exists()

    beat.wait_until(leads, timeout=timeout, what="leading")
    return BeatLease.objects.get().term


@pytest.fixture
def probe(without_session_worker, broker_redis) -> Probe:
    return Probe(broker_redis)


@pytest.fixture
def beats():
    started: list[ManagedProcess] = []
    yield started
    for beat in started:
        beat.stop()


def test_two_beats_send_each_run_once_and_the_standby_sends_nothing(probe, beats):
    beats.append(leader := start_beat("beat-leader"))
    term = _wait_until_leading(leader)
    beats.append(standby := start_beat("beat-standby"))
    sent = probe.receive_for(12)
    assert len(sent) >= 5, "the leader hardly sent anything"
    assert {message.term for message in sent} == {term}
    _assert_sent_once_per_interval(sent)
    assert standby.alive() and "Sending due task" not in standby.log_since_start()
    assert Heartbeat.objects.filter(source=Heartbeat.Source.BEAT_STANDBY).exists()
    assert BeatLease.objects.get().pid == leader.pid


def test_the_standby_takes_over_within_the_stated_time_when_the_leader_is_killed(probe, beats):
    beats.append(leader := start_beat("beat-killed"))
    old_term = _wait_until_leading(leader)
    beats.append(start_beat("beat-successor"))
    probe.receive_until(lambda sent: len(sent) >= 3, 30, "the leader's first sends")
    leader.signal_group(signal.SIGKILL)
    killed_at = time.monotonic()
    sent = probe.receive_until(
        lambda sent: any(message.term != old_term for message in sent),
        TIMINGS.takeover_bound + 15,
        "a send by the standby",
    )
    took_over = next(message for message in sent if message.term != old_term)
    took = took_over.received - killed_at
    print(f"takeover after SIGKILL: {took:.1f} s (stated: {TIMINGS.takeover_bound:g} s)")
    # The first run of the new leader is due at once; one interval covers its send.
    assert took <= TIMINGS.takeover_bound + INTERVAL.total_seconds() + 1
    assert took_over.term == old_term + 1
    sent = probe.receive_for(5)
    _assert_sent_once_per_interval(sent)


def test_a_leader_cut_off_from_postgresql_stops_sending_before_the_standby_takes_over(probe, beats):
    database = urlsplit(celery_subprocess_env()["DATABASE_URL"])
    relay = FreezableRelay((database.hostname, database.port or 5432))
    try:
        relayed = database.netloc.replace(f":{database.port}", f":{relay.port}")
        through_relay = database._replace(netloc=relayed)
        beats.append(leader := start_beat("beat-cut-off", env={"DATABASE_URL": through_relay.geturl()}))
        old_term = _wait_until_leading(leader)
        beats.append(start_beat("beat-connected"))
        probe.receive_until(lambda sent: len(sent) >= 3, 30, "the leader's first sends")

        relay.freeze()  # the leader still reaches the broker, PostgreSQL no longer answers it
        frozen_at = time.monotonic()
        probe.receive_until(
            lambda sent: sum(message.term != old_term for message in sent) >= 3,
            TIMINGS.takeover_bound + 15,
            "sends by the standby",
        )
        relay.thaw()
        first_new = next(message for message in probe.sent if message.term != old_term)
        last_old = [message for message in probe.sent if message.term == old_term][-1]
        print(
            f"cut off at 0 s: the leader's last send {last_old.received - frozen_at:.1f} s,"
            f" the standby's first {first_new.received - frozen_at:.1f} s"
        )
        thawed_count = len(probe.sent)
        sent = probe.receive_for(8)
        stood_by = "another beat took the leader lease"
        leader.wait_until(lambda: stood_by in leader.log_since_start(), timeout=30, what="standing by")
    finally:
        relay.close()
    assert all(message.run_at < first_new.run_at for message in sent if message.term == old_term)
    assert all(message.term == first_new.term for message in sent[thawed_count:]), "the old leader sent again"
    _assert_sent_once_per_interval(sent)


def test_a_leader_stopped_cleanly_hands_the_lease_to_the_standby_at_its_next_try(probe, beats):
    beats.append(leader := start_beat("beat-stopped"))
    old_term = _wait_until_leading(leader)
    beats.append(standby := start_beat("beat-next"))
    probe.receive_until(lambda sent: len(sent) >= 2, 30, "the leader's first sends")
    leader.stop()  # SIGTERM
    lease = BeatLease.objects.get()
    assert lease.term > old_term or lease.expires_at <= datetime.now(lease.expires_at.tzinfo), "not released"
    # Well before the lease would have run out: the standby asks every quarter of it.
    _wait_until_leading(standby, timeout=TIMINGS.renew_every + 5)
    sent = probe.receive_until(lambda sent: sent[-1].term != old_term, 30, "a send by the standby")
    _assert_sent_once_per_interval(sent)
