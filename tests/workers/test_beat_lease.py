"""Beat's leader lease on the real PostgreSQL: who may take it, renew it, and claim a periodic run."""

from __future__ import annotations

import datetime
import time

import psycopg
import pytest
from django.db.models.functions import Now
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from workers import beat_lease
from workers.beat_lease import (
    BeatIdentity,
    LeaderLease,
    LeaseTimings,
    claim_periodic_run,
    release,
    renew,
    try_acquire,
)
from workers.models import BeatLease

# The lease statements run on connections of their own: their rows must be committed to be seen.
pytestmark = pytest.mark.django_db(transaction=True)

LEASE = 20


@pytest.fixture
def conn():
    connection = beat_lease._lease_connection(LeaseTimings(LEASE))
    yield connection
    connection.close()


def _expire_lease() -> None:
    """Moves the lease's end into the past, as if its holder had stopped renewing long ago."""
    BeatLease.objects.update(expires_at=timezone.now() - datetime.timedelta(seconds=1))


def _periodic_task() -> PeriodicTask:
    interval = IntervalSchedule.objects.create(every=60, period=IntervalSchedule.SECONDS)
    task = "workers.tasks.housekeeping.heartbeat"
    return PeriodicTask.objects.create(name="probe", task=task, interval=interval)


def test_the_first_beat_takes_the_lease_and_a_second_is_refused_while_it_is_unexpired(conn):
    first, second = BeatIdentity.of_this_process(), BeatIdentity.of_this_process()
    assert try_acquire(conn, first, LEASE) == 1
    assert try_acquire(conn, second, LEASE) is None
    row = BeatLease.objects.get()
    assert (row.holder, row.term) == (first.holder, 1)
    assert row.expires_at - row.renewed_at == datetime.timedelta(seconds=LEASE)


def test_an_expired_lease_goes_to_the_next_term_and_its_old_holder_can_no_longer_renew(conn):
    old, standby = BeatIdentity.of_this_process(), BeatIdentity.of_this_process()
    assert try_acquire(conn, old, LEASE) == 1
    _expire_lease()
    assert try_acquire(conn, standby, LEASE) == 2
    assert not renew(conn, old, 1, LEASE)
    assert BeatLease.objects.get().holder == standby.holder


def test_a_holder_renews_its_own_expired_lease_while_nobody_took_it(conn):
    holder = BeatIdentity.of_this_process()
    assert try_acquire(conn, holder, LEASE) == 1
    _expire_lease()
    assert renew(conn, holder, 1, LEASE)
    row = BeatLease.objects.get()
    assert row.term == 1
    assert row.expires_at > timezone.now()


def test_a_released_lease_is_taken_at_once_by_a_standby(conn):
    leader, standby = BeatIdentity.of_this_process(), BeatIdentity.of_this_process()
    assert try_acquire(conn, leader, LEASE) == 1
    release(conn, leader, 1)
    assert try_acquire(conn, standby, LEASE) == 2


def test_a_run_is_claimed_only_under_the_current_unexpired_term(conn):
    task = _periodic_task()
    old, leader = BeatIdentity.of_this_process(), BeatIdentity.of_this_process()
    try_acquire(conn, old, LEASE)
    _expire_lease()
    assert not claim_periodic_run(old, 1, task.pk, timezone.now()), "an expired lease claims nothing"
    try_acquire(conn, leader, LEASE)
    run_at = timezone.now()
    assert not claim_periodic_run(old, 1, task.pk, run_at), "the previous term claims nothing"
    assert not claim_periodic_run(leader, 1, task.pk, run_at), "a stale term claims nothing"
    assert claim_periodic_run(leader, 2, task.pk, run_at)
    task.refresh_from_db()
    assert (task.last_run_at, task.total_run_count) == (run_at, 1)


def test_a_takeover_waits_for_a_claim_in_flight_and_then_reads_its_run(conn):
    """The claim holds a share lock on the lease row until it commits, so a standby that takes the
    lease after the expiry reads the run the old leader claimed instead of sending it again."""
    task = _periodic_task()
    old, standby = BeatIdentity.of_this_process(), BeatIdentity.of_this_process()
    try_acquire(conn, old, 2)
    run_at = timezone.now()
    with beat_lease._lease_connection(LeaseTimings(LEASE)) as claimer:
        with claimer.transaction():
            claimed = claimer.execute(beat_lease._CLAIM, old.params(term=1, task_id=task.pk, run_at=run_at))
            assert claimed.rowcount == 1
            time.sleep(2.5)  # the lease expires while the claim is still uncommitted
            conn.execute("SET statement_timeout = 500")
            with pytest.raises(psycopg.errors.QueryCanceled):
                try_acquire(conn, standby, LEASE)
        assert try_acquire(conn, standby, LEASE) == 2
    task.refresh_from_db()
    assert task.last_run_at == run_at


def test_a_leader_whose_renewals_fail_stops_sending_before_its_lease_ends(monkeypatch):
    lease = LeaderLease(4)
    lease.start()
    try:
        assert lease.wait_for_leadership(10)
        assert BeatLease.objects.get().holder == lease.identity.holder

        def unreachable(timings):
            raise psycopg.OperationalError("connection timed out")

        monkeypatch.setattr(beat_lease, "_lease_connection", unreachable)
        lease._close_connection()
        assert lease.leading_term() == 1
        while lease.leading_term() is not None:
            lease.note_loop_alive()
            time.sleep(0.01)
        # The fence closed; PostgreSQL's own clock still has the lease running at that moment.
        assert BeatLease.objects.filter(expires_at__gt=Now()).exists()
    finally:
        lease._stopping.set()


def test_a_beat_whose_scheduler_loop_stalls_stops_renewing_so_a_standby_takes_over(conn):
    lease = LeaderLease(4)
    lease.start()
    try:
        assert lease.wait_for_leadership(10)
        # No note_loop_alive() from here on: the scheduler loop is wedged.
        standby = BeatIdentity.of_this_process()
        deadline = time.monotonic() + 30
        while try_acquire(conn, standby, LEASE) is None:
            assert time.monotonic() < deadline, "the lease of a stalled loop never lapsed"
            time.sleep(0.2)
        assert lease.leading_term() is None
    finally:
        lease._stopping.set()


def test_operators_see_the_leader_in_the_admin_and_cannot_edit_or_delete_it(conn, admin_client):
    leader = BeatIdentity.of_this_process()
    try_acquire(conn, leader, LEASE)
    changelist = admin_client.get("/admin/workers/beatlease/")
    assert changelist.status_code == 200
    assert leader.host in changelist.content.decode()
    change = admin_client.post(f"/admin/workers/beatlease/{BeatLease.SINGLETON_ID}/change/", {"pid": 1})
    assert change.status_code in (200, 403)
    assert admin_client.post(f"/admin/workers/beatlease/{BeatLease.SINGLETON_ID}/delete/").status_code == 403
    assert BeatLease.objects.get().pid == leader.pid
