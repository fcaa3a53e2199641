"""The certificate authority commands: `issuers` (the platform's CAs, in order, and whether each is
failing now) and `domains-issuer` (pin a domain's orders to one of them, or let it use any)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from cli.client import ApiClient, segment
from cli.errors import UsageError
from cli.output import emit_json, table
from cli.webhooks import Command

if TYPE_CHECKING:
    from cli.main import Config

_STATES = {
    "closed": "in use",
    "open": "failing: new orders go to the next one for now",
    "half-open": "being tried again",
}


def cmd_issuers(client: ApiClient, config: Config, args: argparse.Namespace) -> None:
    issuers = client.request("GET", "issuers")
    if args.json:
        emit_json(issuers)
        return
    rows = [
        (
            issuer.get("name", "?") + (" (primary)" if issuer.get("primary") else ""),
            ", ".join(issuer.get("caa") or []) or "-",
            _STATES.get(issuer.get("state", ""), issuer.get("state", "?")),
        )
        for issuer in issuers
    ]
    print("\n".join(table(("NAME", "CAA ALLOWS", "STATE"), rows)))


def cmd_domains_issuer(client: ApiClient, config: Config, args: argparse.Namespace) -> None:
    if args.any == (args.issuer is not None):
        raise UsageError("give an ISSUER (see `certwright issuers`), or --any to let the domain use any")
    issuer = "" if args.any else args.issuer
    path = f"apps/{segment(config.app)}/domains/{segment(args.name)}"
    domain = client.request("PATCH", path, json={"issuer": issuer})
    if args.json:
        emit_json(domain)
        return
    name = domain.get("name", args.name)
    if issuer:
        print(f"{name} now orders its certificates from {issuer} only, from its next certificate on.")
    else:
        print(
            f"{name} now orders its certificates from any of the platform's certificate authorities, "
            "in order."
        )
    print("`certwright domains-retry` renews now.")


def register_issuer_commands(command: Command) -> None:
    """Adds the issuer commands through build_parser's `command(name, handler, summary)`."""
    command("issuers", cmd_issuers, "list the platform's certificate authorities, in order", needs_app=False)
    sub = command(
        "domains-issuer",
        cmd_domains_issuer,
        "pin a domain's certificates to one certificate authority (from its next certificate on)",
    )
    sub.add_argument(
        "--any", action="store_true", help="let it use any, in the platform's order (the default)"
    )
    sub.add_argument("name", metavar="NAME")
    sub.add_argument("issuer", metavar="ISSUER", nargs="?", help="a name `certwright issuers` lists")
