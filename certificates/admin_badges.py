"""Statuses as coloured badges and long reasons on one line (the full text on hover), for the
admin's lists; the colours are dashboard/templates/dashboard/style.html's, legible in the light and
dark themes (white on a dark background, at least 4.5:1)."""

from __future__ import annotations

from django.utils.html import format_html

REASON_CHARACTERS = 90

# Orders' and certificates' states, in the domain statuses' colours.
ORDER_STATE_COLOURS = {
    "pending": "creating",
    "authorizing": "creating",
    "validating": "creating",
    "finalizing": "creating",
    "downloading": "creating",
    "valid": "in_use",
    "invalid": "failing",
    "cancelled": "disabled",
}


def badge(colour: str, text: str) -> str:
    return format_html('<span class="cw-badge cw-{}">{}</span>', colour, text)


def flattened(text: str | None) -> str:
    """`text` on one line: every run of whitespace (newlines too) one space."""
    return " ".join((text or "").split())


def one_line(text: str, limit: int = REASON_CHARACTERS) -> str:
    """`text` on one line, cut to `limit` characters; the whole of it in the tooltip."""
    flat = flattened(text)
    if not flat:
        return "-"
    shown = flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"
    return format_html('<span class="cw-reason" title="{}">{}</span>', flat, shown)
