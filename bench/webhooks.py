"""Webhook delivery: latency from a status change's commit, throughput against a bare loop, and an
outage of the receiver.

One stack: PostgreSQL, Redis, a real `celery worker` as `make run` starts it (beat only for (c),
whose retries come due after the last event: in (a) and (b) every run is asked for by the events
themselves, and beat's backstop would add runs to the one measured), and a receiver in a process
of its own (aiohttp's server on 127.0.0.3, answering 204 and recording each request's arrival,
webhook-id and body).

(a) Latency: 40 status changes into Failing, each committed alone 0.3 s apart on a different domain
    (Certwright's own change_status, whose commit asks for a delivery run); from the commit to the
    receiver's arrival time (one clock, this machine's). Target: p50 at most 0.5 s.
(b) Throughput: 10,000 events (1,000 domains x 10, written with SQL into the outbox) for one
    endpoint; the product: one delivery run sent (it starts up to WEBHOOK_PARALLEL_RUNS runs as the
    backlog asks), timed until the receiver has all 10,000 (each domain's in order). The baseline:
    a bare asyncio loop POSTing the same signed payloads with the same client (one aiohttp session)
    and as many in flight as the product may keep (WEBHOOK_PARALLEL_RUNS x WEBHOOK_CONCURRENCY), in a
    process of its own, and with one run's WEBHOOK_CONCURRENCY in flight. Each side three times,
    interleaved (bare, product, bare, product, bare, product; 10,000 new events for each of the
    product's): a shared machine's noise falls on both sides alike, and each side's best counts.
    Target: ratio at least 0.5. Both sides share this machine's cores, so the CPU each part spent
    per delivery (the workers, PostgreSQL, Redis, the receiver) and per bare POST (the client, the
    receiver) is printed too: it says where the difference goes.
(c) Outage: the receiver is stopped; over 2 minutes 1,000 events happen (100 domains x 10, status
    changes as in (a)); the receiver comes back and the run waits until every event has arrived.
    lost_after_outage counts events never received; each domain's events must arrive in order
    (first arrivals; a redelivery of one already received is allowed, at least once).
(d) A silent neighbor: 300 events (100 domains x 3) for the receiver, one run asked for, timed
    until all arrived: alone, then with 300 events of another app written just before them for an
    endpoint that accepts connections and never answers (a hung app). Printed, no target: one
    endpoint that never answers should cost the others little (the sender's turns,
    workers/webhook_send.py), not its requests' timeouts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import sys
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    ROOT,
    BenchStack,
    BenchVoid,
    CpuMeter,
    bare_loop,
    command_cpu_seconds,
    create_app,
    group_cpu_seconds,
    say,
    wait_until,
)

from devstack.ports import free_port
from devstack.processes import ManagedProcess

HOST = "127.0.0.3"
LATENCY_EVENTS = 40
THROUGHPUT_DOMAINS, THROUGHPUT_PER_DOMAIN = 1_000, 10
OUTAGE_DOMAINS, OUTAGE_PER_DOMAIN = 100, 10
OUTAGE_SECONDS = 120.0
NEIGHBOR_DOMAINS, NEIGHBOR_PER_DOMAIN = 100, 3
P50_TARGET_S, RATIO_TARGET = 0.5, 0.5


_RECEIVER = r"""
import json, sys, time
from aiohttp import web

log = []

async def hook(request):
    body = await request.read()
    log.append((time.time(), request.headers.get("webhook-id", ""), body.decode()))
    return web.Response(status=204)

async def count(request):
    return web.json_response({"count": len(log)})

async def dump(request):
    return web.json_response([{"at": at, "id": mid, "body": body} for at, mid, body in log])

async def reset(request):
    log.clear()
    return web.json_response({"count": 0})

app = web.Application(client_max_size=1 << 20)
app.add_routes([web.post("/hooks", hook), web.get("/count", count), web.get("/log", dump),
                web.post("/reset", reset)])
web.run_app(app, host=sys.argv[1], port=int(sys.argv[2]), access_log=None, print=None)
"""

_BARE = r"""
import asyncio, json, sys, time
import aiohttp

