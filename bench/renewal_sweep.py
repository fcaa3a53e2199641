"""The renewal sweep's claim on a large table: 1,000 due certificates among 1,000,000, then 2,000,000.

The claim is `workers.renewals.claim_due_renewals(now, limit=1000)`: one UPDATE that takes the due
rows through the partial index `certificate_renewal_due_idx` (FOR UPDATE SKIP LOCKED) and pushes
their `renew_at` forward as a lease. It must take at most 50 ms at both sizes, through an index scan.

The database is this benchmark's own (`certwright_bench_renewal_sweep`, migrated, dropped at the end)
and is filled with server-side SQL: one region, one user, 1,000 apps, one domain per certificate
(two domains per registered domain), one Let's Encrypt certificate per domain with columns of
realistic size (a ~1.5 KB chain of random base64, a Fernet-sealed key, a unique fingerprint). 90% are
due somewhere in the next 60 days, 10% have Let's Encrypt turned off (renew_at NULL), and exactly
1,000, scattered over the table, are due now. The second million adds none due. Each fill is
followed by VACUUM ANALYZE, as autovacuum would leave a table at rest.

Each measurement runs the real function inside a transaction that is rolled back, so the same 1,000
rows are due every time; only the call is timed. 5 warm-up calls, then the median and p95 of 30.
`EXPLAIN (ANALYZE, BUFFERS)` of the same statement with the same parameters is printed at each
size. For scale only, the same claim with index and bitmap scans turned off (so the table is
scanned) is timed a few times; it is not part of the result. Then, at each size, a whole /metrics
answer (api/metrics.py) is timed, 5 times (it counts every domain; no target, reported).
"""

from __future__ import annotations

import datetime
import os
import re
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import ROOT, BenchStack, fake_chain, fake_sealed_keys, say

STEP = 1_000_000
DUE = 1_000
APPS = 1_000
WARMUP = 5
REPETITIONS = 30
FORCED_REPETITIONS = 3
TARGET_MS = 50.0
# Distinct chains and sealed keys the rows cycle through: random base64 does not compress, so each
# row stores its full size, as real certificates do.
POOL = 256
DUE_INDEX = "certificate_renewal_due_idx"
TABLE = "certificates_certificate"

# Domain i: two per registered domain (www. and shop.); one in ten has Let's Encrypt turned off.
_FILL_DOMAINS = """
INSERT INTO domains_domain (
    id, app_id, name, registered_domain, letsencrypt_enabled, status, consecutive_failures,
    next_attempt_at, last_checked_at, last_error, claim_token, quota_reservation, created, updated,
    ownership_token, ownership_verified_at
)
SELECT
    i,
    (%(apps)s::bigint[])[1 + i %% %(app_count)s],
    CASE WHEN i %% 2 = 0 THEN 'www.' ELSE 'shop.' END || 'customer' || i / 2 || '.com',
    'customer' || i / 2 || '.com',
    i %% 10 <> 7,
    'in_use',
    0,
    NULL,
    %(now)s - (i %% 86400) * interval '1 second',
    '',
    NULL,
    NULL,
    %(now)s - interval '200 days',
    %(now)s,
    'cw-' || md5(i::text),
    %(now)s - interval '200 days'
FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS i
"""

# Certificate i for domain i. renew_at is two thirds into its 90 days: due now (within the last
# hour) for every 1000th of the first million, otherwise spread over the next 60 days in an order
# unrelated to the rows' physical order; NULL where Let's Encrypt is off.
_FILL_CERTIFICATES = """
INSERT INTO certificates_certificate (
    id, domain_id, source, fullchain_pem, private_key, not_before, not_after, sans, issuer, serial,
    fingerprint_sha256, renew_at, renewal_claim, renewal_failures, renewal_error, renewal_reservation,
    created
)
SELECT
    d.id,
    d.id,
    'letsencrypt',
    (%(chains)s::text[])[1 + d.id %% %(pool)s],
    (%(keys)s::text[])[1 + (d.id / %(pool)s) %% %(pool)s],
    t.not_before,
    t.not_before + interval '90 days',
    ARRAY[d.name],
    'C=US, O=Let''s Encrypt, CN=E6',
    encode(substr(sha256(('serial ' || d.id)::bytea), 1, 18), 'hex'),
    encode(sha256(('leaf ' || d.id)::bytea), 'hex'),
    CASE WHEN d.letsencrypt_enabled THEN t.not_before + interval '60 days' END,
    NULL,
    0,
    '',
    NULL,
    t.not_before
FROM domains_domain d
CROSS JOIN LATERAL (
    SELECT CASE
        WHEN d.id <= %(due_below)s AND d.id %% %(due_every)s = 0
            THEN %(now)s - interval '60 days' - (60 + d.id %% 3600) * interval '1 second'
        ELSE %(now)s - interval '60 days' + interval '1 hour'
            + ((d.id * 2654435761) %% (59 * 86400)) * interval '1 second'
    END AS not_before
) t
WHERE d.id BETWEEN %(first)s AND %(last)s
"""

