"""Which beat sends the periodic tasks: a lease row in PostgreSQL, renewed by the leader, fenced by its clock.

Several beat processes may run (one per host, for failover); exactly one of them, the leader, sends.

Why a lease row and not a session-level `pg_try_advisory_lock`: an advisory lock is released only
when PostgreSQL notices that the holder's connection is gone. A killed host closes its sockets, but a
host cut off from the network leaves a half-open connection that PostgreSQL keeps until TCP
keepalives expire (two hours by default), so the standby could not take over in any stated time;
and meanwhile the cut-off leader cannot tell whether it still holds the lock. A lease has both bounds:

- The row (workers.models.BeatLease) names the holder and `expires_at`, always computed on
  PostgreSQL's clock (`clock_timestamp()`), so the hosts' clocks never decide who leads. The holder
  renews it every `lease / 4` seconds; anyone may take it once it has expired, and each new holder
  gets the next `term`.
- The leader fences itself on its own monotonic clock: it sends only until `lease - lease / 4`
  seconds after the *start* of its last successful renewal. PostgreSQL's expiry is at least `lease`
  seconds after that start, so a leader cut off from PostgreSQL stops sending at least `lease / 4`
  seconds before a standby can take the lease: there is no window in which two send.
- Every send is first claimed in PostgreSQL (`claim_periodic_run`): one statement writes the task's
  `last_run_at` only if the lease is still held under this term and unexpired, holding a share lock
  on the lease row until it commits, so a standby's take-over waits for a claim in flight and then
  reads it. A new leader re-reads the schedule at once, so a run the old leader claimed a second
  ago is not sent again; a run claimed but never published (the leader died in between) is lost,
  and the next interval sends it: at most once per interval, never twice.
- The renewals run in a thread of their own, on a connection of their own with a TCP user timeout,
  so a long tick never delays them and a half-open connection fails within seconds. The thread
  renews only while the scheduler loop is alive (a tick started within `lease / 2` seconds): a
  wedged loop lets the lease lapse instead of holding it while sending nothing.

Takeover after the leader dies: at most `lease * 1.25` seconds (its last renewal expires within
`lease`, and a standby asks every `lease / 4`), 25 s with the default BEAT_LEADER_LEASE_SECONDS=20;
a leader whose loop is wedged is replaced within `lease * 1.75`. A beat stopped with SIGTERM
releases its lease, and a standby takes over within `lease / 4`.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime

import psycopg
from django.db import DatabaseError, InterfaceError, connection, connections
from django_celery_beat.models import PeriodicTask

from workers.models import BeatLease

logger = logging.getLogger(__name__)

_LEASE_TABLE = BeatLease._meta.db_table
_PERIODIC_TASK_TABLE = PeriodicTask._meta.db_table

# Takes the lease when there is none yet or it has expired; the next term fences out the previous holder.
_ACQUIRE = f"""
INSERT INTO {_LEASE_TABLE} (id, holder, host, pid, term, acquired_at, renewed_at, expires_at)
VALUES (%(id)s, %(holder)s, %(host)s, %(pid)s, 1, clock_timestamp(), clock_timestamp(),
        clock_timestamp() + make_interval(secs => %(lease)s))
ON CONFLICT (id) DO UPDATE SET
    holder = EXCLUDED.holder, host = EXCLUDED.host, pid = EXCLUDED.pid, term = {_LEASE_TABLE}.term + 1,
    acquired_at = EXCLUDED.acquired_at, renewed_at = EXCLUDED.renewed_at, expires_at = EXCLUDED.expires_at
