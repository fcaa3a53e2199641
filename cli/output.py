"""How the CLI prints: JSON for scripts, timestamps, tables, shortened messages."""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from typing import Any

ERROR_WIDTH = 60


def emit_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


def when(value: str | None) -> str:
    """An API timestamp as `2025-04-01 12:00 UTC` (as given if it does not parse)."""
    if not value:
        return "-"
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        return value
    if moment.tzinfo is not None:
        moment = moment.astimezone(datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def day(value: str | None) -> str:
    return when(value)[:10] if value else "-"


def truncate(text: str, width: int = ERROR_WIDTH) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def duration(seconds: int) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} s"


def on_off(value: Any) -> str:
    return "on" if value else "off"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]
    return [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [headers, *rows]
    ]
