"""Beat's scheduler: django-celery-beat's DatabaseScheduler, sending only while this beat leads.

Every beat process runs the same loop; the leader lease (workers/beat_lease.py) decides which one
sends. A standby ticks without touching the schedule, waiting for the lease; when a beat starts to
lead under a new term it re-reads the whole schedule from PostgreSQL, because the previous leader
claimed its runs there. Each send is claimed in PostgreSQL right before it is published, and the
message carries the term and the claimed run time in its headers (`beat_leader_term`,
`beat_run_at`), so a worker's log or Flower tells which leader sent what.
"""

from __future__ import annotations

import datetime
import logging
import time
from functools import partial

from django.conf import settings
from django.db import DatabaseError, InterfaceError, close_old_connections
from django_celery_beat.schedulers import DatabaseScheduler

from workers.beat_lease import LeaderLease, claim_periodic_run
from workers.heartbeat import stamp_from_beat
from workers.models import Heartbeat

logger = logging.getLogger(__name__)


class LeaderScheduler(DatabaseScheduler):
    """CELERY_BEAT_SCHEDULER: safe to run on several hosts at once (one leader, standbys)."""

    def __init__(self, *args, **kwargs) -> None:
        # Not started here: `celery beat` also builds a lazy scheduler just to print its banner.
        self.lease = LeaderLease(settings.BEAT_LEADER_LEASE_SECONDS)
        self._led_term: int | None = None
        self._standby_stamped_at: float | None = None
        super().__init__(*args, **kwargs)
        # Ticks at least as often as the lease is renewed, so the loop never looks stalled.
        self.max_interval = min(self.max_interval, self.lease.timings.renew_every)

    @property
    def info(self) -> str:
        timings = self.lease.timings
        return (
            f"    . leader lease -> {timings.lease_seconds:g}s, django-celery-beat's DatabaseScheduler"
            f" sends only while it leads; a standby takes over within {timings.takeover_bound:g}s"
        )

    def tick(self, *args, **kwargs) -> float:
        self.lease.start()
        self.lease.note_loop_alive()
        term = self.lease.leading_term()
        if term is None:
            self._led_term = None
            if self.lease.another_leads:
                self._stamp_standby()
            self.lease.wait_for_leadership(self.max_interval)
            return 0
        if term != self._led_term:
            try:
                self._read_schedule_afresh()
            except (DatabaseError, InterfaceError) as exc:
                # Beat's loop must not die of it; the next tick reads again.
                logger.warning("beat: could not read the schedule (%s: %s)", type(exc).__name__, exc)
                return self.max_interval
            self._led_term = term
        return super().tick(*args, **kwargs)

    def reserve(self, entry):
        # The claim in apply_entry writes last_run_at and the run count: nothing is left for sync().
        return next(entry)

    def apply_entry(self, entry, producer=None) -> None:
        term = self._led_term
        run_at = entry.model.last_run_at  # set by reserve() on the model the entries share
        claimed = (
            term is not None
            and self.lease.leading_term() == term
            and claim_periodic_run(self.lease.identity, term, entry.model.pk, run_at)
        )
        # Checked again right before publishing: the claim itself may have waited on PostgreSQL.
        if not claimed or self.lease.leading_term() != term:
            logger.warning("beat: not sending %s, this beat does not lead (term %s)", entry.name, term)
            # Whatever this beat holds in memory may be stale now; read it all again if it leads again.
            self._led_term = None
            return
        headers = {**entry.options.get("headers", {}), "beat_leader_term": term}
        entry.options = {
            **entry.options,
            "headers": {**headers, "beat_run_at": run_at.isoformat()},
            # The broker publish retries on connection errors: each retry happens only while this
            # beat still leads, or a message could leave long after a standby took over.
            "retry_policy": {"errback": partial(self._retry_only_while_leading, term)},
        }
        super().apply_entry(entry, producer=producer)

    def _retry_only_while_leading(self, term: int, exc: Exception, interval: float) -> None:
        if self.lease.leading_term() != term:
            raise exc

    def close(self) -> None:
        super().close()
        self.lease.stop_and_release()

    def _read_schedule_afresh(self) -> None:
        close_old_connections()
        self._dirty.clear()
        self._schedule = self.all_as_schedule()
        self._initial_read = False
        self._last_full_sync = datetime.datetime.now()
        self._heap = None

    def _stamp_standby(self) -> None:
        now = time.monotonic()
        last = self._standby_stamped_at
        if last is None or now - last >= self.lease.timings.lease_seconds:
            self._standby_stamped_at = now
            # A standby runs no scheduler query that would otherwise replace a broken connection.
            close_old_connections()
            stamp_from_beat(Heartbeat.Source.BEAT_STANDBY)
