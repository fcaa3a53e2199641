"""Named crash points for the crash-recovery tests: a process started with
CERTWRIGHT_FAILPOINTS=name[,name] kills its own process group with SIGKILL when it reaches one,
exactly as a machine dying there would. Unset (always, outside those tests) it costs a set lookup.
"""

from __future__ import annotations

import os
import signal

_ACTIVE = frozenset(filter(None, (n.strip() for n in os.environ.get("CERTWRIGHT_FAILPOINTS", "").split(","))))


def failpoint(name: str) -> None:
    if name in _ACTIVE:
        os.killpg(os.getpgrp(), signal.SIGKILL)
