"""Several hosts in network namespaces: 1,000 domains issued while hosts fail.

Seven hosts, each a network namespace (devstack/netns.py): two web hosts (gunicorn, the API and the
HTTP-01 responder), three worker hosts (`celery worker`, every queue) and two beat hosts. PostgreSQL,
the broker Redis, the quota Redis, Pebble and its DNS run on the bridge's address
(bench/_hosts_cluster.py); the hosts have no default route and reach only the bridge's subnet.

The run: N domains (1,000 by default) are added through the API (alternately on each web host) with
their A records at one of the two web hosts. As issuance goes, three faults strike:
  1. worker1's host is killed outright (SIGKILL to every process of its namespace) once 10% are In use;
  2. worker2's host is cut off from PostgreSQL and both Redis servers (its packets to their ports
     dropped inside its namespace, a silent partition) for 30 s once 25% are In use, then healed;
  3. the host of the beat that leads (holds the leader lease, workers/beat_lease.py) is killed
     once 40% are In use; the standby must take the lease over and send.
The run then waits for every domain to be In use (or `--timeout`), and prints, for each fault, the
domains whose work stood still through it, those it held (they moved on only once their lease ran
out), how many of those ended In use, their duplicates, those stuck, and the seconds from the
fault's end until the last domain that stood still was In use (bench/_hosts_figures.py defines
each); for the beat fault, the seconds until the standby held the lease and until it sent (beat's
heartbeat), the latter its recovery. Overall: domains In use, certificates in Pebble's log, names
ordered twice (more than one order at Pebble, each mapped to its name through the URL the database
stored or by asking Pebble, or more than one Order row), duplicate certificates, domains stuck.
Also measured for sizing: issuance per worker process, the database's size per domain and its
history tables, and each Redis server's memory.

Leases and schedules are the shipped ones unless `--lease-seconds` shortens both the order and the
check lease (the suite's small run does). Every namespace, the bridge, the FORWARD rule, the
services and the temporary directory are removed at the end, on failure and on ^C too.
"""

from __future__ import annotations

import argparse
import bisect
import datetime
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import ROOT, say
from _hosts_cluster import BEAT_HOSTS, Cluster
from _hosts_figures import Fault, database_sizes, duplicates, in_use_times, recovery_of

from devstack.netns import NetnsUnavailable, namespace_pids

CUT_SECONDS = 30
# A killed host's work stands still at once; what still holds the same token this long after stood still.
KILL_SETTLE_SECONDS = 10
PEAK_WINDOW_S = 30
HEADS = ("still", " held", " in use", " dupl.", " stuck", " recovery s")


def names(count: int) -> list[str]:
    # Each under its own registered domain, as customers' domains are (the per-domain quota is not
    # what is measured).
    return [f"www.hosts-{i}-bench.com" for i in range(count)]


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def in_use_count(app) -> int:
    from domains.models import Domain, DomainStatus

    return Domain.objects.filter(app=app, status=DomainStatus.IN_USE).count()


def leading_beat(cluster: Cluster) -> tuple[str, datetime.datetime] | None:
    """The beat host whose process holds beat's leader lease (workers/beat_lease.py: the pid in the
    lease row is in that host's namespace) and since when, or None while no live beat holds it."""
    from django.utils import timezone

    from workers.models import BeatLease

    lease = BeatLease.objects.filter(expires_at__gt=timezone.now()).first()
    for name in BEAT_HOSTS:
        if lease and lease.pid in namespace_pids(cluster.host(name).namespace):
            return name, lease.acquired_at
    return None