_RESET_SEQUENCES = """
SELECT
    setval(pg_get_serial_sequence('domains_domain', 'id'), (SELECT max(id) FROM domains_domain)),
    setval(
        pg_get_serial_sequence('certificates_certificate', 'id'),
        (SELECT max(id) FROM certificates_certificate)
    )
"""


def create_owners() -> list[int]:
    """One region, one user, APPS apps; returns the apps' ids."""
    from django.contrib.auth import get_user_model

    from domains.models import App, Region

    region = Region.objects.create(
        name="bench",
        domain_suffix="bench.example-paas.io",
        cname_target="ingress.bench.example-paas.io",
        ingress_ipv4=["192.0.2.10"],
    )
    owner = get_user_model().objects.create(username="bench")
    apps = App.objects.bulk_create(
        [App(owner=owner, region=region, name=f"app-{n}") for n in range(APPS)], batch_size=APPS
    )
    return [app.pk for app in apps]


def fill(first: int, last: int, now: datetime.datetime, apps: list[int], chains, keys) -> None:
    """Domains and certificates `first`..`last` (ids equal to their number), then VACUUM ANALYZE."""
    from django.db import connection, transaction

    params = {
        "first": first,
        "last": last,
        "now": now,
        "apps": apps,
        "app_count": len(apps),
        "chains": chains,
        "keys": keys,
        "pool": POOL,
        "due_below": STEP,
        "due_every": STEP // DUE,
    }
    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_FILL_DOMAINS, params)
        domains_s = time.perf_counter() - started
        cursor.execute(_FILL_CERTIFICATES, params)
        # Ids were given explicitly: the sequences must continue after them.
        cursor.execute(_RESET_SEQUENCES)
    filled = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE domains_domain, certificates_certificate")
    vacuumed = time.perf_counter()
    say(
        f"    filled {last - first + 1:,} domains and certificates in {filled - started:.1f} s "
        f"(domains {domains_s:.1f} s, certificates {filled - started - domains_s:.1f} s); "
        f"VACUUM ANALYZE {vacuumed - filled:.1f} s"
    )
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), count(renew_at), count(*) FILTER (WHERE renew_at <= %s),"
            " pg_size_pretty(pg_relation_size(%s)), pg_size_pretty(pg_total_relation_size(%s)),"
            " pg_size_pretty(pg_relation_size(%s)) FROM certificates_certificate",
            [now, TABLE, TABLE, DUE_INDEX],
        )
        total, scheduled, due, heap, whole, index = cursor.fetchone()
    say(
        f"    {total:,} certificates: {due:,} due, {scheduled - due:,} due later, "
        f"{total - scheduled:,} with renew_at NULL; table {heap} (with TOAST and indexes {whole}), "
        f"{DUE_INDEX} {index}"
    )
    if due != DUE:
        raise SystemExit(f"VOID: {due} certificates are due, not {DUE}")


def claim_ms(now: datetime.datetime, settings_sql: tuple[str, ...] = ()) -> float:
    """One claim of the real function in a rolled-back transaction; returns its duration in ms."""
    from django.db import connection, transaction

    from workers.renewals import claim_due_renewals

    with transaction.atomic():
        if settings_sql:
            with connection.cursor() as cursor:
                for statement in settings_sql:
                    cursor.execute(statement)
        started = time.perf_counter()
        ids, _ = claim_due_renewals(now, limit=DUE)
        elapsed = time.perf_counter() - started
        transaction.set_rollback(True)
    if len(ids) != DUE:
        raise SystemExit(f"VOID: the claim returned {len(ids)} ids, not {DUE}")
    return elapsed * 1000


def explain(now: datetime.datetime) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of the claim's statement with the parameters the function sends."""
    from django.conf import settings
    from django.db import connection, transaction

    from workers.renewals import _CLAIM

    lease_end = now + datetime.timedelta(seconds=settings.DOMAIN_CHECK_LEASE_SECONDS)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + _CLAIM, [uuid.uuid4(), lease_end, now, DUE])
        plan = "\n".join(row[0] for row in cursor.fetchall())
        transaction.set_rollback(True)
    return plan


# The plan nodes that read the certificates table: how the due rows were found.
_ACCESS_PATH = re.compile(
    rf"(?:Bitmap |Parallel )?(?:Index Only |Index |Seq )Scan (?:using|on) {DUE_INDEX}\b|Seq Scan on {TABLE}\b"
)