async def main(requests, concurrency):
    pending = iter(requests)
    bad = 0
    connector = aiohttp.TCPConnector(limit=concurrency, keepalive_timeout=30)
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        async def worker():
            nonlocal bad
            for url, body, headers in pending:
                post = session.post(url, data=body.encode(), headers=headers, allow_redirects=False)
                async with post as response:
                    await response.content.read(1024)
                    if response.status != 204:
                        bad += 1
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started, bad

requests = json.load(open(sys.argv[1]))
cpu = time.process_time()
elapsed, bad = asyncio.run(main(requests, int(sys.argv[2])))
print(json.dumps({"elapsed": elapsed, "bad": bad, "cpu": time.process_time() - cpu}))
"""


class Receiver:
    def __init__(self, stack: BenchStack, port: int) -> None:
        self.stack, self.port, self.process = stack, port, None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/hooks"

    def start(self) -> Receiver:
        self.process = ManagedProcess(
            "receiver",
            [sys.executable, "-c", _RECEIVER, HOST, str(self.port)],
            self.stack.logs,
            env=dict(os.environ),
        ).start()
        self.process.wait_until(self._answers, timeout=30, what="answering")
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    def cpu_seconds(self) -> float:
        return group_cpu_seconds(self.process.pid) if self.process is not None else 0.0

    def _get(self, path: str):
        with urllib.request.urlopen(f"http://{HOST}:{self.port}{path}", timeout=30) as response:
            return json.loads(response.read())

    def _answers(self) -> bool:
        try:
            return "count" in self._get("/count")
        except OSError:
            return False

    def count(self) -> int:
        return self._get("/count")["count"]

    def log(self) -> list[dict]:
        return self._get("/log")

    def reset(self) -> None:
        request = urllib.request.Request(f"http://{HOST}:{self.port}/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass


def make_domains(app, prefix: str, count: int):
    from domains.models import Domain, DomainStatus

    Domain.objects.bulk_create(
        [
            Domain(app=app, name=f"{prefix}-{i}.bench.example", status=DomainStatus.CREATING)
            for i in range(count)
        ]
    )
    return list(Domain.objects.filter(app=app, name__startswith=f"{prefix}-").order_by("pk"))


def fail_once(domain_id: int, why: str) -> float:
    """One event (domain.failing), committed; returns the commit's time."""
    from domains.models import DomainStatus
    from domains.status import change_status

    if not change_status(domain_id, DomainStatus.FAILING, why, last_error=f"Failed: {why}"):
        raise BenchVoid(f"domain {domain_id} did not change status")
    committed = time.time()
    change_status(domain_id, DomainStatus.CREATING, "again")
    return committed


def run_latency(app, receiver: Receiver) -> float:
    domains = make_domains(app, "latency", LATENCY_EVENTS)
    receiver.reset()
    committed = {}
    for domain in domains:
        committed[domain.name] = fail_once(domain.pk, "latency")
        time.sleep(0.3)
    if not wait_until(lambda: receiver.count() >= LATENCY_EVENTS, timeout=60, interval=0.2):
        raise BenchVoid(f"only {receiver.count()} of {LATENCY_EVENTS} events arrived")
    delays = []
    for entry in receiver.log():
        body = json.loads(entry["body"])
        delays.append(entry["at"] - committed[body["data"]["domain"]])
    delays.sort()
    p50 = statistics.median(delays)
    say(
        f"    commit to receiver: p50 {p50 * 1000:.0f} ms, "
        f"p90 {delays[int(len(delays) * 0.9)] * 1000:.0f} ms, max {delays[-1] * 1000:.0f} ms"
    )
    return p50


_EVENTS_SQL = """
INSERT INTO domains_event (id, created, type, app_id, app_name, domain_id, domain_name, from_status,
    to_status, reason, records, data, dedupe_key)
SELECT gen_random_uuid(), now(), 'domain.failing', d.app_id, %(app_name)s, d.id, d.name, 'creating',
    'failing', 'Failed: event ' || n, '[]'::jsonb, '{}'::jsonb, ''
FROM domains_domain d, generate_series(1, %(per)s) AS n
WHERE d.app_id = %(app)s AND d.name LIKE %(prefix)s || '-%%'
ORDER BY n, d.id
"""