WHERE {_LEASE_TABLE}.expires_at <= clock_timestamp()
RETURNING term
"""  # noqa: S608 (table names from the models, values as parameters)

# Extends the holder's own term, even past its expiry: while the term is unchanged nobody else led.
_RENEW = f"""
UPDATE {_LEASE_TABLE}
SET renewed_at = clock_timestamp(), expires_at = clock_timestamp() + make_interval(secs => %(lease)s)
WHERE id = %(id)s AND holder = %(holder)s AND term = %(term)s
"""  # noqa: S608

_RELEASE = f"""
UPDATE {_LEASE_TABLE} SET expires_at = clock_timestamp()
WHERE id = %(id)s AND holder = %(holder)s AND term = %(term)s
"""  # noqa: S608

# FOR SHARE: a standby's _ACQUIRE waits until this claim has committed, then re-reads the schedule.
_CLAIM = f"""
UPDATE {_PERIODIC_TASK_TABLE}
SET last_run_at = %(run_at)s, total_run_count = total_run_count + 1
WHERE id = %(task_id)s AND EXISTS (
    SELECT 1 FROM {_LEASE_TABLE}
    WHERE id = %(id)s AND holder = %(holder)s AND term = %(term)s AND expires_at > clock_timestamp()
    FOR SHARE
)
"""  # noqa: S608


@dataclass(frozen=True)
class BeatIdentity:
    """Who a beat process is, in the lease row."""

    holder: str
    host: str
    pid: int

    @classmethod
    def of_this_process(cls) -> BeatIdentity:
        host, pid = socket.gethostname(), os.getpid()
        return cls(holder=f"{host}:{pid}:{secrets.token_hex(4)}", host=host, pid=pid)

    def params(self, **extra) -> dict:
        lease_row = {"id": BeatLease.SINGLETON_ID, "holder": self.holder, "host": self.host, "pid": self.pid}
        return {**lease_row, **extra}


@dataclass(frozen=True)
class LeaseTimings:
    """Every period of the lease, derived from its length (BEAT_LEADER_LEASE_SECONDS)."""

    lease_seconds: float

    @property
    def renew_every(self) -> float:
        return self.lease_seconds / 4

    @property
    def sends_for(self) -> float:
        """How long after the start of its last successful renewal a leader may still send."""
        return self.lease_seconds - self.lease_seconds / 4

    @property
    def stall_limit(self) -> float:
        """How long the scheduler loop may go without a tick before the lease is no longer renewed."""
        return self.lease_seconds / 2

    @property
    def takeover_bound(self) -> float:
        """At most this long after a leader dies, a standby leads."""
        return self.lease_seconds + self.renew_every


def try_acquire(conn: psycopg.Connection, identity: BeatIdentity, lease_seconds: float) -> int | None:
    """Takes the lease if it is free or expired; returns the new term, or None if another beat holds it."""
    row = conn.execute(_ACQUIRE, identity.params(lease=lease_seconds)).fetchone()
    return row[0] if row else None


def renew(conn: psycopg.Connection, identity: BeatIdentity, term: int, lease_seconds: float) -> bool:
    """Extends `identity`'s lease under `term`; False when another beat has taken it since."""
    return conn.execute(_RENEW, identity.params(term=term, lease=lease_seconds)).rowcount == 1


def release(conn: psycopg.Connection, identity: BeatIdentity, term: int) -> None:
    """Ends `identity`'s lease now (a clean stop), so that a standby takes over at its next try."""
    conn.execute(_RELEASE, identity.params(term=term))


def claim_periodic_run(identity: BeatIdentity, term: int, periodic_task_id: int, run_at: datetime) -> bool:
    """Records the run of a periodic task at `run_at`, only while `identity` leads under `term` on
    PostgreSQL's clock; True means this beat, and no other, may send it. Uses Django's connection."""
    try:
        with connection.cursor() as cursor:
            cursor.execute(_CLAIM, identity.params(term=term, task_id=periodic_task_id, run_at=run_at))
            return cursor.rowcount == 1
    except (DatabaseError, InterfaceError) as exc:
        logger.warning("beat: could not claim a periodic run (%s: %s)", type(exc).__name__, exc)
        return False


