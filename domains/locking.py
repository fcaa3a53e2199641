"""Named locking querysets. A statement that locks several rows locks them in primary-key order,
so two sweeps (or a sweep and a customer's request) that lock overlapping rows wait for each other
instead of deadlocking."""

from __future__ import annotations

from django.db.models import QuerySet

from certificates.models import Certificate, Order
from domains.models import Domain


def lock_domains(ids: list[int] | None = None, **filters) -> QuerySet[Domain]:
    """The domains of `ids` (and `filters`), locked FOR UPDATE in id order when evaluated."""
    rows = Domain.objects.select_for_update().filter(**filters)
    if ids is not None:
        rows = rows.filter(pk__in=ids)
    return rows.order_by("pk")


def lock_certificates(ids: list[int] | None = None, **filters) -> QuerySet[Certificate]:
    """The certificates of `ids` (and `filters`), locked FOR UPDATE in id order when evaluated."""
    rows = Certificate.objects.select_for_update().filter(**filters)
    if ids is not None:
        rows = rows.filter(pk__in=ids)
    return rows.order_by("pk")


def lock_orders(**filters) -> QuerySet[Order]:
    """The orders matching `filters`, locked FOR UPDATE in id order when evaluated."""
    return Order.objects.select_for_update().filter(**filters).order_by("pk")