def write_events(app, per_domain: int, prefix: str = "throughput") -> float:
    """Writes `per_domain` events for each of the app's domains named `prefix`-N (with their backlog
    rows, domains.EventBacklog) in one transaction; returns the seconds it took, which the
    delivery's rate does not count."""
    from django.db import connection, transaction

    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            _EVENTS_SQL, {"app": app.pk, "app_name": app.name, "per": per_domain, "prefix": prefix}
        )
    return time.perf_counter() - started


def bare_requests(app, endpoint, secret: str, url: str) -> list:
    """The same signed payloads the product sends (the same bodies, signed the same way), for the
    bare loop."""
    from django.utils import timezone
    from standardwebhooks import Webhook

    from domains.models import Event
    from domains.webhooks import payload_bodies

    signer = Webhook(secret)
    now = timezone.now()
    ids = [
        str(pk)
        for pk in Event.objects.filter(app_id=app.pk, domain_name__startswith="throughput-")
        .order_by("seq")
        .values_list("id", flat=True)
    ]
    bodies = payload_bodies(ids)
    requests = []
    for event_id in ids:
        body = bodies[event_id]
        headers = {
            "webhook-id": event_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signer.sign(event_id, now, body),
        }
        requests.append((url, body, headers))
    return requests


def run_bare(receiver: Receiver, requests_file: Path, concurrency: int, count: int) -> tuple[float, dict]:
    """POSTs/s of the bare loop, and the CPU seconds its client and the receiver spent."""
    meter = CpuMeter({"receiver": receiver.cpu_seconds}).start()
    outcome = bare_loop(_BARE, str(requests_file), str(concurrency))
    return count / outcome["elapsed"], {"client": outcome["cpu"], **meter.stop()}


def cpu_line(spent: dict, count: int) -> str:
    return ", ".join(f"{name} {seconds * 1000 / count:.3f} ms" for name, seconds in spent.items())


def in_order(log: list[dict]) -> tuple[set[str], list[str]]:
    """The event ids received, and the domains whose events (first arrivals) came out of order."""
    seen, last_seq, disordered = set(), {}, set()
    for entry in log:
        if entry["id"] in seen:
            continue
        seen.add(entry["id"])
        data = json.loads(entry["body"])["data"]
        domain, seq = data["domain"], data["seq"]
        if seq < last_seq.get(domain, -1):
            disordered.add(domain)
        last_seq[domain] = seq
    return seen, sorted(disordered)


def run_product(receiver: Receiver, worker, count: int) -> tuple[float, dict]:
    """Deliveries/s, and the CPU seconds each part of the stack spent meanwhile."""
    from workers.tasks.webhooks import deliver_webhooks

    receiver.reset()
    meter = CpuMeter(
        {
            "workers": lambda: group_cpu_seconds(worker.pid),
            "postgres": lambda: command_cpu_seconds("postgres"),
            "redis": lambda: command_cpu_seconds("redis-server"),
            "receiver": receiver.cpu_seconds,
        }
    ).start()
    started = time.monotonic()
    deliver_webhooks.delay()
    if not wait_until(lambda: receiver.count() >= count, timeout=600, interval=0.1):
        raise BenchVoid(f"the product delivered {receiver.count()} of {count} in 600 s")
    elapsed = time.monotonic() - started
    spent = meter.stop()
    _, disordered = in_order(receiver.log())
    if disordered:
        raise BenchVoid(f"{len(disordered)} domains' events arrived out of order, e.g. {disordered[:3]}")
    return count / elapsed, spent