def beat_leader(cluster: Cluster, timeout: float = 60) -> str:
    """The beat host that leads, once one does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        leading = leading_beat(cluster)
        if leading:
            return leading[0]
        time.sleep(0.5)
    raise SystemExit(f"VOID: no beat host held the leader lease within {timeout:.0f} s")


def beat_sent_since(moment: datetime.datetime) -> datetime.datetime | None:
    """When a beat last sent a task, if after `moment` (the heartbeat beat stamps on every send)."""
    from workers.models import Heartbeat

    stamp = Heartbeat.objects.filter(source=Heartbeat.Source.BEAT).values_list("at", flat=True).first()
    return stamp if stamp and stamp > moment else None


class Run:
    """The schedule of faults over one issuance run."""

    def __init__(self, cluster: Cluster, app, count: int) -> None:
        self.cluster = cluster
        self.app = app
        self.count = count
        self.kill = Fault("worker host killed", "worker1")
        self.cut = Fault(f"worker host cut off {CUT_SECONDS} s", "worker2")
        self.beat = Fault("beat leader's host killed", beat_leader(cluster))
        self.beat_takeover: datetime.datetime | None = None
        self.beat_back: datetime.datetime | None = None

    def tick(self, issued: int) -> None:
        """Starts, settles and ends the faults as issuance passes their marks."""
        moment = now()
        if self.kill.started is None and issued >= self.count * 0.10:
            self.kill.begin(moment)
            killed = self.cluster.host(self.kill.host).kill()
            self.kill.ended = now()
            say(f"    fault: killed {killed} processes of {self.kill.host} ({issued} In use)")
        if self.kill.started and not self.kill.settled and _age(self.kill.ended) >= KILL_SETTLE_SECONDS:
            self.kill.settle()
        if self.cut.started is None and issued >= self.count * 0.25:
            self.cut.begin(moment)
            self.cluster.cut_from_data(self.cut.host)
            say(f"    fault: {self.cut.host} cut off from PostgreSQL and Redis ({issued} In use)")
        if self.cut.started and self.cut.ended is None and _age(self.cut.started) >= CUT_SECONDS:
            self.cut.settle()
            self.cluster.host(self.cut.host).heal()
            self.cut.ended = now()
            say(f"    fault: {self.cut.host} healed after {CUT_SECONDS} s")
        if self.beat.started is None and issued >= self.count * 0.40:
            self.beat.host = beat_leader(self.cluster)
            self.beat.begin(moment)
            killed = self.cluster.host(self.beat.host).kill()
            self.beat.ended = now()
            say(
                f"    fault: killed {killed} processes of {self.beat.host}, the beat leader ({issued} In use)"
            )
        if self.beat.ended and self.beat_takeover is None:
            leading = leading_beat(self.cluster)
            if leading and leading[0] != self.beat.host:
                self.beat_takeover = leading[1]
        if self.beat_takeover and self.beat_back is None:
            self.beat_back = beat_sent_since(self.beat.ended)

    def faults_over(self) -> bool:
        return self.kill.settled and self.cut.settled and self.beat_back is not None

    @property
    def faults(self) -> list[Fault]:
        return [self.kill, self.cut, self.beat]


def _age(moment: datetime.datetime | None) -> float:
    return (now() - moment).total_seconds() if moment else 0.0


def issue(cluster: Cluster, count: int, timeout: float) -> dict:
    from domains.models import Domain, DomainStatus

    app, token = cluster.create_app()
    hosts = names(count)
    cluster.point_names(app.pk, hosts)
    size_before, _ = database_sizes()
    run = Run(cluster, app, count)
    workers_at_start = cluster.worker_processes()
    say(f"    adding {count} domains through the API of both web hosts")
    started_at = now()
    started = time.monotonic()
    # The faults strike while domains are still being added: the API is part of what is measured.
    with ThreadPoolExecutor(1) as adder:
        adding = adder.submit(cluster.add_domains, app.name, token, hosts)
        deadline = started + timeout
        issued = 0
        while time.monotonic() < deadline:
            issued = in_use_count(app)
            run.tick(issued)
            if adding.done() and adding.result():
                failures = adding.result()
                raise SystemExit(f"VOID: {len(failures)} domains were not added, e.g. {failures[:3]}")
            if run.faults_over() and issued >= count:
                break
            time.sleep(0.5)
    for fault in (run.kill, run.cut):
        if fault.ended is not None:
            recovery_of(fault)
    if run.beat.ended is not None:
        run.beat.recovery_s = (run.beat_back - run.beat.ended).total_seconds() if run.beat_back else None
    stuck = list(
        Domain.objects.filter(app=app)
        .exclude(status=DomainStatus.IN_USE)
        .values_list("name", "status", "last_error")
    )
    times = sorted(in_use_times().values())
    size_after, tables = database_sizes()
    return {
        "run": run,
        "issued": issued,
        # From the first domain added to the last In use; and the rate before the first fault.
        "all_in_use_s": (times[-1] - started_at).total_seconds() if times else float("nan"),
        "peak": peak_rate(times, run),
        "stuck": stuck,
        "workers_at_start": workers_at_start,
        "size_before": size_before,
        "size_after": size_after,
        "tables": tables,
    }


def report(cluster: Cluster, count: int, outcome: dict) -> int:
    run = outcome["run"]
    dup = duplicates(cluster.pebble_log())
    say("")
    say(_row("fault", "host", "still", "held", "in use", "dupl.", "stuck", "recovery s"))
    for fault in run.faults:
        in_use = len(in_use_times(fault.held)) if fault.held else 0
        recovery = "-" if fault.recovery_s is None else f"{fault.recovery_s:.1f}"
        counts = (len(fault.stood_still), len(fault.held), in_use, _duplicates_among(fault.held))
        say(_row(fault.name, fault.host, *counts, len(fault.held) - in_use, recovery))
    if run.beat_takeover:
        sent = (
            f", and sent again {run.beat.recovery_s:.1f} s after" if run.beat.recovery_s is not None else ""
        )
        takeover = (run.beat_takeover - run.beat.ended).total_seconds()
        say(f"    the standby beat took the leader lease {takeover:.1f} s after the kill{sent}")
    say("")
    stuck = outcome["stuck"]
    for name, status, error in stuck[:5]:
        say(f"    stuck: {name} {status} {error[:160]}")
    rate, processes = outcome["peak"]
    say(
        f"    {outcome['issued']} of {count} In use, the last {outcome['all_in_use_s']:.0f} s after the "
        f"first was added; peak {rate:.1f}/s over {PEAK_WINDOW_S} s with {processes} worker processes "
        f"working, {rate / processes:.2f}/s per worker process"
    )
    say(
        f"    Pebble's log: {dup.pebble_orders} orders, {dup.pebble_certificates} certificates; "
        f"{dup.unknown_pebble_orders} orders the database does not know; names ordered twice "
        f"{dup.orders_placed_twice}; extra certificates: Pebble {dup.pebble_extra_certificates}, "
        f"database {dup.database_extra_certificates}"
    )
    for name, orders in list(dup.twice.items())[:5]:
        say(f"    ordered twice: {name}, Pebble orders {', '.join(orders) or '(one; several Order rows)'}")
    grown = outcome["size_after"] - outcome["size_before"]
    say(
        f"    PostgreSQL: {outcome['size_after'] / 1e6:.1f} MB, {grown / 1e6:.1f} MB for {count} domains "
        f"({grown / count / 1024:.1f} KiB per domain)"
    )
    for table, (rows, size) in outcome["tables"].items():
        say(f"      {table}: {rows} rows, {size / 1024:.0f} KiB ({rows / count:.1f} rows per domain)")
    for role in ("broker", "quota"):
        memory = cluster.redis_memory(role)
        say(
            f"    Redis {role}: used_memory {memory['used_memory'] / 1e6:.2f} MB, "
            f"peak {memory['used_memory_peak'] / 1e6:.2f} MB"
        )
    recoveries = [f.recovery_s for f in run.faults]
    worst = "none" if None in recoveries else f"{max(recoveries):.1f}"
    say(
        f"RESULT hosts={len(cluster.network.hosts) or 7} domains={count} in_use={outcome['issued']} "
        f"pebble_certificates={dup.pebble_certificates} orders_placed_twice={dup.orders_placed_twice} "
        f"duplicates={dup.certificates} stuck={len(stuck)} max_recovery_s={worst}"
    )
    ok = outcome["issued"] == count and dup.pebble_certificates == count and not stuck
    return 0 if ok and dup.orders_placed_twice == 0 and dup.certificates == 0 else 1


def peak_rate(times: list[datetime.datetime], run: Run) -> tuple[float, int]:
    """The most certificates a second over any PEAK_WINDOW_S of the run, and the worker processes
    working through that window (a host killed before its end or cut off during it does not count)."""
    from django.conf import settings

    best, best_end = 0, None
    for first, start in enumerate(times):
        end = start + datetime.timedelta(seconds=PEAK_WINDOW_S)
        inside = bisect.bisect_left(times, end) - first
        if inside > best:
            best, best_end = inside, end
    if best_end is None:
        return 0.0, 1
    best_start = best_end - datetime.timedelta(seconds=PEAK_WINDOW_S)
    hosts = 3
    if run.kill.started and run.kill.started < best_end:
        hosts -= 1
    if (
        run.cut.started
        and run.cut.started < best_end
        and (run.cut.ended is None or run.cut.ended > best_start)
    ):
        hosts -= 1
    return best / PEAK_WINDOW_S, hosts * settings.WORKER_CONCURRENCY


def _row(name: str, host: str, *figures) -> str:
    return f"    {name:<28} {host:<8}" + "".join(
        f" {figure:>{len(head)}}" for figure, head in zip(figures, HEADS, strict=True)
    )


def _duplicates_among(domain_ids: set[int]) -> int:
    """Orders and certificates beyond one per domain, among these domains (the database's rows)."""
    from collections import Counter

    from certificates.models import Certificate, CertificateSource, Order

    if not domain_ids:
        return 0
    orders = Counter(Order.objects.filter(domain_id__in=domain_ids).values_list("domain_id", flat=True))
    certificates = Counter(
        Certificate.objects.filter(
            domain_id__in=domain_ids, source=CertificateSource.LETSENCRYPT
        ).values_list("domain_id", flat=True)
    )
    return sum(n - 1 for n in orders.values() if n > 1) + sum(n - 1 for n in certificates.values() if n > 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=1000, help="domains to issue")
    parser.add_argument("--timeout", type=float, default=540, help="seconds to wait for every domain")
    parser.add_argument("--prefix", default="cwh", help="names of the namespaces, bridge and rule")
    parser.add_argument("--subnet", default="10.231.0.0/24")
    parser.add_argument(
        "--lease-seconds", type=int, help="the order and check leases (default: as shipped, 120 and 150 s)"
    )
    args = parser.parse_args()
    settings = {}
    if args.lease_seconds:
        settings = {
            "ACME_ORDER_LEASE_SECONDS": str(args.lease_seconds),
            "DOMAIN_CHECK_LEASE_SECONDS": str(args.lease_seconds),
        }
    # ^C and a plain kill both unwind through the `finally` that removes everything.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    cluster = Cluster(args.prefix, args.subnet, settings)
    failed = True
    try:
        say(f"    services on {cluster.network.services_address}, 7 hosts in namespaces {args.prefix}-*")
        cluster.start_services()
        cluster.start_hosts()
        outcome = issue(cluster, args.n, args.timeout)
        status = report(cluster, args.n, outcome)
        failed = status != 0
        return status
    except NetnsUnavailable as unavailable:
        say(f"VOID: {unavailable}")
        return 1
    finally:
        cluster.close(keep_logs=failed)
        if failed:
            say(f"    logs kept in {cluster.logs}")


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
