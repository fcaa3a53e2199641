"""One bad row never stalls its chunk.

A chunk of claimed rows (domains to check, certificates to renew) is processed as a batch: a
constant number of queries and one burst of DNS for all of them. If one row makes that raise (a bug
its data triggers, a record the code cannot read), the batch is split in halves and each half tried
again, down to the row that raises alone: that row is set aside (its next attempt pushed forward,
the error recorded on it and logged) and every other row is processed as usual. One poison row costs
its chunk about log2(size) extra, smaller batches, once; it is not retried until its own next attempt.

PostgreSQL being unreachable (a restart, a failover) is nobody's row: it is raised at once, so the
task is retried whole (workers/db_sessions.py) instead of every row being split down and set aside
with an "internal error" and a counted failure.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

from workers.db_sessions import database_unreachable

logger = logging.getLogger(__name__)


def isolate_poison(
    ids: list[int],
    run: Callable[[list[int]], dict[str, int]],
    set_aside: Callable[[int, str], None],
) -> dict[str, int]:
    """`run(ids)` for the whole batch; if it raises, for each half, recursively; a single id that
    raises goes to `set_aside(id, problem)`. Returns the summed counts, with "set_aside"."""
    try:
        return run(ids)
    except Exception as exc:
        if database_unreachable(exc):
            raise
        if len(ids) == 1:
            problem = f"internal error while processing it ({type(exc).__name__}: {exc})"[:500]
            logger.exception("row %s set aside: %s", ids[0], problem)
            try:
                set_aside(ids[0], problem)
            except Exception:
                logger.exception("row %s could not be set aside; its lease expiry retries it", ids[0])
            return {"set_aside": 1}
        logger.warning("a batch of %d raised (%s): splitting it to find the row", len(ids), exc)
    middle = len(ids) // 2
    total: Counter[str] = Counter()
    for half in (ids[:middle], ids[middle:]):
        total.update(isolate_poison(half, run, set_aside))
    return dict(total)