class LeaderLease:
    """This process's side of the lease: a thread that acquires or renews it, and the fence the
    scheduler reads before every send."""

    def __init__(self, lease_seconds: float, identity: BeatIdentity | None = None) -> None:
        self.timings = LeaseTimings(lease_seconds)
        self.identity = identity or BeatIdentity.of_this_process()
        self._changed = threading.Condition()
        self._term: int | None = None
        self._sends_until = 0.0
        # True once an attempt to take the lease found another beat holding it: this one stands by.
        self.another_leads = False
        self._loop_alive_at = time.monotonic()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection | None = None

    def start(self) -> None:
        """Starts the renewing thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="beat-lease", daemon=True)
            self._thread.start()

    def note_loop_alive(self) -> None:
        """Called by the scheduler at every tick: the lease is renewed only while ticks happen."""
        self._loop_alive_at = time.monotonic()

    def leading_term(self) -> int | None:
        """The term this beat leads under, or None when it must not send (standby, lost or fenced)."""
        with self._changed:
            return self._valid_term()

    def wait_for_leadership(self, timeout: float) -> bool:
        """Blocks up to `timeout` seconds until this beat leads."""
        with self._changed:
            return self._changed.wait_for(lambda: self._valid_term() is not None, timeout)

    def stop_and_release(self) -> None:
        """Stops renewing and hands the lease over at once (beat is shutting down)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(self.timings.renew_every)
        with self._changed:
            term, self._term, self._sends_until = self._term, None, 0.0
        if term is not None:
            try:
                release(self._connection(), self.identity, term)
                logger.info("beat: released the leader lease (term %s)", term)
            except psycopg.Error as exc:
                logger.warning("beat: could not release the leader lease, it expires by itself (%s)", exc)
        self._close_connection()

    def _valid_term(self) -> int | None:
        if self._term is not None and time.monotonic() < self._sends_until:
            return self._term
        return None

    def _run(self) -> None:
        while not self._stopping.is_set():
            started = time.monotonic()
            self._round(started)
            self._stopping.wait(max(0.0, self.timings.renew_every - (time.monotonic() - started)))

    def _round(self, started: float) -> None:
        if started - self._loop_alive_at > self.timings.stall_limit:
            logger.warning(
                "beat: the scheduler loop has not ticked for %.0f s; not holding the leader lease",
                started - self._loop_alive_at,
            )
            return
        term = self._term
        try:
            conn = self._connection()
            if term is None:
                new_term = try_acquire(conn, self.identity, self.timings.lease_seconds)
                self.another_leads = new_term is None
                if new_term is not None:
                    self._lead(new_term, started)
            elif renew(conn, self.identity, term, self.timings.lease_seconds):
                self._lead(term, started)
            else:
                self._lose(term)
        except psycopg.Error as exc:
            # Still the holder as far as anyone knows: the fence stops sending if this lasts.
            logger.warning("beat: leader lease not renewed, PostgreSQL unreachable (%s)", exc)
            self._close_connection()

    def _lead(self, term: int, renewal_started: float) -> None:
        with self._changed:
            if self._term != term:
                logger.info("beat: this beat leads now (term %s, %s)", term, self.identity.holder)
            self._term = term
            self._sends_until = renewal_started + self.timings.sends_for
            self._changed.notify_all()

    def _lose(self, term: int) -> None:
        with self._changed:
            self._term, self._sends_until = None, 0.0
        logger.warning("beat: another beat took the leader lease (our term %s); standing by", term)

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = _lease_connection(self.timings)
        return self._conn

    def _close_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _lease_connection(timings: LeaseTimings) -> psycopg.Connection:
    """A connection of the lease's own: renewals never queue behind the scheduler's queries, and a
    half-open connection (a host cut off) fails after `renew_every` instead of the kernel's minutes."""
    params = connections["default"].get_connection_params()
    for django_only in ("cursor_factory", "context"):
        params.pop(django_only, None)
    renew_ms = int(timings.renew_every * 1000)
    conn = psycopg.connect(
        **params,
        autocommit=True,
        application_name="certwright-beat-lease",
        tcp_user_timeout=renew_ms,
        keepalives=1,
        keepalives_idle=max(1, int(timings.renew_every)),
        keepalives_interval=1,
        keepalives_count=3,
    )
    conn.execute(f"SET statement_timeout = {renew_ms}")
    return conn
