"""A CA outage on demand: for a given time the proxy answers every ACME request with a 500
(`serverInternal`, as Boulder does when a backend is down), holds it unanswered (a CA that times
out), or, `mixed`, does one then the other in turn; then it serves normally again. The control
API's own requests are never affected."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any

from devstack.acme_proxy.documents import Response, problem

OUTAGE_MODES = ("error", "hang", "mixed")


class CaOutage:
    """`start(mode, seconds)` begins an outage, `end()` ends it early; `answer()` is what the proxy
    sends instead of forwarding while one lasts (None when there is none)."""

    def __init__(self) -> None:
        self.mode = ""
        self.until = 0.0
        self.requests_failed = 0

    def start(self, mode: str, seconds: float) -> None:
        if mode not in OUTAGE_MODES:
            raise ValueError(f"mode is one of {', '.join(OUTAGE_MODES)}, not {mode!r}")
        self.mode, self.until = mode, time.monotonic() + seconds

    def end(self) -> None:
        self.mode, self.until = "", 0.0

    def remaining(self) -> float:
        return max(0.0, self.until - time.monotonic()) if self.mode else 0.0

    def answer(self) -> Response | Coroutine[Any, Any, Response] | None:
        if self.remaining() <= 0:
            return None
        self.requests_failed += 1
        if self.mode == "error" or (self.mode == "mixed" and self.requests_failed % 2):
            return problem(500, "serverInternal", "the CA is unavailable (a test outage)")
        return self._hold()

    async def _hold(self) -> Response:
        # Nothing is answered while the outage lasts: clients time out on their own clock. One still
        # waiting when it ends gets a gateway timeout, never a late answer from Pebble.
        while self.remaining() > 0:
            await asyncio.sleep(min(self.remaining(), 1.0))
        return problem(504, "serverInternal", "the CA did not answer in time (a test outage)")
