"""The webhook commands: `webhooks`, `webhooks-add`, `webhooks-remove`, `webhooks-rotate-secret`,
`webhooks-enable`, `webhooks-retry`, `webhooks-deliveries`, `webhooks-delivery`, `webhooks-redeliver`."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from itertools import islice
from typing import TYPE_CHECKING, Any

from cli.client import ApiClient, segment
from cli.errors import UsageError
from cli.output import emit_json, table, truncate, when

if TYPE_CHECKING:
    from cli.main import Config

EVENT_TYPES = (
    "domain.action_required",
    "domain.failing",
    "domain.in_use",
    "domain.deleted",
    "certificate.issued",
    "certificate.renewed",
    "certificate.renewal_failed",
    "certificate.expiring",
    "certificate.expired",
    "custom_certificate.expiring",
)
DELIVERY_STATES = ("pending", "delivered", "failed")


def _path(config: Config, *rest: Any) -> str:
    return "/".join([f"apps/{segment(config.app)}/webhooks", *(str(part) for part in rest)])


def _events_text(endpoint: dict) -> str:
    events = endpoint.get("events") or []
    return ",".join(events) if events else "all"


def _print_secret(endpoint: dict, what: str) -> None:
    print(f"{what}. Its signing secret, shown this once (keep it to verify signatures):")
    print(f"  {endpoint.get('secret', '?')}")
    until = endpoint.get("previous_secret_valid_until")
    if until:
        print(f"The previous secret also signs until {when(until)}.")


def cmd_webhooks(client: ApiClient, config: Config, args: argparse.Namespace) -> None:
    endpoints = list(client.paginate(_path(config)))
    if args.json:
        emit_json(endpoints)
        return
    if not endpoints:
        print(f"No webhook endpoints on {config.app}: add one with `certwright webhooks-add URL`.")
        return
    rows = [
        (
            str(endpoint.get("id", "?")),
            endpoint.get("url", "?"),
            truncate(_events_text(endpoint), 40),
            "on" if endpoint.get("enabled") else "DISABLED",
            when(endpoint.get("last_success_at")),
            when(endpoint.get("failing_since")),
        )
        for endpoint in endpoints
    ]
    print("\n".join(table(["ID", "URL", "EVENTS", "ENABLED", "LAST ANSWERED", "FAILING SINCE"], rows)))
    for endpoint in endpoints:
        if not endpoint.get("enabled") and endpoint.get("disabled_reason"):
            print(f"{endpoint.get('id')}: {endpoint['disabled_reason']}")


def _event_list(value: str | None) -> list[str]:
    if not value:
        return []
    events = [item.strip() for item in value.split(",") if item.strip()]
    unknown = [item for item in events if item not in EVENT_TYPES]
    if unknown:
        raise UsageError(f"unknown event type {unknown[0]!r}; the types are: {', '.join(EVENT_TYPES)}")
    return events


def cmd_webhooks_add(client: ApiClient, config: Config, args: argparse.Namespace) -> None:
    body = {"url": args.url, "events": _event_list(args.events), "description": args.description or ""}
    endpoint = client.request("POST", _path(config), json=body)
    if args.json:
        emit_json(endpoint)
        return
    _print_secret(endpoint, f"Added webhook endpoint {endpoint.get('id', '?')} for {_events_text(endpoint)}")


def cmd_webhooks_remove(client: ApiClient, config: Config, args: argparse.Namespace) -> None:
    client.request("DELETE", _path(config, args.id))
    if args.json:
        emit_json({"removed": args.id})
        return
    print(f"Removed webhook endpoint {args.id} and its deliveries.")


def cmd_webhooks_rotate_secret(client: ApiClient, config: Config, args: argparse.Namespace) -> None:
    endpoint = client.request("POST", _path(config, args.id, "rotate-secret"))
    if args.json:
        emit_json(endpoint)
        return
    _print_secret(endpoint, f"New secret for webhook endpoint {args.id}")


def cmd_webhooks_enable(client: ApiClient, config: Config, args: argparse.Namespace) -> None:
    endpoint = client.request("POST", _path(config, args.id, "enable"))
    if args.json:
        emit_json(endpoint)
        return
    print(
        f"Webhook endpoint {args.id} is enabled: events from now on are sent to {endpoint.get('url', '?')}."
    )


def cmd_webhooks_retry(client: ApiClient, config: Config, args: argparse.Namespace) -> None:
    answer = client.request("POST", _path(config, args.id, "retry"))
    if args.json:
        emit_json(answer)
        return
    retried = answer.get("retried", 0)
    if retried:
        print(f"The waiting deliveries of {retried} domain(s) to webhook endpoint {args.id} are sent now.")
    else:
        print(f"No delivery to webhook endpoint {args.id} was waiting out a backoff.")


def cmd_webhooks_deliveries(client: ApiClient, config: Config, args: argparse.Namespace) -> None:
    params = {"state": args.state} if args.state else None
    deliveries = list(islice(client.paginate(_path(config, args.id, "deliveries"), params), args.limit))
    if args.json:
        emit_json(deliveries)
        return
    if not deliveries:
        print(
            f"No deliveries for webhook endpoint {args.id}{f' in state {args.state}' if args.state else ''}."
        )
        return
    rows = [
        (
            str(delivery.get("id", "?")),
            delivery.get("event_type", "?"),
            delivery.get("domain", "?"),
            delivery.get("state", "?"),
            str(delivery.get("attempts", "?")),
            str(delivery.get("last_status_code") or "-"),
            when(delivery.get("delivered_at") or delivery.get("next_attempt_at")),
            truncate(delivery.get("last_error") or "") or "-",
        )
        for delivery in deliveries
    ]
    headers = ["ID", "EVENT", "DOMAIN", "STATE", "TRIES", "HTTP", "DELIVERED / NEXT", "LAST ERROR"]
    print("\n".join(table(headers, rows)))


def cmd_webhooks_delivery(client: ApiClient, config: Config, args: argparse.Namespace) -> None:
    delivery = client.get(_path(config, args.id, "deliveries", args.delivery))
    if args.json:
        emit_json(delivery)
        return
    print(f"Delivery {delivery.get('id')}: {delivery.get('event_type')} of {delivery.get('domain')}")
    print(f"  event id (webhook-id)  {delivery.get('event_id')}")
    print(f"  state                  {delivery.get('state')}, {delivery.get('attempts')} attempts")
    if delivery.get("last_error"):
        print(f"  last error             {delivery['last_error']}")
    for attempt in delivery.get("attempt_log") or []:
        code = attempt.get("status_code") or "-"
        line = f"  {when(attempt.get('at'))}  HTTP {code}  {attempt.get('latency_ms', '?')} ms"
        if attempt.get("error"):
            line += f"  {attempt['error']}"
        print(line)
        excerpt = (attempt.get("response_excerpt") or "").strip()
        if excerpt:
            print(f"      {truncate(excerpt, 100)}")


def cmd_webhooks_redeliver(client: ApiClient, config: Config, args: argparse.Namespace) -> None:
    delivery = client.request("POST", _path(config, args.id, "deliveries", args.delivery, "redeliver"))
    if args.json:
        emit_json(delivery)
        return
    print(
        f"Delivery {args.delivery} ({delivery.get('event_type', '?')}) will be sent again, with the same id."
    )


Command = Callable[..., argparse.ArgumentParser]


def register_webhook_commands(command: Command) -> None:
    """Adds the webhook commands through build_parser's `command(name, handler, summary)`."""
    sub = command("webhooks", cmd_webhooks, "list the app's webhook endpoints")
    sub = command("webhooks-add", cmd_webhooks_add, "add a webhook endpoint (prints its secret, once)")
    sub.add_argument(
        "--events",
        metavar="TYPE,...",
        help=f"only these event types (default: all): {', '.join(EVENT_TYPES)}",
    )
    sub.add_argument("--description", help="a note for you (at most 200 characters)")
    sub.add_argument("url", metavar="URL", help="where events are POSTed (https://...)")
    for name, handler, summary in (
        ("webhooks-remove", cmd_webhooks_remove, "remove a webhook endpoint and its deliveries"),
        (
            "webhooks-rotate-secret",
            cmd_webhooks_rotate_secret,
            "a new signing secret (the old one keeps signing for 24 hours)",
        ),
        ("webhooks-enable", cmd_webhooks_enable, "turn a disabled webhook endpoint back on"),
        ("webhooks-retry", cmd_webhooks_retry, "send an endpoint's waiting deliveries now, skipping backoff"),
    ):
        command(name, handler, summary).add_argument("id", metavar="ID", type=int)
    sub = command("webhooks-deliveries", cmd_webhooks_deliveries, "an endpoint's deliveries, newest first")
    sub.add_argument("--state", choices=DELIVERY_STATES, help="only deliveries in this state")
    sub.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    sub.add_argument("id", metavar="ID", type=int)
    for name, handler, summary in (
        ("webhooks-delivery", cmd_webhooks_delivery, "one delivery with its attempts"),
        ("webhooks-redeliver", cmd_webhooks_redeliver, "send a delivery's event again (same webhook-id)"),
    ):
        sub = command(name, handler, summary)
        sub.add_argument("id", metavar="ID", type=int)
        sub.add_argument("delivery", metavar="DELIVERY", type=int)
