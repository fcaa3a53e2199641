"""The fault matrix: eight faults, one at a time, each during a run of 300 new domains and 300
renewals, against a stack whose every service is private to the run (bench/_faults_stack.py).

The faults, in order: PostgreSQL restarted (fast shutdown, every session cut); the broker Redis
killed and started empty (queued tasks lost); the quota Redis flushed; Pebble restarted (its
accounts, orders and root forgotten; the harness adds the new root to EXTRA_TRUSTED_ROOTS as an
operator would, and nothing of Certwright is restarted); the CA out for 60 s, answering every
other request with a 500 and leaving the rest unanswered until the outage ends (the test ACME
proxy's outage, mode `mixed`); the DNS resolvers not answering for
60 s (a UDP relay in front of challtestsrv that drops every query); the web processes (the HTTP-01
responder) killed for 30 s; the beat leader killed with SIGKILL (two beats run, a leader and a
standby, as on two hosts; the standby takes over when the lease runs out, and another beat is
started as the new standby; this phase's renewals wait for the new leader's own sweep).

Each phase: the previous phase's 300 certificates are made due for renewal (`renew_at` now, and
their ARI check pushed 6 h away so it cannot move them back), the renewal sweep is sent at once
(as the admin's *Run selected tasks* would, rather than waiting up to a minute for beat's tick),
300 domains under their own registered domains are created with their DNS pointing at the
platform. The fault strikes where it hurts: the resolvers fall silent before the work is sent
(every check and renewal pre-flight meets them), and so do the web processes (every order's
HTTP-01 self check, and any validation, meets a dead responder: struck later, the CA had validated
nearly everything already) and
the beat leader (the renewals wait for the new leader's sweep); the broker restarts and the quota
Redis is flushed right after it is sent (its tasks still queued, its tokens just spent); the others
strike once a fifth of the work is done (or after 20 s), with orders in every state. Then the benchmark waits
until all 600 are done, at most 5 minutes after the fault ended. The first phase issues 300
certificates without a fault (the first renewals' certificates).

Per fault:
- issued: new domains In use plus renewals stored since the phase began, of 600 expected;
- duplicates: certificates beyond one per name in the phase, the largest of three counts: Pebble's
  own log ("Issued certificate ... for order O", each order's name from the orders the proxy saw
  Pebble create), Certificate rows, and orders that reached `valid`. Certificates a Pebble issued
  just before it was restarted, which nobody had downloaded yet, are gone with it: their names are
  rightly ordered again, and those certificates are counted apart (ca_forgot), not as duplicates;
- stuck: the phase's domains not done 5 minutes after the fault ended;
- recovery: seconds from the fault's end (the service back, or the outage over) until the last of
  the phase's 600 was done (0 when all were done before the fault ended);
- survived: nothing lost, no duplicate, none stuck, and recovery within 5 minutes.
All settings as they ship (leases, backoff, retries); only Let's Encrypt's per-account order limit
is raised, as for every benchmark (bench/_harness.py says why).

The last line: RESULT faults=8 survived=N issued_of_expected=F duplicates=N stuck=N max_recovery_s=S
(`issued_of_expected` a fraction over all eight faults: 1.0 when every certificate was issued).
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _faults_measure import (
    Phase,
    ca_counts,
    database_duplicates,
    done_count_when_reachable,
    undone,
    wait_for_phase,
)
from _faults_stack import FaultStack
from _harness import ROOT, create_app, say, wait_until

RECOVERY_LIMIT_S = 300
OUTAGE_S = 60
WEB_DOWN_S = 30
# The fault strikes once this share of the phase's work is done, or after this many seconds.
STRIKE_SHARE = 0.2
STRIKE_AFTER_S = 20


@dataclass
class Fault:
    name: str
    # When it strikes: "before" the phase's work is sent (so the work meets it: the resolvers),
    # "queued" right after it is sent (its tasks still in the broker), or "midway", once a fifth of
    # the work is done (orders in every state).
    strike: str
    inflict: Callable[[], str]  # returns when the fault is over, with a word on what it did
    # The renewals wait for beat's own sweep (sent by the standby that took over) instead of one
    # the benchmark sends.
    beat_sweeps: bool = False


def faults(stack: FaultStack) -> list[Fault]:
    def pebble() -> str:
        roots = stack.restart_pebble()
        return f"new root trusted ({roots} roots in EXTRA_TRUSTED_ROOTS)"

    def ca_outage() -> str:
        stack.ca_outage("mixed", OUTAGE_S)
        return f"{OUTAGE_S} s of 500s and unanswered requests"

    return [
        Fault("postgresql_restart", "midway", lambda: (stack.restart_postgres(), "fast shutdown, start")[1]),
        Fault("broker_restart", "queued", lambda: (stack.restart_broker(), "queues lost")[1]),
        Fault("quota_flush", "queued", lambda: (stack.flush_quota(), "FLUSHALL")[1]),
        Fault("pebble_restart", "midway", pebble),
        Fault("ca_outage", "midway", ca_outage),
        Fault("dns_timeout", "before", lambda: (stack.resolvers_silent(OUTAGE_S), f"{OUTAGE_S} s")[1]),
        Fault("web_killed", "before", lambda: (stack.web_down(WEB_DOWN_S), f"{WEB_DOWN_S} s")[1]),
        Fault(
            "beat_leader_killed",
            "before",
            lambda: f"leader of term {stack.kill_beat_leader()} killed, a new standby started",
            beat_sweeps=True,
        ),
    ]


def hosts_for(phase_number: int, count: int) -> list[str]:
    # Each under its own registered domain, as customers' domains are.
    return [f"www.f{phase_number}-{i}-faults.com" for i in range(count)]


def start_phase(
    stack: FaultStack,
    app,
    fault: str,
    number: int,
    count: int,
    renew_from: list[int],
    send_sweep: bool = True,
) -> Phase:
    """Makes `renew_from`'s certificates due and sends the renewal sweep (unless beat must), then
    creates `count` domains."""
    from celery import current_app
    from django.utils import timezone

    from certificates.models import Certificate, CertificateSource
    from domains.ownership import challenge_name, ownership_token
    from domains.services import create_domain

    hosts = hosts_for(number, count)
    for host in hosts:
        stack.bench.pebble.challtestsrv.add_a(host, ["127.0.0.1"])
        stack.bench.pebble.challtestsrv.set_txt(challenge_name(host), ownership_token(app.pk, host))
    renewing = dict(
        Certificate.objects.filter(domain_id__in=renew_from, source=CertificateSource.LETSENCRYPT)
        .order_by("domain_id", "created")
        .values_list("domain_id", "pk")
    )
    started = timezone.now()
    phase = Phase(
        fault, [], renewing, started, stack.pebble_log.stat().st_size, len(stack.control.get("orders"))
    )
    if renewing:
        Certificate.objects.filter(pk__in=renewing.values()).update(
            renew_at=started, ari_next_check=started + datetime.timedelta(hours=6)
        )
        if send_sweep:
            current_app.send_task("workers.tasks.dns.sweep_due_renewals", queue="dns")
    phase.new_ids = [create_domain(app, host).pk for host in hosts]
    return phase


def run_fault(stack: FaultStack, app, fault: Fault, number: int, count: int, renew_from: list[int]) -> Phase:
    """One fault's phase: the work sent, the fault inflicted (in a thread, when its `strike` says),
    its end recorded, then everything counted."""
    outcome: dict[str, object] = {}

    def inflict() -> None:
        try:
            outcome["detail"] = fault.inflict()
        except BaseException as exc:  # re-raised in the main thread
            outcome["error"] = exc

    striker = threading.Thread(target=inflict, name=f"fault-{fault.name}", daemon=True)
    struck = time.monotonic()
    if fault.strike == "before":
        striker.start()
        time.sleep(1)
    phase = start_phase(stack, app, fault.name, number, count, renew_from, send_sweep=not fault.beat_sweeps)
    if fault.strike == "queued":
        struck = time.monotonic()
        striker.start()
    elif fault.strike == "midway":
        wait_until(
            lambda: (done_count_when_reachable(phase) or 0) >= STRIKE_SHARE * phase.expected,
            timeout=STRIKE_AFTER_S,
            interval=0.5,
        )
        struck = time.monotonic()
        striker.start()
    striker.join()
    if "error" in outcome:
        raise outcome["error"]
    phase.fault_end = time.monotonic()
    say(f"    {fault.name} ({fault.strike}): {outcome['detail']}; lasted {phase.fault_end - struck:.1f} s")
    finish_phase(stack, phase)
    return phase


def finish_phase(stack: FaultStack, phase: Phase) -> None:
    """Waits for the phase's work (at most RECOVERY_LIMIT_S after the fault ended) and counts."""
    done = wait_for_phase(phase, phase.fault_end + RECOVERY_LIMIT_S)
    pebble_log = _read_from(stack.pebble_log, phase.pebble_log_offset)
    ca = ca_counts(phase, pebble_log, stack.control.get("orders"))
    db_certificates, db_orders = database_duplicates(phase)
    phase.counts = {
        "done": done,
        "stuck": phase.expected - done,
        "duplicates": max(ca["ca_duplicates"], db_certificates, db_orders),
        **ca,
        "db_duplicate_certificates": db_certificates,
        "db_duplicate_orders": db_orders,
    }


