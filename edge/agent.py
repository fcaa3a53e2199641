"""The agent: follows the feed into the store, picks each name's certificate by the router's clock, and
drives the router.

Two threads share one lock (a Condition) that guards the in-memory index, the boundary heap and every
driver call, so the driver sees one call at a time, in order:
- the sync thread long-polls the feed, writes each change to the store, re-selects the changed names
  (calling the driver for those whose choice changed), then writes the cursor;
- the timer thread sleeps until the next boundary of any name (a heap of not_before/not_after moments)
  and re-selects the names due then, so a custom certificate expiring at T gives way to Let's Encrypt's
  at T even while the long-poll waits or Certwright is down. It also retries names the driver refused.

In memory: per name, its candidates' fingerprints and windows (no PEM); PEMs are read from the store
when the driver needs one.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping

from edge.drivers import Driver, DriverError, Served
from edge.feed import CursorAhead, Feed, FeedError, FeedUnauthorized, FeedUnavailable, SnapshotName
from edge.names import BadName, check_name
from edge.selection import (
    BadCandidate,
    Candidate,
    next_boundary,
    parse_candidates,
    select,
    to_datetime,
    to_iso,
)
from edge.store import Store, StoreError

log = logging.getLogger("certwright.edge")

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 10.0
UNAUTHORIZED_RETRY = 60.0
DRIVER_RETRY_MAX = 60.0


class Stopped(Exception):
    """The agent was asked to stop."""


class ServedSet(Mapping):
    """name -> Served for the names that serve something now; each PEM read from the store when the
    driver asks for it, so starting a driver on 100,000 names never holds 100,000 keys in memory."""

    def __init__(self, store: Store, chosen: dict[str, Candidate]) -> None:
        self._store = store
        self._chosen = chosen

    def __getitem__(self, name: str) -> Served:
        return served_of(self._store, name, self._chosen[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self._chosen)

    def __len__(self) -> int:
        return len(self._chosen)

    def __contains__(self, name: object) -> bool:
        return name in self._chosen

    def fingerprint_of(self, name: str) -> str:
        """The fingerprint of `name`'s certificate, without reading its PEM."""
        return self._chosen[name].fingerprint

    def fingerprints(self) -> dict[str, str]:
        return {name: candidate.fingerprint for name, candidate in self._chosen.items()}


def served_of(store: Store, name: str, candidate: Candidate) -> Served:
    return Served(
        name=name,
        fingerprint=candidate.fingerprint,
        source=candidate.source,
        not_before=to_datetime(candidate.not_before),
        not_after=to_datetime(candidate.not_after),
        pem=store.read_pem(name, candidate.fingerprint),
    )


