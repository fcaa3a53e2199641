"""Re-seals every stored secret under the newest key of KEY_ENCRYPTION_KEYS."""

from __future__ import annotations

from django.apps import apps
from django.db import transaction

from certificates.sealing import SealedSecretField


def sealed_columns() -> list[tuple[type, list[str]]]:
    """Every model with SealedSecretField columns, so new models are covered without being listed."""
    found = []
    for model in apps.get_models():
        names = [f.name for f in model._meta.concrete_fields if isinstance(f, SealedSecretField)]
        if names:
            found.append((model, names))
    return found


def reseal_all_secrets(batch_size: int = 500) -> dict[str, int]:
    """Re-encrypts every sealed column with the newest key; returns the rows rewritten per model.

    Rows are locked batch by batch, so a writer that seals a new secret meanwhile is never overwritten
    with an older one. Idempotent: running it twice rewrites rows again but changes no secret.
    """
    counts: dict[str, int] = {}
    for model, fields in sealed_columns():
        label = model._meta.label
        counts[label] = 0
        last_pk = None
        while True:
            with transaction.atomic():
                rows = (
                    model._default_manager.select_for_update(of=("self",)).order_by("pk").only("pk", *fields)
                )
                if last_pk is not None:
                    rows = rows.filter(pk__gt=last_pk)
                batch = list(rows[:batch_size])
                if not batch:
                    break
                for row in batch:
                    for name in fields:
                        value = getattr(row, name)
                        if value is not None:
                            setattr(row, name, value.sealed_with_newest_key())
                model._default_manager.bulk_update(batch, fields)
                counts[label] += len(batch)
                last_pk = batch[-1].pk
    return counts
