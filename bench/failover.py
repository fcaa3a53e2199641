"""Failover to a second certificate authority: how many of a burst of new domains still get a
certificate when the primary CA is down, and how fast new domains are issued once it is known down.

Two real Pebbles (bench/_failover_stack.py), listed in ACME_ISSUERS: the primary, and a second CA
that requires External Account Binding; both resolve names through one challtestsrv and validate
HTTP-01 at the same web port. Certwright's web, worker and beat run as `make run` starts them, with
ISSUER_BREAKER_COOLDOWN_SECONDS=600 so that the primary's circuit breaker stays open to the end.

(1) Healthy primary: N domains created one at a time (each after the previous is In use), each timed
    from `create_domain` to In use; every certificate must come from the primary's account.
(2) The primary's Pebble is stopped (its DNS stays), then 200 domains are created at once; the run
    waits, at most 6 minutes, until all are In use, and counts those whose certificate was ordered
    through the second CA's account (issued_of_200; target 200).
(3) Once the primary's breaker is open (its Issuer row's breaker_open_until in the future), N more
    domains one at a time, timed the same way; ratio = their median / the healthy median (target
    at most 1.5: with the breaker open a new domain goes straight to the second CA).
Every name is under its own registered domain, as customers' domains are. A run in which a domain
misses its time limit, or a certificate comes from the wrong CA, is void (exit status 1).
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _failover_stack import PRIMARY, SECOND, FailoverStack
from _harness import ROOT, BenchVoid, create_app, median, say, wait_until

BREAKER_COOLDOWN_SECONDS = 600
RATIO_TARGET = 1.5
# How long one domain of a one-at-a-time phase may take to reach In use.
ONE_DOMAIN_TIMEOUT_S = 60
# How long the primary's breaker may take to open once the burst is issued.
BREAKER_TIMEOUT_S = 60
PROGRESS_EVERY_S = 30


def names(prefix: str, count: int) -> list[str]:
    # Each name under its own registered domain: Let's Encrypt's (and Certwright's) limit of 50
    # certificates per registered domain per week does not apply across them.
    return [f"www.{prefix}-{i}-bench.com" for i in range(count)]


def point_at_platform(stack: FailoverStack, app_id: int, hosts: list[str]) -> None:
    """A record to this machine and the ownership TXT record for the app, as a customer would."""
    from domains.ownership import challenge_name, ownership_token

    for host in hosts:
        stack.challtestsrv.add_a(host, ["127.0.0.1"])
        stack.challtestsrv.set_txt(challenge_name(host), ownership_token(app_id, host))


def issuers_of(stack: FailoverStack, domain_ids: list[int]) -> collections.Counter[str]:
    """How many of the domains have a certificate, by the issuer whose account ordered it."""
    from certificates.models import Certificate

    rows = (
        Certificate.objects.filter(domain_id__in=domain_ids, account__isnull=False)
        .values_list("domain_id", "account__directory_url")
        .distinct()
    )
    issuers_by_domain: dict[int, set[str]] = collections.defaultdict(set)
    for domain_id, directory_url in rows:
        issuers_by_domain[domain_id].add(stack.issuer_of(directory_url))
    return collections.Counter("+".join(sorted(issuers)) for issuers in issuers_by_domain.values())


def in_use_count(domain_ids: list[int]) -> int:
    from domains.models import Domain, DomainStatus

    return Domain.objects.filter(pk__in=domain_ids, status=DomainStatus.IN_USE).count()


def describe_waiting(stack: FailoverStack, domain_ids: list[int], limit: int = 3) -> str:
    """Where the domains not In use stand: their statuses, their orders by issuer and state, and
    the most frequent errors of both."""
    from certificates.models import Order
    from domains.models import Domain, DomainStatus

    waiting = Domain.objects.filter(pk__in=domain_ids).exclude(status=DomainStatus.IN_USE)
    statuses = collections.Counter(waiting.values_list("status", flat=True))
    text = ", ".join(f"{status} {count}" for status, count in statuses.most_common()) or "none"
    orders = Order.objects.filter(domain__in=waiting).values_list(
        "account__directory_url", "state", "step_attempts"
    )
    by_issuer_and_state: collections.Counter[str] = collections.Counter()
    most_attempts: dict[str, int] = {}
    for directory_url, state, attempts in orders:
        key = f"{stack.issuer_of(directory_url)} {state}"
        by_issuer_and_state[key] += 1
        most_attempts[key] = max(most_attempts.get(key, 0), attempts)
    if by_issuer_and_state:
        text += "; their orders: " + ", ".join(
            f"{key} {count} (step attempts up to {most_attempts[key]})"
            for key, count in by_issuer_and_state.most_common()
        )
    errors = collections.Counter(
        f"domain: {error[:200]}"
        for error in waiting.exclude(last_error="").values_list("last_error", flat=True)
    )
    errors.update(
        f"order: {problem[:200]}"
        for problem in Order.objects.filter(domain__in=waiting)
        .exclude(problem="")
        .values_list("problem", flat=True)
    )
    for error, count in errors.most_common(limit):
        text += f"\n        {count} x {error}"
    return text


def one_at_a_time(stack: FailoverStack, app, hosts: list[str], expected_issuer: str) -> list[float]:
    """Creates each domain after the previous is In use; seconds from creation to In use, each.
    Void if one takes longer than ONE_DOMAIN_TIMEOUT_S or is issued by another issuer."""
    from domains.models import Domain, DomainStatus
    from domains.services import create_domain

    latencies = []
    for host in hosts:
        started = time.monotonic()
        domain = create_domain(app, host)
        in_use = wait_until(
            lambda pk=domain.pk: Domain.objects.filter(pk=pk, status=DomainStatus.IN_USE).exists(),
            timeout=ONE_DOMAIN_TIMEOUT_S,
            interval=0.01,
        )
        if not in_use:
            where = describe_waiting(stack, [domain.pk])
            raise BenchVoid(f"{host} was not In use after {ONE_DOMAIN_TIMEOUT_S} s: {where}")
        latencies.append(time.monotonic() - started)
        issuers = issuers_of(stack, [domain.pk])
        if issuers != {expected_issuer: 1}:
            raise BenchVoid(f"{host} was issued by {dict(issuers)}, not by {expected_issuer} alone")
    return latencies


def burst_while_primary_down(stack: FailoverStack, app, hosts: list[str], timeout: float) -> float:
    """Creates every domain at once and waits until all are In use; seconds it took. Void, with
    where each domain stands, if the time runs out."""
    from domains.services import create_domain

    started = time.monotonic()
    domain_ids = [create_domain(app, host).pk for host in hosts]
    say(f"    {len(hosts)} domains created in {time.monotonic() - started:.1f} s")
    next_report = started + PROGRESS_EVERY_S
    # One indexed count per half second: the bench's own queries are PostgreSQL CPU the product shares.
    while (issued := in_use_count(domain_ids)) < len(hosts):
        now = time.monotonic()
        if now - started > timeout:
            raise BenchVoid(
                f"{issued} of {len(hosts)} domains In use after {timeout:.0f} s, certificates by issuer "
                f"{dict(issuers_of(stack, domain_ids))}; the others: {describe_waiting(stack, domain_ids)}"
            )
        if now >= next_report:
            say(
                f"    {now - started:4.0f} s: {issued} In use, certificates by issuer "
                f"{dict(issuers_of(stack, domain_ids))}"
            )
            next_report += PROGRESS_EVERY_S
        time.sleep(0.5)
    return time.monotonic() - started


def breaker_column_exists() -> bool:
    from certificates.issuer_models import Issuer

    return any(field.name == "breaker_open_until" for field in Issuer._meta.get_fields())


def primary_breaker_open() -> bool:
    from django.utils import timezone

    from certificates.issuer_models import Issuer

    return Issuer.objects.filter(name=PRIMARY, breaker_open_until__gt=timezone.now()).exists()


def describe_primary_breaker() -> str:
    from django.utils import timezone

    from certificates.issuer_models import Issuer

    row = Issuer.objects.get(name=PRIMARY)
    open_for = (row.breaker_open_until - timezone.now()).total_seconds() if row.breaker_open_until else 0
    return (
        f"open for {open_for:.0f} s more, after {row.breaker_failures} failures in a row "
        f"(last: {row.breaker_reason[:200] or 'none recorded'})"
    )


def orders_by_issuer(stack: FailoverStack, domain_ids: list[int]) -> dict[str, int]:
    """The domains' orders, by issuer and state: a failover shows as orders left at the primary."""
    from certificates.models import Order

    rows = Order.objects.filter(domain_id__in=domain_ids).values_list("account__directory_url", "state")
    return dict(collections.Counter(f"{stack.issuer_of(url)} {state}" for url, state in rows).most_common())


