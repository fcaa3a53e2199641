"""The DNS sweep at scale: 100,000 due domains, against the ceiling of a bare dnspython loop.

challtestsrv is the authoritative server, seeded with a mix whose diagnoses the benchmark checks:
valid (A at the ingress), wrong address, stray AAAA beside a correct A, CNAME to another app, and
no record at all, 20% each.

(a) the ceiling: one process, a bare dnspython async loop (dns.asyncquery.udp) sending, for the
    same names and with the same concurrency, the queries Certwright's check sends (A and AAAA for
    every name; CAA at each level of the climb and the ownership TXT record for the valid ones,
    without Certwright's per-batch cache of parents).
(b) Certwright: the 100,000 domains due in PostgreSQL; beat's sweep task sent to a real worker
    (`celery worker -Q dns --concurrency 2`: two worker processes), which claims, resolves,
    diagnoses, writes back and starts the orders of the valid ones; timed until every domain is
    checked. Per-process rate = names / seconds / 2. RSS is each process's peak (VmHWM).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import ROOT, BenchStack, say, wait_until

KINDS = ("valid", "wrong_address", "stray_aaaa", "cname_other_app", "no_record")
EXPECTED = {
    "wrong_address": "A record 203.0.113.",
    "stray_aaaa": "AAAA record 2001:db8::99",
    "cname_other_app": "which is another app of the platform",
    "no_record": "has no A, AAAA or CNAME record",
}
SUFFIX = "bench.example-paas.io"


def name_of(i: int) -> tuple[str, str]:
    kind = KINDS[i % len(KINDS)]
    # 200 parent zones, so that CAA climbing meets shared parents as real customers' domains do not.
    return f"d{i}.zone{i % 200}.example.com", kind


def seed_records(stack: BenchStack, count: int) -> list[tuple[str, str]]:
    dns = stack.pebble.challtestsrv
    domains = [name_of(i) for i in range(count)]

    def seed(item: tuple[str, str]) -> None:
        name, kind = item
        if kind == "valid":
            dns.add_a(name, ["127.0.0.1"])
        elif kind == "wrong_address":
            dns.add_a(name, [f"203.0.113.{hash(name) % 250 + 1}"])
        elif kind == "stray_aaaa":
            dns.add_a(name, ["127.0.0.1"])
            dns.add_aaaa(name, ["2001:db8::99"])
        elif kind == "cname_other_app":
            dns.set_cname(name, f"other-app.{SUFFIX}")

    with ThreadPoolExecutor(32) as pool:
        list(pool.map(seed, domains))
    return domains


def run_bare(stack: BenchStack, domains: list[tuple[str, str]], concurrency: int) -> tuple[float, float]:
    """Queries per second and names per second of a bare loop in this one process: dnspython's
    lowest-level async call (`dns.asyncquery.udp`), no resolver machinery, no database."""
    import dns.asyncquery
    import dns.exception
    import dns.message

    from domains.caa import climb
    from domains.ownership import challenge_name

    port = stack.ports["dns"]
    sent = 0
    retried = 0

    async def one(name: str, kind: str) -> None:
        nonlocal sent, retried
        queries = [(name, "A"), (name, "AAAA")]
        if kind == "valid":
            queries += [(owner, "CAA") for owner in climb(name)]
            queries.append((challenge_name(name), "TXT"))
        for qname, rdtype in queries:
            # A lost datagram is asked once more, as Certwright's resolver does (on equal terms).
            for attempt in (1, 2):
                try:
                    await dns.asyncquery.udp(
                        dns.message.make_query(qname, rdtype), "127.0.0.1", timeout=2.0, port=port
                    )
                    break
                except dns.exception.Timeout:
                    if attempt == 2:
                        raise
                    retried += 1
            sent += 1

    async def main() -> None:
        semaphore = asyncio.Semaphore(concurrency)

        async def bounded(name: str, kind: str) -> None:
            async with semaphore:
                await one(name, kind)

        await asyncio.gather(*(bounded(name, kind) for name, kind in domains))

    started = time.monotonic()
    asyncio.run(main())
    elapsed = time.monotonic() - started
    if retried:
        print(f"  the bare loop asked {retried} queries again after a timeout", flush=True)
    return sent / elapsed, len(domains) / elapsed


def peak_rss_mb(pgid: int) -> dict[int, float]:
    peaks = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            if int(stat[stat.rindex(")") + 2 :].split()[2]) != pgid:
                continue
            for line in Path(f"/proc/{entry}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks[int(entry)] = int(line.split()[1]) / 1024
        except (FileNotFoundError, ProcessLookupError):
            continue
    return peaks


def run_certwright(stack: BenchStack, domains: list[tuple[str, str]]) -> tuple[float, dict[int, float]]:
    from django.contrib.auth import get_user_model
    from django.db.models import Count

    from config.celery import app as celery_app
    from domains.models import App, Domain, DomainStatus, Region
    from domains.ownership import challenge_name, ownership_token

    region = Region.objects.create(
        name="bench", domain_suffix=SUFFIX, cname_target=f"ingress.{SUFFIX}", ingress_ipv4=["127.0.0.1"]
    )
    app = App.objects.create(
        owner=get_user_model().objects.create(username="bench"), region=region, name="app"
    )
    # The valid names point at the shared ingress, so they publish their ownership record too.
    dns = stack.pebble.challtestsrv
    with ThreadPoolExecutor(32) as pool:
        list(
            pool.map(
                lambda name: dns.set_txt(challenge_name(name), ownership_token(app.pk, name)),
                [name for name, kind in domains if kind == "valid"],
            )
        )
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=1)
    Domain.objects.bulk_create(
        [
            Domain(
                app=app,
                name=name,
                status=DomainStatus.PENDING_DNS,
                next_attempt_at=past,
                ownership_token=ownership_token(app.pk, name),
            )
            for name, _ in domains
        ],
        batch_size=5000,
    )
    os.environ["WORKER_CONCURRENCY"] = "2"
    worker = stack.start_worker("dns-worker", queues="dns")
    started = time.monotonic()
    celery_app.send_task("workers.tasks.dns.sweep_due_domains")
    # The benchmark's own domains: the sweep also gives each region its platform certificate domain
    # (domains/platform.py), which its next tick checks.
    unchecked = Domain.objects.filter(app=app, last_checked_at__isnull=True)
    done = wait_until(lambda: not unchecked.exists(), timeout=600, interval=0.25)
    elapsed = time.monotonic() - started
    peaks = peak_rss_mb(worker.pid)
    if not done:
        raise SystemExit(f"VOID: {unchecked.count()} domains unchecked")
    by_kind: dict[str, list[str]] = {kind: [] for kind in KINDS}
    for name, kind in domains:
        by_kind[kind].append(name)
    statuses = dict(
        Domain.objects.filter(name__in=by_kind["valid"])
        .values_list("status")
        .annotate(n=Count("pk"))
        .values_list("status", "n")
    )
    if statuses != {DomainStatus.CREATING: len(by_kind["valid"])}:
        example = (
            Domain.objects.filter(name__in=by_kind["valid"])
            .exclude(status=DomainStatus.CREATING)
            .values_list("name", "last_error")
            .first()
        )
        raise SystemExit(f"VOID: valid domains should all be creating, found {statuses}, e.g. {example}")
    for kind, phrase in EXPECTED.items():
        wrong = (
            Domain.objects.filter(name__in=by_kind[kind])
            .exclude(status=DomainStatus.PENDING_DNS, last_error__contains=phrase)
            .values_list("name", "status", "last_error")[:1]
        )
        if wrong:
            raise SystemExit(f"VOID: a {kind} domain was diagnosed otherwise: {wrong[0]}")
    return elapsed, peaks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=100_000)
    args = parser.parse_args()
    stack = BenchStack("dns_sweep")
    try:
        stack.start_redis()
        stack.prepare_database()
        stack.start_pebble({"PEBBLE_VA_NOSLEEP": "1"})
        say(f"seeding challtestsrv with {args.n} names ({', '.join(KINDS)})")
        domains = seed_records(stack, args.n)
        from django.conf import settings

        concurrency = settings.DNS_CONCURRENCY
        say(f"(a) bare dnspython async loop, one process, concurrency {concurrency}")
        bare_qps, bare_names = run_bare(stack, domains, concurrency)
        say(f"    {bare_qps:.0f} queries/s, {bare_names:.0f} names/s")
        say(f"(b) Certwright's sweep over {args.n} due domains, two worker processes")
        elapsed, peaks = run_certwright(stack, domains)
        per_process = args.n / elapsed / 2
        say(f"    {elapsed:.1f} s, {per_process:.0f} names/s per worker process, all diagnoses as seeded")
        say(
            "    peak RSS per process (MB): "
            + ", ".join(f"{pid}: {mb:.0f}" for pid, mb in sorted(peaks.items()))
        )
    finally:
        stack.stop()
    ratio = per_process / bare_names
    say(
        f"RESULT bare_qps={bare_qps:.0f} sweep_s_100k={elapsed * 100_000 / args.n:.1f} "
        f"ratio_vs_bare={ratio:.2f} peak_rss_mb={max(peaks.values()):.0f}"
    )
    return 0


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