def uses_due_index(plan: str) -> bool:
    """The verdict the issue asks for: the due rows are found through the partial index (an Index
    Scan, Index Only Scan or Bitmap Index Scan on it; which one is the planner's choice for the
    number of rows it expects) and the table is never scanned."""
    paths = set(_ACCESS_PATH.findall(plan))
    through_index = {
        f"Index Scan using {DUE_INDEX}",
        f"Index Only Scan using {DUE_INDEX}",
        f"Bitmap Index Scan on {DUE_INDEX}",
    }
    return bool(paths & through_index) and not any(path.startswith("Seq Scan") for path in paths)


def measure(label: str, now: datetime.datetime) -> tuple[float, bool]:
    """Times the claim at the current size and prints its plan; returns the median and the verdict."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = %s::regclass", [TABLE]
        )
        indexes = sorted(row[0] for row in cursor.fetchall())
    # renew_at is indexed, so no claimed row is a HOT update: each gets an entry in every index
    # (the partial ones only where their condition holds).
    say(f"    {len(indexes)} indexes on {TABLE}, each written by the claim's UPDATE: {', '.join(indexes)}")
    say(f"    claiming {DUE} due certificates: {WARMUP} warm-up calls, then {REPETITIONS} timed")
    for _ in range(WARMUP):
        claim_ms(now)
    in_order = [claim_ms(now) for _ in range(REPETITIONS)]
    times = sorted(in_order)
    median = statistics.median(times)
    p95 = times[min(len(times) - 1, round(0.95 * len(times)) - 1)]
    verdict = "meets" if median <= TARGET_MS else "MISSES"
    say(
        f"    claim at {label}: median {median:.1f} ms, p95 {p95:.1f} ms, min {times[0]:.1f} ms, "
        f"max {times[-1]:.1f} ms ({verdict} the {TARGET_MS:.0f} ms target)"
    )
    # Each rolled-back claim leaves 1,000 dead row versions and their index entries behind.
    early, late = statistics.median(in_order[:10]), statistics.median(in_order[-10:])
    say(f"    median of the first 10 timed calls {early:.1f} ms, of the last 10 {late:.1f} ms")
    plan = explain(now)
    say(f"    EXPLAIN (ANALYZE, BUFFERS) at {label}:")
    for line in plan.splitlines():
        say(f"      {line}")
    uses_index = uses_due_index(plan)
    paths = "; ".join(sorted(set(_ACCESS_PATH.findall(plan)))) or "neither"
    say(
        f"    index_scan={'yes' if uses_index else 'no'} at {label}: the due rows were read by {paths} "
        f"(yes needs a scan of {DUE_INDEX} and no Seq Scan on {TABLE})"
    )
    forced_off = (
        "SET LOCAL enable_indexscan = off",
        "SET LOCAL enable_indexonlyscan = off",
        "SET LOCAL enable_bitmapscan = off",
    )
    forced = statistics.median(claim_ms(now, forced_off) for _ in range(FORCED_REPETITIONS))
    say(f"    (for comparison, the same claim forced to scan the table: {forced:.0f} ms)")
    return median, uses_index


def main() -> int:
    say(__doc__.split("\n\n")[0])
    say(f"target: median claim <= {TARGET_MS:.0f} ms at 1M and at 2M certificates, through {DUE_INDEX}")
    started = time.perf_counter()
    stack = BenchStack("renewal_sweep")
    results: dict[str, float] = {}
    plans_ok = []
    try:
        stack.start_redis()
        say(f"creating and migrating {stack.database}")
        stack.prepare_database()
        now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        apps = create_owners()
        chains = [fake_chain() for _ in range(POOL)]
        keys = fake_sealed_keys(POOL)
        for size, label in ((STEP, "1m"), (2 * STEP, "2m")):
            say(f"[{label}] growing to {size:,} certificates")
            fill(size - STEP + 1, size, now, apps, chains, keys)
            results[label], uses_index = measure(label, now)
            plans_ok.append(uses_index)
            results[f"metrics_{label}"] = measure_metrics(label)
    finally:
        stack.close()
    say(f"total {time.perf_counter() - started:.0f} s")
    say(
        f"RESULT claim_ms_1m={results['1m']:.1f} claim_ms_2m={results['2m']:.1f} "
        f"index_scan={'yes' if all(plans_ok) else 'no'} "
        f"metrics_scrape_ms_1m={results['metrics_1m']:.0f} metrics_scrape_ms_2m={results['metrics_2m']:.0f}"
    )
    return 0


def measure_metrics(label: str, runs: int = 5) -> float:
    """The median time of a whole /metrics answer (api/metrics.py) over this table."""
    from api.metrics import render

    times = []
    for _ in range(runs):
        started = time.perf_counter()
        render()
        times.append((time.perf_counter() - started) * 1000)
    median = statistics.median(times)
    say(f"[{label}] a /metrics scrape: median {median:.0f} ms of {runs} (all domains and certificates)")
    return median


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
