"""One asyncio event loop and one aiohttp session per worker process, kept from one task to the
next (the ARI checks' and the webhook deliveries' keep-alive connections outlive a chunk: each new
one is a TLS handshake, or at least a connection, on both sides). The loop runs in a thread of its
own, so that requests a task started can stay in flight while the task goes on with its database
work (the webhook runs: a slow endpoint's requests finish in a later batch); `run` waits for a
coroutine's end. Made afresh in a forked child, and after a run that raised (a time limit or a bug
mid-way may leave coroutines half-way)."""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

logger = logging.getLogger(__name__)

# How long discard() waits for the loop to cancel its tasks and close its session.
_CLOSE_SECONDS = 5.0


class ProcessLoop:
    def __init__(self, name: str) -> None:
        self.name = name
        self.state: dict[str, Any] = {}

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """This process's loop, running in its own thread (started on first use)."""
        if self.state.get("pid") != os.getpid() or self.state["loop"].is_closed():
            self.state.clear()
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name=f"{self.name}-loop", daemon=True)
            thread.start()
            self.state.update(pid=os.getpid(), loop=loop, thread=thread, session=None, key=None)
            # Closed at the process's exit (a worker's shutdown), not left to the garbage collector.
            atexit.register(self.discard)
        return self.state["loop"]

    def run(self, coroutine_factory: Callable[[], Awaitable]):
        """The coroutine made by `coroutine_factory`, run to its end on this process's loop."""

        async def run():
            return await coroutine_factory()

        future = asyncio.run_coroutine_threadsafe(run(), self.loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            self.discard()
            raise

    async def session(self, key: Any, make: Callable[[], aiohttp.ClientSession]) -> aiohttp.ClientSession:
        """This process's session while `key` (the settings it was made from) stays the same."""
        session = self.state.get("session")
        if session is not None and not session.closed and self.state.get("key") == key:
            return session
        if session is not None and not session.closed:
            await session.close()
        session = make()
        self.state.update(session=session, key=key)
        return session

    def discard(self) -> None:
        """Cancels what runs on the loop, closes the session and stops the loop's thread."""
        loop, thread, session = self.state.get("loop"), self.state.get("thread"), self.state.get("session")
        pid = self.state.get("pid")
        self.state.clear()
        if loop is None or loop.is_closed() or pid != os.getpid():
            return

        async def close() -> None:
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            # Each cancelled task ends (its `finally` runs) before the session closes under it.
            await asyncio.gather(*tasks, return_exceptions=True)
            if session is not None and not session.closed:
                await session.close()

        try:
            asyncio.run_coroutine_threadsafe(close(), loop).result(timeout=_CLOSE_SECONDS)
        except Exception:
            logger.debug("could not close the %s client cleanly", self.name, exc_info=True)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=_CLOSE_SECONDS)
            if not thread.is_alive():
                loop.close()