def run_outage(app, receiver: Receiver) -> tuple[int, float]:
    from domains.models import Event

    domains = make_domains(app, "outage", OUTAGE_DOMAINS)
    receiver.stop()
    say(f"    receiver stopped; {OUTAGE_DOMAINS * OUTAGE_PER_DOMAIN} events over {OUTAGE_SECONDS:.0f} s")
    started = time.monotonic()
    total = OUTAGE_DOMAINS * OUTAGE_PER_DOMAIN
    for n in range(total):
        domain = domains[n % OUTAGE_DOMAINS]
        fail_once(domain.pk, f"outage {n // OUTAGE_DOMAINS}")
        pause = started + OUTAGE_SECONDS * (n + 1) / total - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    expected = {
        str(pk) for pk in Event.objects.filter(domain_name__startswith="outage-").values_list("id", flat=True)
    }
    receiver.start()
    back = time.monotonic()
    say(f"    receiver back after {back - started:.0f} s")

    def received() -> int:
        ids = {entry["id"] for entry in receiver.log()}
        return len(expected & ids)

    wait_until(lambda: received() >= len(expected), timeout=480, interval=2.0)
    recovered = time.monotonic() - back
    seen, disordered = in_order(receiver.log())
    lost = len(expected - seen)
    say(
        f"    {len(expected) - lost} of {len(expected)} arrived {recovered:.0f} s "
        "after the receiver came back"
    )
    if disordered:
        raise BenchVoid(f"{len(disordered)} domains' events arrived out of order, e.g. {disordered[:3]}")
    return lost, recovered


class SilentListener:
    """A receiver that accepts every connection and never answers (a hung app, or a firewall that
    lets the handshake through): each request to it ends at WEBHOOK_TIMEOUT_SECONDS."""

    def __init__(self) -> None:
        self.sock = socket.create_server((HOST, 0), backlog=1024)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/hooks"

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                self.held.append(self.sock.accept()[0])

    def close(self) -> None:
        self.sock.close()
        for held in self.held:
            held.close()


