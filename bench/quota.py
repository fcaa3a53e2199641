"""Quota decisions per second: Certwright's GCRA script against a no-op script and the `limits` library.

One private redis-server, one client in this process (a single connection, no pipelining), one call
of the public function per decision, 1,000 buckets and about half the spends granted:

(a) noop_lua: EVALSHA of a script that only returns 1, called as `Quota` calls its own
    (`client.evalsha`), with exactly the KEYS and ARGV Certwright's spend (and refund) sends, built
    before the clock starts. The floor of any design that decides inside Redis with one round trip.
(b) limits_moving: the `limits` library's moving window (RedisStorage, MovingWindowRateLimiter,
    5 per 7 days), one `hit` per decision. It has no refund, so its last 1,000 calls are hits too.
(c) certwright: `Quota.spend(reservation, [bucket])` on durable buckets shaped like Let's
    Encrypt's registered-domain bucket but holding 5 tokens, then `Quota.refund` of one granted
    reservation per bucket. A warm-up `peek` over every bucket first seeds them (the `rebuild`
    callback reports no history), as they are in the steady state. A denied spend books the
    bucket's next token for its reservation (waiters are served in order), so it writes too.

Each series: 10 rounds of one decision per bucket in bucket order (a fresh reservation per spend),
so each bucket grants its first 5 and denies the next 5, then 1,000 refund-shaped calls: 11,000
decisions. The series run in interleaved blocks on a flushed Redis, each block all three back to
back in a rotating order (a b c, b c a, c a b, ...), so that noise on a shared machine falls on all
three alike and no series always runs first. Each series reports its median block; the ratios are
the medians of each block's own ratio (the pair ran within a few seconds of each other, so the
machine's drift between blocks cancels; the ratio of the medians is printed beside them). Each
block also shows Redis' own time per EVALSHA (INFO commandstats), which separates what a script
costs inside the server from the round trip and the client's Python.

Correctness under load, with Certwright's Quota: 500 spends at once on one fresh bucket of 50 from
threads in several forked processes, each thread with its own client, must grant exactly 50; then
50 refunds of 10 granted reservations (each 5 times), also at once, must apply exactly 10 and leave
the bucket full. A wrong correctness figure makes the exit status 1; a missed target does not.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent))

import redis
from _harness import ROOT, median, say
from limits import RateLimitItemPerDay
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter

from devstack.ports import free_port
from devstack.redis_server import start_redis
from domains.quota import SINCE_KEY, Bucket, Quota

BUCKETS = 1_000
ROUNDS = 10
CAPACITY = 5
WEEK_US = 604_800_000_000
# Let's Encrypt's new-certificates-per-registered-domain bucket: 50 a week, one back every 3.36 hours.
LE_CAPACITY = 50
LE_INTERVAL_US = 12_096_000_000
CONCURRENT_SPENDS = 500
PROCESSES = 4
THREADS_PER_PROCESS = 5
REFUNDED = 10
REFUNDS_EACH = 5


def bench_bucket(series: str, i: int) -> Bucket:
    # A registered domain's bucket (durable: rebuilt from PostgreSQL if Redis lost it), holding 5.
    return Bucket(
        f"quota:bench:{series}:rd:{i}",
        CAPACITY,
        WEEK_US // CAPACITY,
        durable=True,
        subject=f"d{i}.example.com",
    )


def reservations(block: int) -> list[list[str]]:
    """A fresh reservation id for every spend of a block: [round][bucket]."""
    return [[f"bench-{block}-{r}-{i}" for i in range(BUCKETS)] for r in range(ROUNDS)]


# --- the three series ---------------------------------------------------------------------------


class Block(NamedTuple):
    decisions: int
    seconds: float
    granted: int  # spends granted, of ROUNDS * BUCKETS
    # Redis' own time per EVALSHA (INFO commandstats): what the script costs inside the server, as
    # opposed to the round trip and the client's Python.
    server_us: float


def start_clock(client: redis.Redis) -> float:
    client.config_resetstat()
    return time.perf_counter()


def server_us_per_call(client: redis.Redis) -> float:
    return float(client.info("commandstats").get("cmdstat_evalsha", {}).get("usec_per_call", 0.0))


def run_noop(client: redis.Redis, block: int) -> Block:
    sha = client.script_load("return 1")
    buckets = [bench_bucket("noop", i) for i in range(BUCKETS)]
    ids = reservations(block)
    # The very KEYS and ARGV Quota.spend and Quota.refund send, built before the clock starts, and
    # the same call (EVALSHA through the client): the floor is the call alone.
    spends = [
        ([SINCE_KEY, bucket.key], ["spend", "", rid, *bucket.spend_args()])
        for row in ids
        for rid, bucket in zip(row, buckets, strict=True)
    ]
    refunds = [
        ([SINCE_KEY, bucket.key], ["refund", "", rid, bucket.interval_us])
        for rid, bucket in zip(ids[0], buckets, strict=True)
    ]
    evalsha = client.evalsha
    started = start_clock(client)
    for keys, args in spends:
        evalsha(sha, len(keys), *keys, *args)
    for keys, args in refunds:
        evalsha(sha, len(keys), *keys, *args)
    elapsed = time.perf_counter() - started
    return Block(len(spends) + len(refunds), elapsed, 0, server_us_per_call(client))


def run_limits(client: redis.Redis, url: str, block: int) -> Block:
    storage = RedisStorage(url, key_prefix="bench-limits")
    limiter = MovingWindowRateLimiter(storage)
    # 5 a week, as the buckets of the other series (limits 5.8 has no per-week item: 7 days).
    item = RateLimitItemPerDay(CAPACITY, multiples=7)
    ids = [f"rd:{i}" for i in range(BUCKETS)]
    limiter.hit(item, "warm-up")  # loads the script
    granted = 0
    started = start_clock(client)
    for _ in range(ROUNDS):
        for bucket_id in ids:
            granted += limiter.hit(item, bucket_id)
    # No refund in `limits`: the 1,000 calls Certwright spends on refunds are hits (all denied) here.
    for bucket_id in ids:
        limiter.hit(item, bucket_id)
    elapsed = time.perf_counter() - started
    storage.get_connection().close()
    return Block(ROUNDS * BUCKETS + BUCKETS, elapsed, granted, server_us_per_call(client))


def run_certwright(client: redis.Redis, block: int) -> Block:
    quota = Quota(client, rebuild=lambda bucket: 0)
    buckets = [[bench_bucket("certwright", i)] for i in range(BUCKETS)]
    ids = reservations(block)
    # quota:since was just flushed, so every durable bucket counts as possibly lost: peek has each
    # rebuilt (no history) and stored, which is how buckets look in the steady state.
    for one in buckets:
        quota.peek(one[0])
    granted = refunded = 0
    started = start_clock(client)
    for row in ids:
        for rid, one in zip(row, buckets, strict=True):
            granted += quota.spend(rid, one).granted
    for rid, one in zip(ids[0], buckets, strict=True):
        refunded += quota.refund(rid, one)
    elapsed = time.perf_counter() - started
    if refunded != BUCKETS:
        raise SystemExit(f"VOID: {refunded} of {BUCKETS} refunds of granted reservations applied")
    return Block(ROUNDS * BUCKETS + BUCKETS, elapsed, granted, server_us_per_call(client))


# --- correctness under load --------------------------------------------------------------------------


def _thread_worker(
    port: int, job: Callable[[Quota, int], int], items: list[int], sync, results: list
) -> None:
    # Each thread its own client and Quota, as each worker process has in production.
    ready, go = sync
    client = redis.Redis(host="127.0.0.1", port=port)
    quota = Quota(client)
    client.ping()
    ready.release()
    go.wait()
    results.append(sum(job(quota, item) for item in items))
    client.close()


def _process_worker(port: int, job, shares: list[list[int]], sync, out) -> None:
    results: list[int] = []
    threads = [
        threading.Thread(target=_thread_worker, args=(port, job, share, sync, results)) for share in shares
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out.put(sum(results) if len(results) == len(shares) else -1)


def at_once(port: int, job: Callable[[Quota, int], int], items: list[int]) -> int:
    """Runs `job` over `items` from PROCESSES forked processes of THREADS_PER_PROCESS threads, all
    released together; returns the sum of what the calls returned."""
    context = multiprocessing.get_context("fork")
    # `ready` counts threads connected and waiting; `go` releases them all at once.
    ready, go = context.Semaphore(0), context.Event()
    out = context.Queue()
    workers = PROCESSES * THREADS_PER_PROCESS
    # Interleaved shares, so that every process holds a share of each kind of item.
    shares = [items[w::workers] for w in range(workers)]
    processes = [
        context.Process(
            target=_process_worker,
            args=(
                port,
                job,
                shares[p * THREADS_PER_PROCESS : (p + 1) * THREADS_PER_PROCESS],
                (ready, go),
                out,
            ),
        )
        for p in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    try:
        if not all(ready.acquire(timeout=30) for _ in range(workers)):
            raise SystemExit("VOID: the threads of the concurrency check did not all connect")
        go.set()
        totals = [out.get(timeout=60) for _ in processes]
    finally:
        go.set()
        for process in processes:
            process.join(10)
            if process.is_alive():
                process.kill()
    if any(total < 0 for total in totals) or any(process.exitcode != 0 for process in processes):
        raise SystemExit("VOID: a thread of the concurrency check failed (see its traceback above)")
    return sum(totals)


SPEND_BUCKET = Bucket("quota:bench:concurrent:spend", LE_CAPACITY, LE_INTERVAL_US)
REFUND_BUCKET = Bucket("quota:bench:concurrent:refund", LE_CAPACITY, LE_INTERVAL_US)


def _spend(quota: Quota, i: int) -> int:
    return int(quota.spend(f"concurrent-{i}", [SPEND_BUCKET]).granted)


def _refund(quota: Quota, i: int) -> int:
    return int(quota.refund(f"refund-{i}", [REFUND_BUCKET]))


def check_correctness(client: redis.Redis, port: int) -> tuple[int, int, list[str]]:
    client.flushdb()
    failures = []
    granted = at_once(port, _spend, list(range(CONCURRENT_SPENDS)))
    say(
        f"    {CONCURRENT_SPENDS} spends at once on a bucket of {LE_CAPACITY} "
        f"({PROCESSES} processes x {THREADS_PER_PROCESS} threads): {granted} granted"
    )
    if granted != LE_CAPACITY:
        failures.append(f"{granted} of {CONCURRENT_SPENDS} spends granted, not {LE_CAPACITY}")

    quota = Quota(client)
    spent = sum(quota.spend(f"refund-{i}", [REFUND_BUCKET]).granted for i in range(REFUNDED))
    before = quota.peek(REFUND_BUCKET)
    if spent != REFUNDED or before.tokens_left != LE_CAPACITY - REFUNDED:
        failures.append(f"{spent} of {REFUNDED} setup spends granted, {before.tokens_left} tokens left")
    applied = at_once(port, _refund, [i for i in range(REFUNDED) for _ in range(REFUNDS_EACH)])
    after = quota.peek(REFUND_BUCKET)
    say(
        f"    {REFUNDED * REFUNDS_EACH} refunds at once of {REFUNDED} granted reservations "
        f"({REFUNDS_EACH} each): {applied} applied; tokens {before.tokens_left} -> {after.tokens_left}"
        f" of {LE_CAPACITY}"
    )
    if applied != REFUNDED:
        failures.append(f"{applied} of {REFUNDED * REFUNDS_EACH} duplicate refunds applied, not {REFUNDED}")
    if after.tokens_left != LE_CAPACITY or after.next_token_in_us != 0:
        failures.append(f"after the refunds the bucket is not full: {after}")
    return granted, applied, failures


# --- the run -------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", type=int, default=9, help="timed blocks per series, interleaved")
    args = parser.parse_args()

    state_dir = Path(tempfile.mkdtemp(prefix="certwright-bench-quota-"))
    port = free_port()
    server = start_redis("redis", port, state_dir / "logs")
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis(host="127.0.0.1", port=port)
    rates: dict[str, list[float]] = {"noop_lua": [], "limits_moving": [], "certwright": []}
    server_us: dict[str, list[float]] = {name: [] for name in rates}
    try:
        say(f"private redis-server on port {port}; {BUCKETS} buckets, {ROUNDS} rounds, {args.blocks} blocks")
        series: dict[str, Callable[[int], Block]] = {
            "noop_lua": lambda block: run_noop(client, block),
            "limits_moving": lambda block: run_limits(client, url, block),
            "certwright": lambda block: run_certwright(client, block),
        }
        names = list(series)
        for block in range(args.blocks):
            for name in names[block % 3 :] + names[: block % 3]:
                run = series[name]
                client.flushdb()
                result = run(block)
                rate = result.decisions / result.seconds
                rates[name].append(rate)
                server_us[name].append(result.server_us)
                share = result.granted / (ROUNDS * BUCKETS)
                detail = "" if name == "noop_lua" else f", {share:.0%} of spends granted"
                say(
                    f"    block {block + 1} {name:<13} {result.decisions} in {result.seconds:.2f} s: "
                    f"{rate:,.0f}/s ({1e6 / rate:.0f} us each, {result.server_us:.1f} us in Redis){detail}"
                )
                if name == "certwright" and result.granted * 2 != ROUNDS * BUCKETS:
                    raise SystemExit(f"VOID: {result.granted} of {ROUNDS * BUCKETS} spends granted, not half")
        say("correctness under load (Certwright's Quota, buckets of Let's Encrypt's shape)")
        granted_of_500, refunds_applied, failures = check_correctness(client, port)
    finally:
        client.close()
        server.stop()
        shutil.rmtree(state_dir, ignore_errors=True)

    noop, moving, certwright = (median(rates[name]) for name in ("noop_lua", "limits_moving", "certwright"))
    say(f"medians: noop_lua {noop:,.0f}/s, limits_moving {moving:,.0f}/s, certwright {certwright:,.0f}/s")
    say(
        "median time inside Redis per EVALSHA (INFO commandstats): "
        + ", ".join(f"{name} {median(values):.1f} us" for name, values in server_us.items())
    )
    # The three series of a block run back to back, so a block's own ratio holds the machine's
    # state of those few seconds on both sides; its median over the blocks is the figure.
    paired = [c / n for c, n in zip(rates["certwright"], rates["noop_lua"], strict=True)]
    paired_moving = [c / m for c, m in zip(rates["certwright"], rates["limits_moving"], strict=True)]
    ratio, ratio_moving = median(paired), median(paired_moving)
    say("certwright / noop_lua within each block: " + ", ".join(f"{value:.2f}" for value in paired))
    say("certwright / limits_moving within each block: " + ", ".join(f"{v:.2f}" for v in paired_moving))
    say(
        f"(ratios of the medians: {certwright / noop:.2f} x noop_lua, "
        f"{certwright / moving:.2f} x limits_moving)"
    )
    say(f"target certwright >= 0.85 x noop_lua: {ratio:.2f} x, {'met' if ratio >= 0.85 else 'MISSED'}")
    say(
        f"target certwright >= limits_moving: {ratio_moving:.2f} x, "
        f"{'met' if ratio_moving >= 1 else 'MISSED'}"
    )
    for failure in failures:
        say(f"WRONG: {failure}")
    say(
        f"RESULT noop_lua_per_s={noop:.0f} limits_moving_per_s={moving:.0f} "
        f"certwright_per_s={certwright:.0f} ratio_vs_noop_lua={ratio:.2f} "
        f"granted_of_500={granted_of_500} refunds_applied={refunds_applied}"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
