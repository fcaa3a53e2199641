"""Guarded status changes of a domain, each leaving a history row."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from domains.models import Domain, DomainEvent, DomainStatus


def change_status(
    domain_id: int,
    to: DomainStatus,
    reason: str,
    *,
    allowed_from: Iterable[str] | None = None,
    holding=None,
    now: datetime | None = None,
    **fields,
) -> bool:
    """Moves the domain to `to` (and sets `fields`) if it is in `allowed_from` and, when given, its
    claim token is still `holding`; records the change in its history. Returns whether it happened."""
    now = now or timezone.now()
    # No savepoint: inside a caller's transaction a failure here must undo the caller's work too.
    with transaction.atomic(savepoint=False):
        rows = Domain.objects.select_for_update().filter(pk=domain_id)
        if holding is not None:
            rows = rows.filter(claim_token=holding)
        current = rows.values_list("status", flat=True).first()
        if current is None or (allowed_from is not None and current not in set(allowed_from)):
            return False
        Domain.objects.filter(pk=domain_id).update(status=to, updated=now, **fields)
        if current != to:
            DomainEvent.objects.create(
                domain_id=domain_id, created=now, from_status=current, to_status=to, reason=reason
            )
    return True


change_status.alters_data = True
