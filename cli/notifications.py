"""The email notification commands: `notifications` (what you are mailed about, and how often) and
`notifications-set`."""

from __future__ import annotations

import argparse
import re
from typing import TYPE_CHECKING

from cli.client import ApiClient
from cli.errors import UsageError
from cli.output import duration, emit_json, when
from cli.webhooks import EVENT_TYPES, Command

if TYPE_CHECKING:
    from cli.main import Config

# The API's bound on the digest window: a week.
MAX_DIGEST_SECONDS = 7 * 86400
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def digest_seconds(value: str) -> int | None:
    """`0`, `90s`, `30m`, `1h`, `1d` as seconds; `default` as None (the platform's)."""
    text = value.strip().lower()
    if text == "default":
        return None
    match = re.fullmatch(r"(\d{1,7})([smhd]?)", text)
    if not match:
        raise UsageError(f"--digest takes 0, a time such as 30m, 1h or 1d, or default; not {value!r}")
    seconds = int(match.group(1)) * _UNITS[match.group(2) or "s"]
    if seconds > MAX_DIGEST_SECONDS:
        raise UsageError(f"--digest is at most a week (7d), not {value!r}")
    return seconds


def _digest_text(seconds: int) -> str:
    if seconds == 0:
        return "each event as it comes (gathered for a minute)"
    return f"at most one mail every {duration(seconds)}"


def cmd_notifications(client: ApiClient, config: Config, args: argparse.Namespace) -> None:
    found = client.request("GET", "notifications")
    if args.json:
        emit_json(found)
        return
    address = found.get("email") or "(none: your account has no address, so nothing is mailed)"
    events = found.get("events") or []
    digest = found.get("digest_effective_seconds") or 0
    lines = [
        ("Mail to", address),
        ("Mails", "on" if found.get("email_enabled") else "off"),
        ("Events", ", ".join(events) if events else "none"),
        (
            "Digest",
            _digest_text(digest)
            + (" (the platform's default)" if found.get("digest_seconds") is None else ""),
        ),
        ("Waiting", str(found.get("waiting", 0))),
        ("Last mailed", when(found.get("last_mailed_at"))),
    ]
    if found.get("all_apps"):
        lines.append(("Scope", "every app's events (staff)"))
    if found.get("last_mail_error"):
        lines.append(("Last error", found["last_mail_error"]))
    for label, value in lines:
        print(f"{label + ':':13}{value}")


def cmd_notifications_set(client: ApiClient, config: Config, args: argparse.Namespace) -> None:
    body: dict = {}
    if args.on or args.off:
        body["email_enabled"] = bool(args.on)
    if args.events is not None:
        events = [item.strip() for item in args.events.split(",") if item.strip()]
        unknown = [item for item in events if item not in EVENT_TYPES]
        if unknown:
            raise UsageError(f"unknown event type {unknown[0]!r}; the types are: {', '.join(EVENT_TYPES)}")
        body["events"] = events
    if args.digest is not None:
        body["digest_seconds"] = digest_seconds(args.digest)
    if args.all_apps is not None:
        body["all_apps"] = args.all_apps == "on"
    if not body:
        raise UsageError("nothing to change: give --on/--off, --events, --digest or --all-apps")
    found = client.request("PATCH", "notifications", json=body)
    if args.json:
        emit_json(found)
        return
    print("Saved.")
    cmd_notifications(client, config, argparse.Namespace(json=False))


def register_notification_commands(command: Command) -> None:
    """Adds the notification commands through build_parser's `command(name, handler, summary)`."""
    command(
        "notifications",
        cmd_notifications,
        "which events you are mailed about, and how often",
        needs_app=False,
    )
    sub = command(
        "notifications-set",
        cmd_notifications_set,
        "choose which events are mailed to you, and how often",
        needs_app=False,
    )
    switch = sub.add_mutually_exclusive_group()
    switch.add_argument("--on", action="store_true", help="mail me")
    switch.add_argument("--off", action="store_true", help="mail me nothing")
    sub.add_argument(
        "--events",
        metavar="TYPE,...",
        help=f"the event types mailed (an empty value: none): {', '.join(EVENT_TYPES)}",
    )
    sub.add_argument(
        "--digest",
        metavar="TIME",
        help="no two mails closer than this: 0 (each event), 30m, 1h, 1d ... up to 7d, or default",
    )
    sub.add_argument(
        "--all-apps", choices=("on", "off"), help="staff only: every app's events, not only yours"
    )
