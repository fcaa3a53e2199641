"""Reading the routers' change feed (certificates.ServedChange): what changed after a cursor, and
what each changed name may serve from now on.

A name's candidates are every certificate it may serve at any moment from now: the valid custom
one first, then its Let's Encrypt ones (only while Let's Encrypt is on), newest first, each with
its validity window. A router picks, at each handshake, the first candidate whose window holds
the moment; that is `certificates.serving`'s rule, so a custom certificate that ends at T is served
until T and the Let's Encrypt one from T, at the second, by the router's own clock and with no
event at T (and with Certwright down). An empty list tells the router to drop the name.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from dataclasses import dataclass

from django.db import connection, transaction
from django.utils import timezone

from certificates.models import Certificate, CertificateSource, FeedHorizon, ServedChange
from certificates.serving import servable_source, serving_order


@dataclass(frozen=True)
class NameChange:
    """The latest change of one name after the cursor, and what the name may serve now."""

    seq: int
    name: str
    candidates: list[Certificate]


@dataclass(frozen=True)
class Changes:
    """The changes after a cursor, one per name, and the cursor to ask from next."""

    cursor: int
    names: list[NameChange]
    # The first feed row read (0: none), which tells whether rows right after the cursor are gone.
    first: int = 0


# A name's candidates, as certificates.serving's rule has them (servable_source, serving_order),
# hand-written: routers ask this on every change, and compiling the ORM's CASE expressions cost
# more than the statement. tests/certificates/test_served_changes.py pins it to the rule.
_CANDIDATES_SQL = """
SELECT c.*, d.name AS domain_name
FROM certificates_certificate c JOIN domains_domain d ON d.id = c.domain_id
  JOIN domains_app a ON a.id = d.app_id
WHERE d.name = ANY(%(names)s) AND c.not_after > %(now)s
  AND (c.source = %(custom)s OR d.letsencrypt_enabled) AND c.revoked_at IS NULL
  AND (%(all_regions)s OR a.region_id = ANY(%(regions)s))
ORDER BY d.name, c.source <> %(custom)s, c.not_after DESC, c.id DESC
"""

_FEED_SQL = """
SELECT seq, name FROM certificates_servedchange
WHERE seq > %(after)s AND (%(all_regions)s OR region_id = ANY(%(regions)s) OR region_id IS NULL)
ORDER BY seq LIMIT %(limit)s
"""


def candidates(names: list[str], now: datetime.datetime, regions: list[int] | None = None) -> dict:
    """For each of `names`, the certificates it may serve from `now` on, in serving order (the
    domain's region among `regions`, when given)."""
    params = {
        "names": names,
        "now": now,
        "custom": CertificateSource.CUSTOM.value,
        "all_regions": regions is None,
        "regions": list(regions or []),
    }
    found: dict[str, list[Certificate]] = {name: [] for name in names}
    for certificate in Certificate.objects.raw(_CANDIDATES_SQL, params):
        found[certificate.domain_name].append(certificate)
    return found


def changes_after(
    after: int,
    regions: list[int] | None = None,
    limit: int = 1000,
    now: datetime.datetime | None = None,
) -> Changes:
    """The names changed after `after` (in `regions`, with the changes of no region that every
    router is told), at most `limit` feed rows read, each with what it may serve now.

    Two statements, no transaction: the certificates are read after the feed rows, so they are
    at least as new as the cursor returned. A change committed in between shows early and comes
    again with its own row; a router applying a name's latest state twice ends where it should."""
    now = now or timezone.now()
    params = {"after": after, "limit": limit, "all_regions": regions is None, "regions": list(regions or [])}
    with connection.cursor() as cursor:
        cursor.execute(_FEED_SQL, params)
        read = cursor.fetchall()
    if not read:
        return Changes(after, [])
    latest = {name: seq for seq, name in read}
    served = candidates(list(latest), now, regions)
    names = [NameChange(seq, name, served[name]) for name, seq in sorted(latest.items(), key=lambda i: i[1])]
    return Changes(read[-1][0], names, read[0][0])


def feed_horizon() -> int:
    """The last sequence number retention pruned (0: none ever was, workers/retention.py): a
    cursor before it may have missed changes."""
    horizon = FeedHorizon.objects.values_list("pruned_through", flat=True).first()
    return horizon or 0


def feed_end() -> int:
    """The last sequence number of the feed (0 while it is empty): a cursor beyond it comes from
    another database (restored or replaced), and its router must take a snapshot again."""
    last = ServedChange.objects.order_by("-seq").values_list("seq", flat=True).first()
    return last or 0


# Rows the snapshot reads from PostgreSQL at a time (a server-side cursor): its memory is this many
# certificates, whatever the number served.
SNAPSHOT_BATCH = 500


def snapshot(
    regions: list[int] | None = None, now: datetime.datetime | None = None
) -> Iterator[int | tuple[str, list[Certificate]]]:
    """Everything served now or later (in `regions`, when given), read in one snapshot: first the
    feed's cursor it is consistent with (an int), then each name with its candidates in serving
    order, names sorted. Streamed from a server-side cursor, SNAPSHOT_BATCH rows at a time; the
    transaction stays open until the generator is exhausted or closed."""
    now = now or timezone.now()
    outer = connection.in_atomic_block
    with transaction.atomic():
        if not outer:
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        yield feed_end()
        rows = Certificate.objects.filter(servable_source(), not_after__gt=now).select_related("domain")
        if regions is not None:
            rows = rows.filter(domain__app__region_id__in=regions)
        name, group = None, []
        for certificate in rows.order_by("domain__name", *serving_order()).iterator(
            chunk_size=SNAPSHOT_BATCH
        ):
            if certificate.domain.name != name:
                if group:
                    yield name, group
                name, group = certificate.domain.name, []
            group.append(certificate)
        if group:
            yield name, group