def _read_from(path: Path, offset: int) -> str:
    with path.open("rb") as handle:
        handle.seek(offset)
        return handle.read().decode(errors="replace")


def recovery_s(phase: Phase) -> float | None:
    if phase.done_at is None:
        return None
    return max(0.0, phase.done_at - phase.fault_end)


def survived(phase: Phase) -> bool:
    recovery = recovery_s(phase)
    return (
        phase.counts["stuck"] == 0
        and phase.counts["duplicates"] == 0
        and recovery is not None
        and recovery <= RECOVERY_LIMIT_S
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=300, help="new domains (and renewals) per fault")
    parser.add_argument("--only", nargs="*", help="run only these faults (names as in the table)")
    args = parser.parse_args()
    say(__doc__.split("\n\n")[0])
    began = time.monotonic()
    stack = FaultStack()
    phases: list[Phase] = []
    try:
        stack.start()
        app = create_app("faults", "matrix")
        say(f"warm-up: {args.n} certificates without a fault")
        warm = start_phase(stack, app, "warm-up", 0, args.n, [])
        warm.fault_end = time.monotonic()
        finish_phase(stack, warm)
        if warm.counts["stuck"]:
            say(f"VOID: the warm-up left {warm.counts['stuck']} undone, e.g. {undone(warm)}")
            return 1
        say(f"    {args.n} issued in {warm.done_at - warm.fault_end:.0f} s")
        previous = warm
        selected = [fault for fault in faults(stack) if not args.only or fault.name in args.only]
        for number, fault in enumerate(selected, start=1):
            say(f"fault {number}: {fault.name}")
            renew_from = [pk for pk in previous.new_ids if pk not in set(_undone_ids(previous))]
            phase = run_fault(stack, app, fault, number, args.n, renew_from)
            phases.append(phase)
            recovery = recovery_s(phase)
            say(
                f"    done {phase.counts['done']}/{phase.expected}, duplicates {phase.counts['duplicates']}, "
                f"stuck {phase.counts['stuck']}, recovery "
                + (f"{recovery:.0f} s" if recovery is not None else f"> {RECOVERY_LIMIT_S} s")
            )
            if phase.counts["stuck"]:
                say(f"    undone, e.g. {undone(phase)}")
            previous = phase
    finally:
        stack.stop()
    print_table(phases)
    expected = sum(phase.expected for phase in phases)
    issued = sum(phase.counts["done"] for phase in phases)
    recoveries = [recovery_s(phase) for phase in phases]
    worst = max((RECOVERY_LIMIT_S + 1 if r is None else r) for r in recoveries) if recoveries else 0
    say(f"total {time.monotonic() - began:.0f} s")
    say(
        f"RESULT faults={len(phases)} survived={sum(survived(phase) for phase in phases)} "
        f"issued_of_expected={issued / expected if expected else 0:.4f} "
        f"duplicates={sum(phase.counts['duplicates'] for phase in phases)} "
        f"stuck={sum(phase.counts['stuck'] for phase in phases)} max_recovery_s={worst:.0f}"
    )
    return 0


