"""What bench/hosts.py counts: the work a fault held, when it moved on, duplicates in Pebble's log and
in the database, and the sizes the README's sizing section quotes.

A domain "stood still" through a fault when the work in flight for it, its check claimed
(`claim_token`) or its order leased (`lease_token`), kept the same token from the fault's start
until the fault had had its effect (a killed host: 10 s later; a cut host: when it is healed).
That is the fault's holder's work, and also work that merely waited in the broker's queue behind a
backlog. Of those, the fault "held" the ones that only moved on once the lease they held at the
fault's start had run out (live workers never wait for a lease: only the re-drive and the sweeps
take work whose lease expired). The fault's recovery is the time from its end until the last domain
that stood still was In use (the history row of that change).
"""

from __future__ import annotations

import datetime
import re
from collections import Counter
from dataclasses import dataclass, field

ADDED_ORDER = re.compile(r'Added order "(?P<order>[^"]+)" to the db')
ISSUED = re.compile(r"Issued certificate serial (?P<serial>\S+) for order (?P<order>\S+)")


def in_flight() -> dict[int, tuple[str, datetime.datetime]]:
    """Domain id -> the token its work in flight holds and that lease's end: the active order's
    lease, else the check's claim (domains that are not In use yet)."""
    from certificates.models import ACTIVE_ORDER_STATES, Order
    from domains.models import SWEPT_STATUSES, Domain

    held = {
        domain_id: (f"check {token}", lease_end)
        for domain_id, token, lease_end in Domain.objects.filter(
            status__in=SWEPT_STATUSES, claim_token__isnull=False
        ).values_list("id", "claim_token", "next_attempt_at")
    }
    for domain_id, token, lease_end in Order.objects.filter(
        state__in=ACTIVE_ORDER_STATES, lease_token__isnull=False
    ).values_list("domain_id", "lease_token", "lease_until"):
        held[domain_id] = (f"order {token}", lease_end)
    return held


@dataclass
class Fault:
    """One fault: what it did to which host, when, and what it held."""

    name: str
    host: str
    started: datetime.datetime | None = None
    ended: datetime.datetime | None = None
    before: dict[int, tuple[str, datetime.datetime]] = field(default_factory=dict)
    stood_still: set[int] = field(default_factory=set)
    held: set[int] = field(default_factory=set)
    settled: bool = False
    recovery_s: float | None = None

    def begin(self, now: datetime.datetime) -> None:
        self.started = now
        self.before = in_flight()

    def settle(self) -> None:
        """What stood still under the same token from the fault's start until now."""
        after = in_flight()
        self.stood_still = {
            domain_id for domain_id, lease in self.before.items() if after.get(domain_id) == lease
        }
        self.settled = True


def in_use_times(domain_ids: set[int] | None = None) -> dict[int, datetime.datetime]:
    """Domain id -> when it first became In use (its history row)."""
    from django.db.models import Min

    from domains.models import DomainEvent, DomainStatus

    events = DomainEvent.objects.filter(to_status=DomainStatus.IN_USE)
    if domain_ids is not None:
        events = events.filter(domain_id__in=domain_ids)
    return dict(events.values("domain_id").annotate(first=Min("created")).values_list("domain_id", "first"))


def recovery_of(fault: Fault) -> None:
    """The domains the fault held, and the seconds from its end until the last domain that stood
    still was In use (None if one never was)."""
    times = in_use_times(fault.stood_still)
    fault.held = {
        domain_id
        for domain_id in fault.stood_still
        if domain_id not in times or times[domain_id] >= fault.before[domain_id][1]
    }
    if len(times) < len(fault.stood_still):
        fault.recovery_s = None
        return
    fault.recovery_s = max([0.0, *((moment - fault.ended).total_seconds() for moment in times.values())])


@dataclass
class Duplicates:
    pebble_orders: int
    pebble_certificates: int
    orders_placed_twice: int
    pebble_extra_certificates: int
    database_extra_certificates: int
    unknown_pebble_orders: int
    # Name -> the Pebble order ids of a name ordered more than once (what to look at in the logs).
    twice: dict[str, list[str]] = field(default_factory=dict)

    @property
    def certificates(self) -> int:
        return self.pebble_extra_certificates + self.database_extra_certificates


def _names_of_unrecorded(order_ids: list[str]) -> dict[str, str]:
    """Pebble order id -> its name, asked of Pebble with the product's own account (orders the
    database never recorded: only the CA knows their names)."""
    from certificates.acme_client import client_for, get_account
    from certificates.models import Order

    if not order_ids:
        return {}
    acme = client_for(get_account())
    base = Order.objects.exclude(order_url="").values_list("order_url", flat=True).first().rsplit("/", 1)[0]
    names = {}
    for order_id in order_ids:
        body = acme._post_as_get(f"{base}/{order_id}").json()
        names[order_id] = ",".join(sorted(identifier["value"] for identifier in body["identifiers"]))
    return names


def duplicates(pebble_log: str) -> Duplicates:
    """Orders and certificates counted in Pebble's log and in the database. Each Pebble order is
    mapped to its name through the order URL the database stored, or, for an order the database
    never recorded, by asking Pebble. A name placed twice: more than one Pebble order or more than
    one Order row."""
    from certificates.models import Certificate, CertificateSource, Order
    from domains.models import Domain

    pebble_orders = [match["order"] for match in ADDED_ORDER.finditer(pebble_log)]
    issued = [match["order"] for match in ISSUED.finditer(pebble_log)]
    domain_names = dict(Domain.objects.values_list("id", "name"))
    name_of = {
        url.rsplit("/", 1)[-1]: domain_names[domain_id]
        for url, domain_id in Order.objects.exclude(order_url="").values_list("order_url", "domain_id")
    }
    unknown = [order for order in pebble_orders if order not in name_of]
    name_of.update(_names_of_unrecorded(unknown))
    orders_per_name: dict[str, list[str]] = {}
    for order in pebble_orders:
        orders_per_name.setdefault(name_of[order], []).append(order)
    rows_per_domain = Counter(Order.objects.values_list("domain_id", flat=True))
    twice = {name: orders for name, orders in orders_per_name.items() if len(orders) > 1}
    for domain_id, rows in rows_per_domain.items():
        if rows > 1:
            twice.setdefault(domain_names[domain_id], [])
    certificates_per_name = Counter(name_of[order] for order in issued)
    stored_per_domain = Counter(
        Certificate.objects.filter(source=CertificateSource.LETSENCRYPT).values_list("domain_id", flat=True)
    )
    return Duplicates(
        pebble_orders=len(pebble_orders),
        pebble_certificates=len(issued),
        orders_placed_twice=len(twice),
        pebble_extra_certificates=sum(count - 1 for count in certificates_per_name.values() if count > 1),
        database_extra_certificates=sum(count - 1 for count in stored_per_domain.values() if count > 1),
        unknown_pebble_orders=len(unknown),
        twice=twice,
    )


def database_sizes() -> tuple[int, dict[str, tuple[int, int]]]:
    """The database's size in bytes, and for each history, event or feed table its rows and bytes."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_database_size(current_database())")
        total = cursor.fetchone()[0]
        cursor.execute(
            "SELECT relname, pg_total_relation_size(relid) FROM pg_stat_user_tables "
            "WHERE relname ~ '(event|history|change|outbox|issuance)' ORDER BY relname"
        )
        tables = {}
        for name, size in cursor.fetchall():
            cursor.execute(f'SELECT count(*) FROM "{name}"')  # noqa: S608 (names from the catalog)
            tables[name] = (cursor.fetchone()[0], size)
    return total, tables
