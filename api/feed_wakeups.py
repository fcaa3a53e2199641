"""Wake-ups for the routers' long-poll (GET /routers/v1/changes?wait=N), from PostgreSQL's NOTIFY.

One thread per process holds one connection that LISTENs on two channels:
- certwright_served_changes: the feed's triggers (certificates migration 0010) notify each
  appended row's seq at commit. Every waiting request is woken and reads the feed again (a router
  scoped to other regions finds nothing and waits on).
- certwright_router_tokens: a router token revoked, deleted or re-scoped (api migration 0004). Only
  that token's waiting requests are woken; they check the token again and answer 401 if it is gone.

A waiting request costs an asyncio event in the feed service (the ASGI worker: no thread, no
database connection while it waits). Whenever the listening connection is (re)made, every waiter
is woken, since a notification may have been missed while it was down; no request polls.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from django.db import connections

logger = logging.getLogger(__name__)

SERVED_CHANNEL = "certwright_served_changes"
TOKENS_CHANNEL = "certwright_router_tokens"
CHANGED = "changed"
TOKEN = "token"  # noqa: S105 (a wake-up reason, not a secret)
# How long the listening thread waits for a notification before checking that its connection lives.
TICK_SECONDS = 5.0
RECONNECT_SECONDS = 1.0


class Waiter:
    """One waiting request: woken from the listening thread into its own event loop."""

    def __init__(self, token_id: int, loop: asyncio.AbstractEventLoop) -> None:
        self.token_id = token_id
        self._loop = loop
        self._event = asyncio.Event()
        self._reasons: set[str] = set()

    def wake(self, reason: str) -> None:
        """Called from the listening thread."""
        try:
            self._loop.call_soon_threadsafe(self._set, reason)
        except RuntimeError:  # the request's loop is closed: it is gone
            pass

    def _set(self, reason: str) -> None:
        self._reasons.add(reason)
        self._event.set()

    async def wait(self, timeout: float) -> set[str]:
        """The reasons it was woken for (empty: the time ran out)."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            pass
        reasons, self._reasons = self._reasons, set()
        self._event.clear()
        return reasons


class Listener:
    def __init__(self) -> None:
        self._waiters: set[Waiter] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def subscribe(self, token_id: int) -> Waiter:
        """A waiter for the running event loop, woken by every committed change and by changes of
        the token `token_id`. Subscribe BEFORE reading the feed, so no commit falls in between."""
        waiter = Waiter(token_id, asyncio.get_running_loop())
        with self._lock:
            self._waiters.add(waiter)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="feed-wakeups", daemon=True)
                self._thread.start()
        return waiter

    def unsubscribe(self, waiter: Waiter) -> None:
        with self._lock:
            self._waiters.discard(waiter)

    def _wake(self, reason: str, token_id: int | None = None) -> None:
        with self._lock:
            waiters = [w for w in self._waiters if token_id is None or w.token_id == token_id]
        for waiter in waiters:
            waiter.wake(reason)

    def _run(self) -> None:
        failing = False
        while True:
            try:
                self._listen()
                failing = False
            except Exception as exc:  # the database is down or the connection dropped
                if not failing:
                    logger.warning(
                        "the feed's wake-ups lost their database connection (%s); reconnecting", exc
                    )
                failing = True
                time.sleep(RECONNECT_SECONDS)

    def _listen(self) -> None:
        wrapper = connections["default"]
        conn = wrapper.get_new_connection(wrapper.get_connection_params())
        try:
            conn.autocommit = True
            conn.execute(f"LISTEN {SERVED_CHANNEL}")
            conn.execute(f"LISTEN {TOKENS_CHANNEL}")
            # Whatever committed while nobody listened: everyone reads the feed again.
            self._wake(CHANGED)
            while True:
                for notify in conn.notifies(timeout=TICK_SECONDS):
                    if notify.channel == TOKENS_CHANNEL:
                        try:
                            self._wake(TOKEN, int(notify.payload))
                        except ValueError:
                            continue
                    else:
                        self._wake(CHANGED)
                # A dead connection says so here, at the latest TICK_SECONDS after it died.
                conn.execute("SELECT 1")
        finally:
            conn.close()


LISTENER = Listener()