class Agent:
    def __init__(
        self,
        feed: Feed,
        store: Store,
        driver: Driver,
        *,
        wait: int = 55,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.feed = feed
        self.store = store
        self.driver = driver
        self.wait = wait
        self.clock = clock
        self.lock = threading.Condition()
        self.stopping = threading.Event()
        self.index: dict[str, tuple[Candidate, ...]] = {}
        self.applied: dict[str, str] = {}  # name -> fingerprint the router serves (absent: nothing)
        self.heap: list[tuple[float, str]] = []  # (boundary, name); stale entries skipped on pop
        self.scheduled: dict[str, float] = {}  # name -> its next boundary (the heap entry that counts)
        self.retry: dict[str, tuple[float, float]] = {}  # name -> (when, delay) after a driver error
        self.started = False
        self.feed_state = "starting"
        self.cursor: int | None = None
        self.timer: threading.Thread | None = None

    # -- life cycle --------------------------------------------------------------------------------

    def run(self) -> None:
        """Load the store (or take a snapshot), start the driver, then follow the feed until stopped."""
        try:
            self.boot()
            self.timer = threading.Thread(target=self._timer_loop, name="edge-timer", daemon=True)
            self.timer.start()
            self._sync_loop()
        except Stopped:
            pass

    def stop(self) -> None:
        self.stopping.set()
        with self.lock:
            self.lock.notify_all()

    def close(self) -> None:
        """Stop, then close the driver (after any call in progress) and the feed."""
        self.stop()
        with self.lock:
            if self.started:
                self.driver.close()
                self.started = False
        self.feed.close()

    def _sleep(self, seconds: float) -> None:
        if self.stopping.wait(seconds):
            raise Stopped

    def boot(self) -> None:
        with self.lock:
            self.index = dict(self.store.load())
            self.cursor = self.store.cursor()
        if self.cursor is None:
            log.info("the store at %s has no cursor: taking a snapshot", self.store.root)
            self._snapshot_until_done()
        else:
            log.info(
                "loaded %d names from %s, resuming after cursor %d",
                len(self.index),
                self.store.root,
                self.cursor,
            )
        self._start_driver()

    def _start_driver(self) -> None:
        delay = BACKOFF_FIRST
        while True:
            with self.lock:
                now = self.clock()
                chosen = {}
                for name, candidates in self.index.items():
                    candidate = select(candidates, now)
                    if candidate is not None:
                        chosen[name] = candidate
                served = ServedSet(self.store, chosen)
                try:
                    self.driver.start(served)
                except (DriverError, StoreError) as error:
                    log.error("the driver could not start: %s; retrying in %.0f s", error, delay)
                else:
                    self.applied = served.fingerprints()
                    self.started = True
                    self.heap, self.scheduled = [], {}
                    for name in self.index:
                        self._schedule(name, now)
                    log.info("the router serves %d names", len(self.applied))
                    return
            self._sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    # -- the feed ----------------------------------------------------------------------------------

    def _feed_state(self, state: str, message: str, level: int = logging.WARNING) -> None:
        """Logs a feed problem or recovery once per change of state, not on every retry."""
        if state != self.feed_state:
            self.feed_state = state
            log.log(level, message)

    def _snapshot_until_done(self) -> None:
        delay = BACKOFF_FIRST
        while True:
            try:
                self.take_snapshot()
                return
            except FeedUnauthorized as error:
                self._feed_state(
                    "unauthorized", f"{error}: check the token; retrying every 60 s", logging.ERROR
                )
                self._sleep(UNAUTHORIZED_RETRY)
            except FeedUnavailable as error:
                self._feed_state("down", f"{error}; serving from the store, retrying with backoff")
                self._sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
            except FeedError as error:
                self._feed_state("bad", f"the snapshot failed: {error}; retrying", logging.ERROR)
                self._sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)

    def take_snapshot(self) -> None:
        """Stream the snapshot into a new store generation and publish it once the end line arrived;
        then serve from it (names it does not list are removed)."""
        started = time.monotonic()
        stream = self.feed.snapshot()
        new_index: dict[str, tuple[Candidate, ...]] = {}
        with self.store.begin_snapshot() as writer:
            cursor = next(stream)
            for item in stream:
                if self.stopping.is_set():
                    raise Stopped
                assert isinstance(item, SnapshotName)
                parsed = self._parse(item.name, item.candidates)
                if parsed is None:
                    continue
                name, candidates, pems = parsed
                writer.put(name, candidates, pems)
                if candidates:
                    new_index[name] = candidates
            with self.lock:
                writer.commit(cursor)
                old = self.index
                self.index = new_index
                self.cursor = cursor
                if self.started:
                    now = self.clock()
                    self.heap, self.scheduled = [], {}
                    for name in old.keys() | new_index.keys():
                        self._reselect(name, now)
                        self._schedule(name, now)
        self._feed_state("ok", f"connected to {self.feed.base_url}", logging.INFO)
        log.info(
            "snapshot: %d names at cursor %d in %.1f s", len(new_index), cursor, time.monotonic() - started
        )

    def _parse(self, name: object, raw: object) -> tuple[str, tuple[Candidate, ...], tuple[str, ...]] | None:
        """A feed entry checked; None (logged) when the name or a candidate is malformed."""
        try:
            name = check_name(name)
            candidates, pems = parse_candidates(raw)
        except (BadName, BadCandidate) as error:
            log.error("skipped a feed entry for %s: %s", str(name)[:80], error)
            return None
        return name, candidates, pems

    def _sync_loop(self) -> None:
        delay = BACKOFF_FIRST
        while not self.stopping.is_set():
            try:
                page = self.feed.changes(self.cursor, wait=self.wait)
            except CursorAhead as error:
                log.warning("%s: taking a snapshot", error)
                self._snapshot_until_done()
                continue
            except FeedUnauthorized as error:
                self._feed_state(
                    "unauthorized",
                    f"{error}: check the token; the router keeps serving, retrying every 60 s",
                    logging.ERROR,
                )
                self._sleep(UNAUTHORIZED_RETRY)
                continue
            except FeedUnavailable as error:
                self._feed_state("down", f"{error}; serving from the store, retrying with backoff")
                self._sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            except FeedError as error:
                self._feed_state("bad", f"{error}; retrying", logging.ERROR)
                self._sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            delay = BACKOFF_FIRST
            self._feed_state("ok", f"connected to {self.feed.base_url}, following changes", logging.INFO)
            self.apply_changes(page.cursor, page.changes)

    def apply_changes(self, cursor: int, changes: list) -> None:
        """Store each change, re-select its name (the driver hears of changed choices), then move the
        cursor: a crash in between replays the changes, which is harmless."""
        updates = []
        for change in changes:
            if not isinstance(change, dict):
                log.error("skipped a change that is not a JSON object")
                continue
            parsed = self._parse(change.get("name"), change.get("candidates"))
            if parsed is None:
                continue
            name, candidates, pems = parsed
            self.store.put(name, candidates, pems)
            updates.append((name, candidates))
        if updates:
            self.store.sync()
        with self.lock:
            now = self.clock()
            for name, candidates in updates:
                if candidates:
                    self.index[name] = candidates
                else:
                    self.index.pop(name, None)
                if self.started:
                    self._reselect(name, now)
                    self._schedule(name, now)
            self.lock.notify_all()
        self.store.write_cursor(cursor)
        self.cursor = cursor

    # -- selection and the driver (callers hold the lock) --------------------------------------------

    def _schedule(self, name: str, now: float) -> None:
        boundary = next_boundary(self.index.get(name, ()), now)
        if boundary is None:
            self.scheduled.pop(name, None)
            return
        if self.scheduled.get(name) == boundary:
            return
        self.scheduled[name] = boundary
        heapq.heappush(self.heap, (boundary, name))
        if len(self.heap) > 2 * len(self.scheduled) + 1024:
            self.heap = [(when, n) for n, when in self.scheduled.items()]
            heapq.heapify(self.heap)

    def _reselect(self, name: str, now: float, due: float | None = None) -> None:
        candidate = select(self.index.get(name, ()), now)
        fingerprint = candidate.fingerprint if candidate else None
        if self.applied.get(name) == fingerprint and name not in self.retry:
            return
        try:
            served = served_of(self.store, name, candidate) if candidate else None
            self.driver.apply(name, served)
        except (DriverError, StoreError) as error:
            self._driver_failed(name, str(error), now)
            return
        except Exception as error:  # a driver's bug must not stop the agent; its text may be anything
            self._driver_failed(name, f"{type(error).__name__} in the driver", now)
            return
        self.retry.pop(name, None)
        applied_at = self.clock()
        if fingerprint is None:
            self.applied.pop(name, None)
            what = "nothing"
        else:
            self.applied[name] = fingerprint
            what = f"{fingerprint[:16]} ({candidate.source}, until {to_iso(candidate.not_after)})"
        if due is None:
            log.info("applied %s: %s", name, what)
        else:
            log.info(
                "switched %s to %s at %s (due %s)",
                name,
                what,
                to_iso(applied_at),
                to_iso(due),
            )

    def _driver_failed(self, name: str, message: str, now: float) -> None:
        _, delay = self.retry.get(name, (0.0, 0.0))
        delay = min(max(delay * 2, BACKOFF_FIRST), DRIVER_RETRY_MAX)
        self.retry[name] = (now + delay, delay)
        log.error("the driver could not apply %s: %s; retrying in %.0f s", name, message, delay)
        self.lock.notify_all()

    # -- the timer ---------------------------------------------------------------------------------

    def _timer_loop(self) -> None:
        with self.lock:
            while not self.stopping.is_set():
                now = self.clock()
                while self.heap and self.heap[0][0] <= now:
                    due, name = heapq.heappop(self.heap)
                    if self.scheduled.get(name) != due:
                        continue
                    del self.scheduled[name]
                    self._reselect(name, now, due=due)
                    self._schedule(name, now)
                for name, (when, _) in list(self.retry.items()):
                    if when <= now:
                        self._reselect(name, now)
                moments = [when for when, _ in self.retry.values()]
                if self.heap:
                    moments.append(self.heap[0][0])
                wake = min(moments, default=now + 30.0)
                self.lock.wait(timeout=max(0.0, min(wake - self.clock(), 30.0)))
