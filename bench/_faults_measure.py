"""What the fault matrix counts for one fault's phase: work done, duplicates (in the database and
at the CA, from Pebble's own log), and what is left undone.

A phase is one fault's run: `new` domains created at its start, and `renewing` certificates made
due at its start (the domains the previous phase issued). A new domain is done when it is In use;
a renewal is done when its domain holds a Let's Encrypt certificate stored since the phase began.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

# Pebble 2.4 logs one line per certificate it issues: "Issued certificate serial S for order O".
_ISSUED = re.compile(r"Issued certificate serial (?P<serial>[0-9a-f]+) for order (?P<order>\S+)")
# ... and one line when it starts.
_PEBBLE_STARTED = re.compile(r"Starting Pebble ACME server")


@dataclass
class Phase:
    """One fault's work and its clock (time.monotonic() and the database's datetime)."""

    fault: str
    new_ids: list[int]
    renewing: dict[int, int]  # domain id -> the certificate id it is renewing from
    started: object  # datetime, the phase's start in the database's clock
    pebble_log_offset: int
    proxy_orders_offset: int  # how many orders the proxy had seen when the phase began
    fault_end: float = 0.0
    done_at: float | None = None
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def expected(self) -> int:
        return len(self.new_ids) + len(self.renewing)


def done_counts(phase: Phase) -> tuple[int, int]:
    """(new domains In use, renewals stored) of the phase."""
    from certificates.models import Certificate, CertificateSource
    from domains.models import Domain, DomainStatus

    new = Domain.objects.filter(pk__in=phase.new_ids, status=DomainStatus.IN_USE).count()
    renewed = (
        Certificate.objects.filter(
            domain_id__in=list(phase.renewing),
            source=CertificateSource.LETSENCRYPT,
            created__gte=phase.started,
        )
        .values("domain_id")
        .distinct()
        .count()
    )
    return new, renewed


def done_count_when_reachable(phase: Phase) -> int | None:
    """done_counts' sum, or None while PostgreSQL cannot be reached (the benchmark's own polling
    rides out the PostgreSQL fault the same way the product must)."""
    from django.db import DatabaseError, connections

    try:
        return sum(done_counts(phase))
    except DatabaseError:
        connections.close_all()
        return None


def database_duplicates(phase: Phase) -> tuple[int, int]:
    """(certificates, valid orders) stored for the phase's domains since it began beyond one per
    domain: each is a certificate issued twice for one need."""
    from certificates.models import Certificate, CertificateSource, Order, OrderState

    ids = phase.new_ids + list(phase.renewing)
    certificates = Counter(
        Certificate.objects.filter(
            domain_id__in=ids, source=CertificateSource.LETSENCRYPT, created__gte=phase.started
        ).values_list("domain_id", flat=True)
    )
    orders = Counter(
        Order.objects.filter(
            domain_id__in=ids, state=OrderState.VALID, created__gte=phase.started
        ).values_list("domain_id", flat=True)
    )
    return (
        sum(count - 1 for count in certificates.values() if count > 1),
        sum(count - 1 for count in orders.values() if count > 1),
    )


def ca_counts(phase: Phase, pebble_log: str, proxy_orders: list[dict]) -> dict[str, int]:
    """From Pebble's log since the phase began and the orders the ACME proxy saw Pebble create, for
    the phase's names: orders created, certificates issued, duplicates (certificates beyond one per
    name), and forgotten (issued by a Pebble that then restarted, before anyone downloaded them:
    Pebble forgets them with everything else, so their names are rightly ordered again; they are
    counted apart, not as duplicates). An issued order the proxy never saw counts as a duplicate's
    candidate under its own id, so it can only add duplicates, never hide one."""
    from domains.models import Domain

    ids = phase.new_ids + list(phase.renewing)
    names = set(Domain.objects.filter(pk__in=ids).values_list("name", flat=True))
    phase_orders: dict[str, dict] = {}
    for order in proxy_orders[phase.proxy_orders_offset :]:
        identifiers = order.get("identifiers") or []
        if len(identifiers) == 1 and identifiers[0] in names and order.get("url"):
            phase_orders[urlsplit(order["url"]).path.rsplit("/", 1)[-1]] = order
    issued: Counter[str] = Counter()
    forgotten = 0
    # Each Pebble process's part of the log: a restart starts a new one.
    segments = _PEBBLE_STARTED.split(pebble_log)
    for number, segment in enumerate(segments):
        restarted_after = number < len(segments) - 1
        for match in _ISSUED.finditer(segment):
            order = phase_orders.get(match["order"])
            if order is None:
                continue
            if restarted_after and not order.get("cert_id"):
                forgotten += 1
            else:
                issued[order["identifiers"][0]] += 1
    return {
        "ca_orders": len(phase_orders),
        "ca_issued": sum(issued.values()) + forgotten,
        "ca_duplicates": sum(count - 1 for count in issued.values() if count > 1),
        "ca_forgotten": forgotten,
    }


def undone(phase: Phase, limit: int = 3) -> list[tuple[str, str, str]]:
    """Some of the phase's domains not done, with their status and last error."""
    from certificates.models import Certificate, CertificateSource
    from domains.models import Domain, DomainStatus

    renewed = set(
        Certificate.objects.filter(
            domain_id__in=list(phase.renewing),
            source=CertificateSource.LETSENCRYPT,
            created__gte=phase.started,
        ).values_list("domain_id", flat=True)
    )
    rows = list(
        Domain.objects.filter(pk__in=phase.new_ids)
        .exclude(status=DomainStatus.IN_USE)
        .values_list("name", "status", "last_error")[:limit]
    )
    waiting = [pk for pk in phase.renewing if pk not in renewed][:limit]
    rows += list(Domain.objects.filter(pk__in=waiting).values_list("name", "status", "last_error"))
    return rows[:limit]


def wait_for_phase(phase: Phase, deadline: float, interval: float = 1.0) -> int:
    """Polls until every piece of the phase's work is done or `deadline` (monotonic) passes;
    records when it was all done; returns how many are done."""
    done = 0
    while True:
        counted = done_count_when_reachable(phase)
        if counted is not None:
            done = counted
            if done >= phase.expected:
                phase.done_at = time.monotonic()
                return done
        if time.monotonic() >= deadline:
            return done
        time.sleep(interval)
