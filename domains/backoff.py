"""When to try again after consecutive failures: 1, 2, 4, ... minutes, then once a day."""

from __future__ import annotations

import datetime

BASE = datetime.timedelta(seconds=60)
CAP = datetime.timedelta(seconds=86400)


def retry_delay(consecutive_failures: int) -> datetime.timedelta:
    """The wait after the n-th consecutive failure: min(60 s * 2**(n-1), 86400 s); zero before any."""
    if consecutive_failures <= 0:
        return datetime.timedelta(0)
    # 2**17 minutes is already past the cap; clamping the exponent keeps huge n cheap.
    exponent = min(consecutive_failures - 1, 17)
    return min(BASE * (2**exponent), CAP)