def run_neighbor(app, receiver: Receiver) -> tuple[float, float]:
    """Seconds until the receiver has its events (NEIGHBOR_DOMAINS x NEIGHBOR_PER_DOMAIN) of one
    run asked for: alone, then with as many events of another app written just before them, for
    an endpoint that never answers."""
    from domains.webhooks import create_endpoint
    from workers.tasks.webhooks import deliver_webhooks

    count = NEIGHBOR_DOMAINS * NEIGHBOR_PER_DOMAIN
    make_domains(app, "neighbor", NEIGHBOR_DOMAINS)
    silent_app = create_app("silent", "hung")
    make_domains(silent_app, "hung", NEIGHBOR_DOMAINS)
    listener = SilentListener()
    silent_endpoint, _ = create_endpoint(silent_app, listener.url)
    timed = []
    try:
        for beside in (False, True):
            receiver.reset()
            if beside:
                write_events(silent_app, NEIGHBOR_PER_DOMAIN, prefix="hung")
            write_events(app, NEIGHBOR_PER_DOMAIN, prefix="neighbor")
            started = time.monotonic()
            deliver_webhooks.delay()
            if not wait_until(lambda: receiver.count() >= count, timeout=300, interval=0.05):
                raise BenchVoid(f"the receiver got {receiver.count()} of {count} in 300 s")
            timed.append(time.monotonic() - started)
            _, disordered = in_order(receiver.log())
            if disordered:
                raise BenchVoid(f"{len(disordered)} domains' events arrived out of order")
    finally:
        # Its deliveries go with it: the runs that follow have none of them to retry.
        silent_endpoint.delete()
        listener.close()
    return timed[0], timed[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-outage", action="store_true", help="(a), (b) and (d) only")
    args = parser.parse_args()
    say(__doc__.split("\n\n")[0])
    started = time.perf_counter()
    stack = BenchStack("webhooks")
    stack.env.update({"WEBHOOK_ALLOW_HTTP": "1", "WEBHOOK_ALLOWED_NETWORKS": f"{HOST}/32"})
    result = {}
    receiver = None
    try:
        stack.start_redis()
        stack.prepare_database()
        worker = stack.start_worker("worker")
        receiver = Receiver(stack, free_port()).start()
        from django.conf import settings

        from domains.webhooks import create_endpoint

        app = create_app("bench", "hooks")
        endpoint, secret = create_endpoint(app, receiver.url)

        say(f"(a) latency: {LATENCY_EVENTS} status changes, one every 0.3 s")
        result["p50"] = run_latency(app, receiver)

        count = THROUGHPUT_DOMAINS * THROUGHPUT_PER_DOMAIN
        say(f"(b) throughput: {count:,} events ({THROUGHPUT_DOMAINS} domains x {THROUGHPUT_PER_DOMAIN})")
        make_domains(app, "throughput", THROUGHPUT_DOMAINS)
        writes = [write_events(app, THROUGHPUT_PER_DOMAIN)]
        requests_file = stack.state_dir / "requests.json"
        requests_file.write_text(json.dumps(bare_requests(app, endpoint, secret, receiver.url)))
        # As many in flight as the product may keep: its parallel runs, each with its requests.
        concurrency = settings.WEBHOOK_CONCURRENCY * settings.WEBHOOK_PARALLEL_RUNS
        receiver.reset()
        bare, bare_cpu = run_bare(receiver, requests_file, concurrency, count)
        bares = [bare]
        say(f"    bare loop ({concurrency} in flight): {bare:,.0f} POSTs/s")
        # Each side three times, interleaved (bare, product, bare, product, bare, product; each of
        # the product's runs with 10,000 new events): a shared machine's noise falls on both sides
        # alike, and each side's best counts. The bare loop's third run keeps one run's own
        # concurrency: it is faster with fewer in flight on a small machine, and the baseline is
        # the best it does.
        one_run = settings.WEBHOOK_CONCURRENCY
        bare_after = [(concurrency, "again"), (one_run, f"({one_run} in flight)")]
        products = []
        for n in range(3):
            if n:
                writes.append(write_events(app, THROUGHPUT_PER_DOMAIN))
            products.append(run_product(receiver, worker, count))
            which = "Certwright's delivery" + (" again" if n else "")
            say(f"    {which}: {products[-1][0]:,.0f} deliveries/s, each domain in order")
            if n < len(bare_after):
                in_flight, label = bare_after[n]
                receiver.reset()
                bares.append(run_bare(receiver, requests_file, in_flight, count)[0])
                say(f"    bare loop {label}: {bares[-1]:,.0f} POSTs/s")
        product, product_cpu = max(products, key=lambda measured: measured[0])
        # Where the CPU went (the machine's cores are what both sides share).
        say(f"    CPU per delivery (the best run): {cpu_line(product_cpu, count)}")
        say(f"    CPU per bare POST: {cpu_line(bare_cpu, count)}")
        # Before each product run, not in its time: the events' insert (a backlog row each).
        writing_ms = statistics.median(writes) * 1000
        say(f"    writing {count:,} events, before each run: median {writing_ms:.0f} ms")
        result.update(deliveries=product, bare=max(bares))

        if args.skip_outage:
            result["lost"] = -1
        else:
            say("(c) outage: the receiver down for 2 minutes (beat runs from now on, as in make run)")
            stack.start_beat()
            result["lost"], _ = run_outage(app, receiver)

        neighbor_count = NEIGHBOR_DOMAINS * NEIGHBOR_PER_DOMAIN
        say(f"(d) a silent neighbor: {neighbor_count} events of {NEIGHBOR_DOMAINS} domains to the receiver")
        alone, beside = run_neighbor(app, receiver)
        say(f"    alone: all arrived {alone:.2f} s after the run was asked for")
        say(
            f"    {neighbor_count} events of another app written just before them, to an endpoint that "
            f"accepts and never answers (each request ends at its {settings.WEBHOOK_TIMEOUT_SECONDS:g} s "
            f"timeout): {beside:.2f} s"
        )
    except BenchVoid as void:
        say(f"VOID: {void}")
        return 1
    finally:
        # The receiver is its own process, not one of the stack's: stopped here, or it outlives the run.
        if receiver is not None:
            receiver.stop()
        stack.close()
    say(f"total {time.perf_counter() - started:.0f} s")
    say(
        f"targets: event_to_delivery_p50_s <= {P50_TARGET_S}, ratio_vs_bare >= {RATIO_TARGET}, "
        "lost_after_outage = 0"
    )
    say(
        f"RESULT event_to_delivery_p50_s={result['p50']:.3f} deliveries_per_s={result['deliveries']:.0f} "
        f"bare_posts_per_s={result['bare']:.0f} ratio_vs_bare={result['deliveries'] / result['bare']:.2f} "
        f"lost_after_outage={result['lost']}"
    )
    return 0


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