def run(stack: FailoverStack, samples: int, burst: int, burst_timeout: float) -> dict[str, float]:
    from domains.models import Domain

    app = create_app("bench", "failover-app")
    healthy_hosts = names("healthy", samples)
    burst_hosts = names("burst", burst)
    failover_hosts = names("failover", samples)
    point_at_platform(stack, app.pk, healthy_hosts + burst_hosts + failover_hosts)

    say(f"(1) healthy primary: {samples} domains one at a time")
    healthy = one_at_a_time(stack, app, healthy_hosts, PRIMARY)
    primary_median_s = median(healthy)
    say(
        f"    median {primary_median_s:.2f} s to In use (min {min(healthy):.2f}, max {max(healthy):.2f}), "
        f"all from {PRIMARY}"
    )

    say(f"(2) primary's Pebble stopped; {burst} domains at once, at most {burst_timeout:.0f} s")
    stack.stop_primary()
    burst_s = burst_while_primary_down(stack, app, burst_hosts, burst_timeout)
    burst_ids = list(Domain.objects.filter(app=app, name__in=burst_hosts).values_list("pk", flat=True))
    by_issuer = issuers_of(stack, burst_ids)
    issued_by_second = by_issuer.get(SECOND, 0)
    say(f"    all {burst} In use after {burst_s:.1f} s; certificates by issuer {dict(by_issuer)}")
    say(f"    their orders by issuer and state: {orders_by_issuer(stack, burst_ids)}")

    if breaker_column_exists():
        waited = time.monotonic()
        if not wait_until(primary_breaker_open, timeout=BREAKER_TIMEOUT_S, interval=0.5):
            raise BenchVoid(f"the primary's breaker was not open {BREAKER_TIMEOUT_S} s after the burst")
        say(
            f"(3) the primary's breaker (after waiting {time.monotonic() - waited:.1f} s): "
            f"{describe_primary_breaker()}"
        )
    else:
        say("(3) Issuer has no breaker_open_until (no circuit breaker yet): going on after the burst")
    say(f"    primary still down: {samples} new domains one at a time")
    failover = one_at_a_time(stack, app, failover_hosts, SECOND)
    failover_median_s = median(failover)
    failover_ids = list(Domain.objects.filter(app=app, name__in=failover_hosts).values_list("pk", flat=True))
    say(
        f"    median {failover_median_s:.2f} s to In use (min {min(failover):.2f}, max {max(failover):.2f}), "
        f"all from {SECOND}; their orders by issuer and state: {orders_by_issuer(stack, failover_ids)}"
    )
    return {
        "primary_median_s": primary_median_s,
        "failover_median_s": failover_median_s,
        "ratio": failover_median_s / primary_median_s,
        "issued_of_burst": issued_by_second,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "-n", type=int, default=20, help="domains timed one at a time, in each of (1) and (3)"
    )
    parser.add_argument(
        "--burst", type=int, default=200, help="domains created at once with the primary down"
    )
    parser.add_argument("--timeout", type=float, default=360, help="seconds the burst may take")
    parser.add_argument("--keep", action="store_true", help="keep the database, state and logs")
    args = parser.parse_args()
    say(__doc__.split("\n\n")[0])
    started = time.monotonic()
    stack = FailoverStack("failover", BREAKER_COOLDOWN_SECONDS)
    try:
        stack.start()
        result = run(stack, args.n, args.burst, args.timeout)
    except BenchVoid as void:
        say(f"VOID: {void}")
        return 1
    finally:
        stack.close(keep=args.keep)
    say(f"total {time.monotonic() - started:.0f} s")
    say(f"targets: ratio <= {RATIO_TARGET}, issued_of_{args.burst} = {args.burst}")
    say(
        f"RESULT primary_median_s={result['primary_median_s']:.2f} "
        f"failover_median_s={result['failover_median_s']:.2f} ratio={result['ratio']:.2f} "
        f"issued_of_{args.burst}={result['issued_of_burst']}"
    )
    return 0


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