def _undone_ids(phase: Phase) -> list[int]:
    from domains.models import Domain, DomainStatus

    return list(
        Domain.objects.filter(pk__in=phase.new_ids)
        .exclude(status=DomainStatus.IN_USE)
        .values_list("pk", flat=True)
    )


def print_table(phases: list[Phase]) -> None:
    header = (
        f"{'fault':<20} {'issued':>9} {'dup':>4} {'stuck':>5} {'recovery_s':>10} {'ca_orders':>9} "
        f"{'ca_certs':>8} {'ca_dup':>6} {'ca_forgot':>9} {'db_dup_c':>8} {'db_dup_o':>8} survived"
    )
    say(header)
    for phase in phases:
        c = phase.counts
        recovery = recovery_s(phase)
        say(
            f"{phase.fault:<20} {c['done']:>4}/{phase.expected:<4} {c['duplicates']:>4} {c['stuck']:>5} "
            f"{(f'{recovery:.0f}' if recovery is not None else '-'):>10} {c['ca_orders']:>9} "
            f"{c['ca_issued']:>8} {c['ca_duplicates']:>6} {c['ca_forgotten']:>9} "
            f"{c['db_duplicate_certificates']:>8} {c['db_duplicate_orders']:>8} "
            f"{'yes' if survived(phase) else 'NO'}"
        )


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
