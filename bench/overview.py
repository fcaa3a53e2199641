"""The operators' overview (the admin's home, /admin/) and the domain list's first page
(/admin/domains/domain/) at 1,000,000 domains and certificates.

Targets (issue 18): the overview renders in at most 1 s (median) with a number of SQL statements
that does not grow with the data, and the domain list's first page in at most 300 ms. Beside them,
as a baseline, Django's stock admin index (`django.contrib.admin.sites.AdminSite().index`, with the
same models registered: the plain list of models an operator had before) for the same user on the
same data.

The database is this benchmark's own (`certwright_bench_overview`, migrated, dropped at the end,
also on failure) and is filled with server-side SQL (bench/_overview_fill.py): one region, 1,000
apps, domains over every status (90% in use, 3% pending DNS, 2% not used, 1% creating, 1% action
required, 1% failing, 2% disabled; an error text and a next attempt where the status has them), one
certificate per domain (5% custom; the end uniform over the next 90 days, 1% already ended; 0.5% of
the Let's Encrypt ones with a failed renewal), the issuance ledger (one row per Let's Encrypt
certificate, when it started: ~75,000 in the last 7 days, 5% of them new names) and the orders
(one valid per Let's Encrypt certificate, and a few thousand that failed in the last 7 days). First
1,000 rows, then the rest up to the million; each fill is followed by VACUUM ANALYZE. The broker's
and the quota's Redis are a private redis-server (the quota buckets of the registered domains
shown are rebuilt from the ledger on the first request, as after a restart: that request is
counted apart).

The pages are requested in-process through Django's test client, logged in as a superuser, with
the settings `make run` uses (DEBUG off, persistent database connection), except that static
files are named without the manifest (no `collectstatic` in a benchmark) and the URLs also mount
the stock admin site at /stock-admin/. At each size: 3 warm-up requests of each page, then 15
rounds of (overview, stock index, domain list), interleaved so that a busy neighbour slows all
three alike; the median of each. The statements of 3 more overview requests are captured
(CaptureQueriesContext): their number, and at the full size each one's median duration, slowest
first, and EXPLAIN (ANALYZE, BUFFERS) of the 3 slowest. What the overview shows is checked against
plain SQL on the same data.

`--size N` (or BENCH_OVERVIEW_SIZE) fills N domains instead of a million, for a quick try.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import statistics
import sys
import time
import types
import warnings
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import ROOT, BenchStack, BenchVoid, say
from _overview_fill import Filler

SIZE = 1_000_000
SMALL = 1_000
WARMUP = 3
REPETITIONS = 15
CAPTURED = 3
SLOWEST_SHOWN = 8
EXPLAINED = 3
OVERVIEW_TARGET_MS = 1000.0
LIST_TARGET_MS = 300.0
OVERVIEW = "/admin/"
STOCK = "/stock-admin/"
LIST = "/admin/domains/domain/"
URLCONF = "bench_overview_urls"


def mount_stock_admin() -> None:
    """The project's URLs plus Django's stock AdminSite at /stock-admin/, with every model the
    project's admin has, under the same ModelAdmin classes; static files named without a manifest."""
    from django.contrib import admin
    from django.contrib.admin.sites import AdminSite
    from django.test.utils import override_settings
    from django.urls import path

    from config import urls as project

    stock = AdminSite(name="stock")
    for model, model_admin in admin.site._registry.items():
        stock.register(model, type(model_admin))
    module = types.ModuleType(URLCONF)
    module.urlpatterns = [path(STOCK.strip("/") + "/", stock.urls), *project.urlpatterns]
    for handler in ("handler400", "handler403", "handler404", "handler500"):
        setattr(module, handler, getattr(project, handler))
    sys.modules[URLCONF] = module
    override_settings(
        ROOT_URLCONF=URLCONF,
        STORAGES={
            "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
            "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
        },
    ).enable()


def logged_in_client():
    from django.contrib.auth import get_user_model
    from django.test import Client

    user, _ = get_user_model().objects.get_or_create(
        username="operator", defaults={"is_staff": True, "is_superuser": True, "email": "ops@example.com"}
    )
    client = Client(HTTP_HOST="localhost")
    client.force_login(user)
    return client


def get(client, path: str) -> str:
    response = client.get(path)
    if response.status_code != 200:
        raise BenchVoid(f"{path} answered {response.status_code}: {response.content[:500]!r}")
    return response.content.decode()


def timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


def statements_of(client, path: str) -> list[dict]:
    """The statements one request of `path` runs: [{"sql", "time" (seconds, as text)}]."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        get(client, path)
    return list(captured.captured_queries)


def one_line(sql: str, width: int = 100) -> str:
    return " ".join(sql.split())[:width]


def shape(sql: str) -> str:
    """A statement without its values, to compare the statements of two requests."""
    sql = re.sub(r"'(?:[^']|'')*'(?:::\w+)?", "?", " ".join(sql.split()))
    sql = re.sub(r"\b\d+\b", "?", sql)
    # A list of values (the quota's registered domains) is one value, whatever its length.
    return re.sub(r"\(\?(?:, \?)+\)", "(?, ...)", sql)


def compare_statements(small: list[str], full: list[str], size: int) -> None:
    """Says which statements one size runs and not the other (none when the count does not grow)."""
    extra = list(full)
    missing = []
    for statement in small:
        if statement in extra:
            extra.remove(statement)
        else:
            missing.append(statement)
    for statements, where in ((extra, f"only at {size:,}"), (missing, f"only at {SMALL:,}")):
        for statement in statements:
            say(f"    statement run {where}: {statement[:160]}")


def measure(label: str, client, full: bool) -> dict:
    """Times the three pages, counts the overview's statements; at the full size, shows the slowest."""
    say(f"[{label}] first overview request (quota buckets rebuilt from the ledger, issuers synced)")
    cold = statements_of(client, OVERVIEW)
    say(f"    {len(cold)} statements")
    pages = {"overview": OVERVIEW, "stock index": STOCK, "domain list": LIST}
    for path in pages.values():
        for _ in range(WARMUP):
            get(client, path)
    times: dict[str, list[float]] = {name: [] for name in pages}
    for _ in range(REPETITIONS):
        for name, path in pages.items():
            times[name].append(timed(lambda path=path: get(client, path)))
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        values = sorted(values)
        say(
            f"[{label}] {name}: median {medians[name]:.1f} ms of {REPETITIONS} "
            f"(min {values[0]:.1f}, max {values[-1]:.1f} ms)"
        )

    runs = [statements_of(client, OVERVIEW) for _ in range(CAPTURED)]
    counts = [len(run) for run in runs]
    if len(set(counts)) != 1:
        say(f"    NOTE: the overview ran {counts} statements in {CAPTURED} requests in a row")
    queries = counts[-1]
    listed = statements_of(client, LIST)
    stock = statements_of(client, STOCK)
    say(
        f"[{label}] statements per request: overview {queries}, stock index {len(stock)}, "
        f"domain list {len(listed)}"
    )
    result = {"overview_ms": medians["overview"], "stock_ms": medians["stock index"]}
    result |= {"list_ms": medians["domain list"], "queries": queries, "cold_queries": len(cold)}
    result["shapes"] = [shape(query["sql"]) for query in runs[-1]]
    if full:
        result["slowest"] = slowest(label, runs)
        show_list_statements(label, listed)
    return result


def slowest(label: str, runs: list[list[dict]]) -> list[str]:
    """Each overview statement's median duration over the captured requests, slowest first; returns
    the SQL of the slowest SELECTs, to explain."""
    shortest = min(len(run) for run in runs)
    per_statement = [
        (statistics.median(float(run[n]["time"]) * 1000 for run in runs), runs[-1][n]["sql"])
        for n in range(shortest)
    ]
    ranked = sorted(per_statement, key=lambda entry: entry[0], reverse=True)
    total = sum(ms for ms, _ in per_statement)
    say(
        f"[{label}] the overview's {len(per_statement)} statements take {total:.0f} ms together "
        f"(median of {len(runs)} requests each); the {SLOWEST_SHOWN} slowest:"
    )
    for ms, sql in ranked[:SLOWEST_SHOWN]:
        say(f"    {ms:8.1f} ms  {one_line(sql)}")
    rest = ranked[SLOWEST_SHOWN:]
    if rest:
        say(f"    {sum(ms for ms, _ in rest):8.1f} ms  the other {len(rest)} together:")
        for ms, sql in rest:
            say(f"      {ms:6.1f} ms  {one_line(sql, 80)}")
    return [sql for _, sql in ranked if sql.lstrip().upper().startswith("SELECT")][:EXPLAINED]


