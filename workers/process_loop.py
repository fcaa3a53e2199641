"""One asyncio event loop and one aiohttp session per worker process, kept from one task to the
next (the ARI checks' and the webhook deliveries' keep-alive connections outlive a chunk: each new
one is a TLS handshake, or at least a connection, on both sides). Made afresh in a forked child,
and after a run that raised (a time limit or a bug mid-way may leave coroutines half-way)."""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

logger = logging.getLogger(__name__)


class ProcessLoop:
    def __init__(self, name: str) -> None:
        self.name = name
        self.state: dict[str, Any] = {}

    def run(self, coroutine_factory: Callable[[], Awaitable]):
        """The coroutine made by `coroutine_factory`, run to its end on this process's loop."""
        if self.state.get("pid") != os.getpid() or self.state["loop"].is_closed():
            self.state.clear()
            self.state.update(pid=os.getpid(), loop=asyncio.new_event_loop(), session=None, key=None)
            # Closed at the process's exit (a worker's shutdown), not left to the garbage collector.
            atexit.register(self.discard)
        try:
            return self.state["loop"].run_until_complete(coroutine_factory())
        except BaseException:
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
        loop, session = self.state.get("loop"), self.state.get("session")
        self.state.clear()
        if loop is None or loop.is_closed():
            return
        try:
            for task in asyncio.all_tasks(loop):
                task.cancel()
            if session is not None and not session.closed:
                loop.run_until_complete(session.close())
        except Exception:
            logger.debug("could not close the %s client cleanly", self.name, exc_info=True)
        finally:
            loop.close()