def show_list_statements(label: str, statements: list[dict]) -> None:
    ranked = sorted(statements, key=lambda query: float(query["time"]), reverse=True)
    total = sum(float(query["time"]) * 1000 for query in statements)
    say(f"[{label}] the domain list's {len(statements)} statements take {total:.0f} ms; the 4 slowest:")
    for query in ranked[:4]:
        say(f"    {float(query['time']) * 1000:8.1f} ms  {one_line(query['sql'])}")


def explain(statements: list[str]) -> None:
    from django.db import connection, transaction

    for n, sql in enumerate(statements, 1):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
            plan = [row[0] for row in cursor.fetchall()]
            transaction.set_rollback(True)
        say(f"EXPLAIN (ANALYZE, BUFFERS) of slow statement {n}: {one_line(sql, 400)}")
        for line in plan:
            say(f"      {line}")


def check(label: str, client, size: int) -> list[str]:
    """What the overview shows, against plain SQL on the same data; returns what differs."""
    from django.db import connection

    from dashboard import overview as overview_data

    body, listed = get(client, OVERVIEW), get(client, LIST)
    now = datetime.datetime.now(datetime.UTC)
    shown = overview_data.build(now)
    hour = now.replace(minute=0, second=0, microsecond=0)
    oldest_hour = hour - datetime.timedelta(hours=overview_data.ACTIVITY_HOURS - 1)
    week = now - datetime.timedelta(hours=overview_data.ACTIVITY_HOURS)
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT
              (SELECT count(*) FROM certificates_certificate c JOIN domains_domain d ON d.id = c.domain_id
               WHERE c.not_after > %(now)s AND c.not_after <= %(now)s + interval '7 days'
                 AND c.not_before <= %(now)s AND c.revoked_at IS NULL
                 AND (c.source = 'custom' OR d.letsencrypt_enabled)),
              (SELECT count(*) FROM certificates_certificate
               WHERE renewal_failures > 0 AND renew_at IS NOT NULL),
              (SELECT count(*) FROM certificates_certificate
               WHERE not_after > %(now)s AND not_after <= %(now)s + interval '90 days'),
              (SELECT count(*) FROM certificates_issuance WHERE issued_at >= %(oldest)s),
              (SELECT count(*) FROM certificates_issuance WHERE issued_at > %(week)s),
              (SELECT count(*) FROM certificates_order
               WHERE state = 'invalid' AND finished >= %(oldest)s),
              (SELECT count(*) FROM certificates_order WHERE state = 'invalid' AND finished > %(week)s)
            """,
            {"now": now, "oldest": oldest_hour, "week": week},
        )
        ending_7d, renewals_failing, ending_90d, issued_hours, issued_week, failed_hours, failed_week = (
            cursor.fetchone()
        )
    attention = {group.key: group for group in shown.attention}
    charted_ending = sum(sum(counts.values()) for counts in shown.ending.values())
    charted = lambda key: sum(counts.get(key, 0) for counts in shown.activity.values())  # noqa: E731
    facts = [
        ("domains in all", shown.total, size),
        # Counted up to the cap, then shown as "<cap>+".
        (
            "ending within 7 days, nothing after (up to the cap)",
            (attention["ending_7d"].count, attention["ending_7d"].more),
            (min(ending_7d, overview_data.COUNT_CAP), ending_7d > overview_data.COUNT_CAP),
        ),
        ("renewals failing", attention["renewals_failing"].count, renewals_failing),
        ("certificates ending in the next 90 days (chart)", charted_ending, ending_90d),
        ("issued + renewed in the chart's hours", charted("issued") + charted("renewed"), issued_hours),
        ("failed orders in the chart's hours", charted("failed"), failed_hours),
    ]
    differs = []
    for what, seen, expected in facts:
        ok = seen == expected
        say(f"    check: {what}: shown {seen}, SQL {expected}{'' if ok else '  DIFFERS'}")
        if not ok:
            differs.append(f"{what}: shown {seen}, SQL {expected}")
    say(
        f"    ledger rows in the last 7 days: {issued_week:,} ({issued_week - issued_hours:,} in the hour"
        f" before the chart's first); orders failed in the last 7 days: {failed_week:,}"
    )
    say(
        "    statuses: "
        + ", ".join(f"{s.status} {s.count:,}" for s in shown.statuses)
        + "; attention: "
        + ", ".join(f"{group.key} {group.count:,} ({len(group.rows)} rows)" for group in shown.attention)
    )
    quota_left = [entry.tokens_left for entry in shown.quota]
    say(
        f"    quota rows {len(shown.quota)} (tokens left {quota_left}), queues {shown.queues}, "
        f"issuers {[(name, state) for name, state, _, _ in shown.issuers]}, "
        f"heartbeats {[(what.split(' (')[0], late) for what, _, late in shown.heartbeats]}"
    )
    page_facts = [
        ("the overview's page says how many domains in all", f"({size} in all)" in body),
        ("the overview's page has both charts", body.count('<svg class="cw-chart"') == 2),
        ("every attention group with rows has a button", "Retry now" in body and "Renew now" in body),
        ("no quota row says the store is unreachable", "quota store unreachable" not in body),
        ("no queue says the broker is unreachable", "broker unreachable" not in body),
        ("the domain list counts every domain", f"{size} domains" in listed),
        ("the domain list shows 100 rows", len(re.findall(r'<td class="action-checkbox">', listed)) == 100),
    ]
    for what, ok in page_facts:
        say(f"    check: {what}: {'yes' if ok else 'NO'}")
        if not ok:
            differs.append(what)
    return differs


def parse_size() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--size",
        type=int,
        default=int(os.environ.get("BENCH_OVERVIEW_SIZE", SIZE)),
        help=f"domains and certificates at the full size (default {SIZE:,}; BENCH_OVERVIEW_SIZE)",
    )
    size = parser.parse_args().size
    if size <= SMALL:
        parser.error(f"--size must be more than {SMALL:,}")
    return size


def main() -> int:
    size = parse_size()
    # WhiteNoise warns that STATIC_ROOT was never collected; nothing here is served from it.
    warnings.filterwarnings("ignore", message="No directory at")
    say(__doc__.split("\n\n")[0])
    say(
        f"targets: overview median <= {OVERVIEW_TARGET_MS:.0f} ms with the same number of statements at "
        f"{SMALL:,} and {size:,} domains; domain list's first page median <= {LIST_TARGET_MS:.0f} ms"
    )
    if size != SIZE:
        say(f"NOTE: {size:,} domains, not {SIZE:,}: the figures below are not the targets'")
    started = time.perf_counter()
    stack = BenchStack("overview")
    results: dict[str, dict] = {}
    differs: list[str] = []
    try:
        stack.start_redis()
        say(f"creating and migrating {stack.database}")
        stack.prepare_database()
        mount_stock_admin()
        filler = Filler(datetime.datetime.now(datetime.UTC).replace(microsecond=0))
        client = logged_in_client()
        for rows, label, full in ((SMALL, "small", False), (size, "1m" if size == SIZE else "full", True)):
            say(f"[{label}] filling to {rows:,} domains and certificates")
            filler.grow(rows)
            results[label] = measure(label, client, full)
            differs += [f"[{label}] {what}" for what in check(label, client, rows)]
            if full:
                explain(results[label]["slowest"])
        full_result = results["1m" if size == SIZE else "full"]
    finally:
        stack.close()
    small = results["small"]
    say(f"total {time.perf_counter() - started:.0f} s")
    grows = "does not grow" if full_result["queries"] == small["queries"] else "GROWS"
    compare_statements(small["shapes"], full_result["shapes"], size)
    say(
        f"overview statements: {small['queries']} at {SMALL:,} domains, {full_result['queries']} at "
        f"{size:,} ({grows}); first request after a restart {small['cold_queries']} and "
        f"{full_result['cold_queries']}"
    )
    for name, key, target in (
        ("overview", "overview_ms", OVERVIEW_TARGET_MS),
        ("domain list", "list_ms", LIST_TARGET_MS),
    ):
        verdict = "meets" if full_result[key] <= target else "MISSES"
        say(
            f"{name} at {size:,}: median {full_result[key]:.0f} ms ({verdict} the {target:.0f} ms target); "
            f"at {SMALL:,}: {small[key]:.0f} ms"
        )
    say(f"baseline: stock admin index median {full_result['stock_ms']:.0f} ms")
    if differs:
        say("what the pages show differs from the data: " + "; ".join(differs))
    say(
        f"RESULT overview_ms_1m={full_result['overview_ms']:.0f} overview_queries={full_result['queries']} "
        f"list_ms_1m={full_result['list_ms']:.0f} stock_index_ms_1m={full_result['stock_ms']:.0f} "
        f"overview_queries_small={small['queries']}"
    )
    return 0


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
