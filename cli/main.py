"""`certwright [--app APP] COMMAND`: the commands, their arguments, and how their results are printed."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cli.client import ApiClient, segment
from cli.domain_view import domain_rows, profile_text, served
from cli.errors import (
    SERVER_ERROR,
    WHERE_TOKENS_COME_FROM,
    AuthError,
    CliError,
    ServerError,
    UsageError,
    UserError,
)
from cli.files import Passphrase, build_upload
from cli.issuers import register_issuer_commands
from cli.notifications import register_notification_commands
from cli.output import day, emit_json, on_off, table, truncate, when
from cli.webhooks import register_webhook_commands

ROOT = Path(__file__).resolve().parent.parent
# `make run` writes the API's URL and a token to the checkout's .env, so that the CLI works there
# with no set-up. An installed CLI (pip install) sits in site-packages, which has no .env to read.
DOTENV: Path | None = ROOT / ".env" if (ROOT / "manage.py").is_file() else None
DEFAULT_API_URL = "http://localhost:8000"
EVENTS_SHOWN = 5

EPILOG = """\
exit codes:
  0  success
  1  user error: invalid input (400), no such app or domain (404), conflict (409), body too large
     (413), too many requests (429), or a local file that cannot be used
  2  usage error: bad arguments
  3  authentication: no API token, or the API refused it (401, 403)
  4  server error (5xx), an answer that is not the API's, or the server cannot be reached

configuration (a flag wins over the environment, which wins over .env):
  CERTWRIGHT_API_URL    the API's base URL (--api-url; default http://localhost:8000)
  CERTWRIGHT_API_TOKEN  an API token, cwt_... (--token)
  CERTWRIGHT_APP        the default app (--app)
  When unset and the CLI runs from a Certwright checkout (./certwright), CERTWRIGHT_API_URL and
  CERTWRIGHT_API_TOKEN are read from the .env file at its root, which `make run` writes.
  A token comes from the platform's operator: `manage.py customer create NAME` makes a customer
  and prints its first token.

examples:
  certwright apps-create my-app --region osc-fr1
  certwright --app demo domains
  certwright -a demo domains-add www.example.com
  certwright -a demo domains-profile www.example.com shortlived
  certwright -a demo domains-ssl --cert site.pfx --passphrase-file pass.txt www.example.com
  certwright -a demo --json domains-show www.example.com
  certwright -a demo domains-revoke-and-replace www.example.com
  certwright -a demo webhooks-add https://hooks.example.com/certwright --events domain.failing
  certwright -a demo webhooks-deliveries 1 --state pending
  certwright notifications-set --digest 1d --events domain.action_required,certificate.expiring
"""


@dataclass(frozen=True)
class Config:
    api_url: str
    token: str
    app: str


def read_dotenv(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a .env file (`#` comments, optional `export ` and quotes); {} if it is absent."""
    values: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return values
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def resolve_config(args: argparse.Namespace, environ: Mapping[str, str], dotenv: Path | None) -> Config:
    """The API URL, token and app: flags, then the environment, then `dotenv` (URL and token only).
    The app is required only by the commands on one app's domains."""
    app = args.app or environ.get("CERTWRIGHT_APP") or ""
    if not app and getattr(args, "needs_app", True):
        raise UsageError("no app: give --app APP or set CERTWRIGHT_APP")
    saved = read_dotenv(dotenv) if dotenv is not None else {}
    api_url = (
        args.api_url
        or environ.get("CERTWRIGHT_API_URL")
        or saved.get("CERTWRIGHT_API_URL")
        or DEFAULT_API_URL
    )
    if not api_url.startswith(("http://", "https://")):
        raise UserError(f"the API URL must start with http:// or https://, not {api_url!r}")
    token = args.token or environ.get("CERTWRIGHT_API_TOKEN") or saved.get("CERTWRIGHT_API_TOKEN")
    if not token:
        made_by_run = f"; in this checkout, `make run` writes one to {dotenv}" if dotenv is not None else ""
        raise AuthError(
            f"no API token: set CERTWRIGHT_API_TOKEN or give --token; {WHERE_TOKENS_COME_FROM}{made_by_run}"
        )
    return Config(api_url=api_url, token=token, app=app)


# Output (the shared helpers are in cli/output.py).


def key_values(rows: Sequence[tuple[str, str]]) -> list[str]:
    width = max(len(key) for key, _ in rows) + 2
    return [f"{key.ljust(width)}{value}".rstrip() for key, value in rows]


def records_to_add(domain: dict) -> list[str]:
    """The records that point the domain here, and the TXT record that proves it is the app's while
    it is not proven (`ownership`, when the API has it)."""
    dns = domain.get("dns")
    records = list(dns.get("records") or []) if isinstance(dns, dict) else []
    ownership = domain.get("ownership")
    if isinstance(ownership, dict) and not ownership.get("verified") and ownership.get("record"):
        records.append(f"{ownership['record']}  (ownership: {ownership.get('help') or 'proves it is yours'})")
    return records


def event_line(event: dict) -> str:
    change = f"{event.get('from_status') or 'new'} → {event.get('to_status', '?')}"
    return f"  {when(event.get('created'))}  {change}: {event.get('reason') or '-'}"


# Commands.


def cmd_apps(client: ApiClient, config: Config, args: argparse.Namespace) -> None:
    apps = list(client.paginate("apps"))
    if args.json:
        emit_json(apps)
        return
    if not apps:
        print("No apps yet: create one with `certwright apps-create NAME`.")
        return
    rows = [
        (
            app.get("name", "?"),
            app.get("region", "?"),
            app.get("hostname", "?"),
            str(app.get("domain_count", "?")),
            day(app.get("created")),
        )
        for app in apps
    ]
    print("\n".join(table(["APP", "REGION", "HOSTNAME", "DOMAINS", "CREATED"], rows)))


def _only_region(client: ApiClient) -> str:
    """The platform's region when it has exactly one; otherwise the user must choose."""
    regions = client.get("regions")
    if not isinstance(regions, list):
        raise ServerError(
            f"{client.url('regions')} did not answer a list of regions: is it a Certwright API?"
        )
    names = [region["name"] for region in regions if isinstance(region, dict) and region.get("name")]
    if not names:
        raise UserError("the platform has no regions yet: ask its operator to add one")
    if len(names) > 1:
        raise UsageError(f"give --region, one of: {', '.join(names)}")
    return names[0]


def cmd_apps_create(client: ApiClient, config: Config, args: argparse.Namespace) -> None:
    region = args.region or _only_region(client)
    app = client.request("POST", "apps", json={"name": args.name, "region": region})
    if args.json:
        emit_json(app)
        return
    name = app.get("name", args.name)
    print(f"Created {name} in {app.get('region', region)}: it answers at {app.get('hostname', '?')}.")
    print(f"Add a domain to it: certwright --app {name} domains-add www.example.com")


def _domains_path(config: Config, name: str | None = None, *rest: str) -> str:
    path = f"apps/{segment(config.app)}/domains"
    if name is not None:
        path += "/" + segment(name)
    return "/".join([path, *rest])


def _upload(args: argparse.Namespace) -> dict[str, str]:
    passphrase = Passphrase(args.passphrase_file)
    return build_upload(args.cert, passphrase, key=args.key, chain=args.chain or ()).fields()


def cmd_domains(client: ApiClient, config: Config, args: argparse.Namespace) -> None:
    params = {"status": args.status} if args.status else None
    domains = list(client.paginate(_domains_path(config), params))
    if args.json:
        emit_json(domains)
        return
    if not domains:
        print(f"No domains on {config.app}{f' with status {args.status}' if args.status else ''}.")
        return
    rows = [
        (
            domain.get("unicode_name") or domain.get("name", "?"),
            domain.get("status_label", "?"),
            on_off(domain.get("letsencrypt")),
            served(domain.get("certificate")),
            truncate(domain.get("last_error") or "") or "-",
        )
        for domain in domains
    ]
    print("\n".join(table(["DOMAIN", "STATUS", "LET'S ENCRYPT", "CERTIFICATE", "LAST ERROR"], rows)))


def _print_records(domain: dict, heading: str) -> None:
    records = records_to_add(domain)
    if records:
        print(heading)
        for record in records:
            print(f"  {record}")


def cmd_domains_add(client: ApiClient, config: Config, args: argparse.Namespace) -> None:
    if (args.key or args.chain) and not args.cert:
        raise UsageError("--key and --chain go with --cert")
    body: dict[str, Any] = {"name": args.name, "letsencrypt": not args.no_letsencrypt}
    if args.profile is not None:
        body["profile"] = args.profile
    if args.cert:
        body.update(_upload(args))
    domain = client.request("POST", _domains_path(config), json=body)
    if args.json:
        emit_json(domain)
        return
    print(f"Added {domain.get('name', args.name)} to {config.app}: {domain.get('status_label', '?')}.")
    _print_records(domain, "Point the domain at the platform with these DNS records:")


def cmd_domains_ssl(client: ApiClient, config: Config, args: argparse.Namespace) -> None:
    if args.disable:
        if args.cert or args.key or args.chain or args.passphrase_file:
            raise UsageError("--disable takes no certificate, key, chain or passphrase file")
        domain = client.request("DELETE", _domains_path(config, args.name, "certificate"))
        if args.json:
            emit_json(domain)
            return
        print(
            f"Removed the custom certificate of {domain.get('name', args.name)}; "
            f"now serving: {served(domain.get('certificate'))} ({domain.get('status_label', '?')})."
        )
        return
    if not args.cert:
        raise UsageError("give --cert (with --key unless it is a PKCS#12 file), or --disable")
    domain = client.request("PATCH", _domains_path(config, args.name), json=_upload(args))
    if args.json:
        emit_json(domain)
        return
    certificate = domain.get("certificate") or {}
    print(
        f"Installed the custom certificate of {domain.get('name', args.name)} "
        f"(issued by {certificate.get('issuer', '?')}, until {day(certificate.get('not_after'))}): "
        f"{domain.get('status_label', '?')}."
    )


def cmd_domains_profile(client: ApiClient, config: Config, args: argparse.Namespace) -> None:
    if args.default == (args.profile is not None):
        raise UsageError("give a PROFILE, or --default for the platform's default")
    profile = "" if args.default else args.profile
    domain = client.request("PATCH", _domains_path(config, args.name), json={"profile": profile})
    if args.json:
        emit_json(domain)
        return
    print(
        f"{domain.get('name', args.name)} now orders its certificates under: {profile_text(domain)}. "
        "It applies from the next certificate; `certwright domains-retry` renews now."
    )


def cmd_domains_remove(client: ApiClient, config: Config, args: argparse.Namespace) -> None:
    client.request("DELETE", _domains_path(config, args.name))
    message = f"Removed {args.name} from {config.app}."
    if args.json:
        emit_json({"detail": message})
    else:
        print(message)


def cmd_domains_retry(client: ApiClient, config: Config, args: argparse.Namespace) -> None:
    answer = client.request("POST", _domains_path(config, args.name, "retry")) or {}
    if args.json:
        emit_json(answer)
    else:
        print(answer.get("detail") or "Retry requested.")


def cmd_domains_revoke_and_replace(client: ApiClient, config: Config, args: argparse.Namespace) -> None:
    answer = client.request("POST", _domains_path(config, args.name, "revoke-and-replace")) or {}
    if args.json:
        emit_json(answer)
    else:
        print(answer.get("detail") or "Revoke and replace requested.")
        print(f"Follow it with: certwright --app {config.app} domains-show {args.name}")


def cmd_domains_show(client: ApiClient, config: Config, args: argparse.Namespace) -> None:
    domain = client.get(_domains_path(config, args.name))
    if args.json:
        emit_json(domain)
        return
    events = client.get(_domains_path(config, args.name, "events"), {"page_size": EVENTS_SHOWN}) or {}
    print("\n".join(key_values(domain_rows(domain))))
    _print_records(domain, "\nDNS records to add:")
    recent = (events.get("results") or [])[:EVENTS_SHOWN]
    if recent:
        print(f"\nLast {len(recent)} events (newest first):")
        for event in recent:
            print(event_line(event))


# Arguments.


def _global_options(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument("-a", "--app", default=default, help="the app (default: $CERTWRIGHT_APP)")
    parser.add_argument(
        "--json", action="store_true", default=default, help="print the API's JSON, for scripts"
    )
    parser.add_argument("--api-url", default=default, help="the API's base URL ($CERTWRIGHT_API_URL)")
    parser.add_argument("--token", default=default, help="an API token ($CERTWRIGHT_API_TOKEN is safer)")


def _certificate_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cert", metavar="FILE", help="the certificate: PEM, DER, PKCS#7 (.p7b) or PKCS#12 (.pfx)"
    )
    parser.add_argument("--key", metavar="FILE", help="its private key: PEM or DER (not needed for .pfx)")
    parser.add_argument(
        "--chain", metavar="FILE", action="append", help="intermediate certificates (repeatable)"
    )
    parser.add_argument(
        "--passphrase-file",
        metavar="FILE",
        help="the key's or .pfx's passphrase on its first line (else asked on the terminal)",
    )


Handler = Callable[[ApiClient, Config, argparse.Namespace], None]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="certwright",
        description="Custom domains and their HTTPS certificates on Certwright.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _global_options(parser, default=None)
    # The global options are also accepted after the command; SUPPRESS keeps a value given before it.
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, default=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, handler: Handler, summary: str, needs_app: bool = True) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, parents=[common], help=summary, description=summary)
        sub.set_defaults(handler=handler, command_parser=sub, needs_app=needs_app)
        return sub

    command("apps", cmd_apps, "list your apps", needs_app=False)
    sub = command("apps-create", cmd_apps_create, "create an app, to add domains to", needs_app=False)
    sub.add_argument("--region", help="its region (needed when the platform has several)")
    sub.add_argument("name", metavar="NAME")

    sub = command("domains", cmd_domains, "list the app's domains")
    sub.add_argument("--status", help="only domains in this status (such as in_use, pending_dns)")

    sub = command("domains-add", cmd_domains_add, "add a domain (with a custom certificate, optionally)")
    sub.add_argument("--no-letsencrypt", action="store_true", help="do not get a Let's Encrypt certificate")
    sub.add_argument(
        "--profile",
        metavar="PROFILE",
        help="the CA profile of its certificates, one the CA offers (Let's Encrypt: classic, tlsserver, "
        "shortlived); default: the platform's",
    )
    _certificate_options(sub)
    sub.add_argument("name", metavar="NAME")

    sub = command(
        "domains-profile",
        cmd_domains_profile,
        "choose the CA profile of a domain's certificates (from its next certificate on)",
    )
    sub.add_argument("--default", action="store_true", help="go back to the platform's default profile")
    sub.add_argument("name", metavar="NAME")
    sub.add_argument("profile", metavar="PROFILE", nargs="?", help="such as classic, tlsserver, shortlived")

    sub = command("domains-ssl", cmd_domains_ssl, "upload a custom certificate, or remove it (--disable)")
    _certificate_options(sub)
    sub.add_argument("--disable", action="store_true", help="remove the custom certificate")
    sub.add_argument("name", metavar="NAME")

    for name, handler, summary in (
        ("domains-remove", cmd_domains_remove, "remove a domain (its certificates are deleted)"),
        ("domains-retry", cmd_domains_retry, "check the domain and continue or renew its certificate now"),
        ("domains-show", cmd_domains_show, "everything about a domain, its DNS records and recent events"),
        (
            "domains-revoke-and-replace",
            cmd_domains_revoke_and_replace,
            "key compromise: get a new key and certificate, serve it, then revoke the old one",
        ),
    ):
        command(name, handler, summary).add_argument("name", metavar="NAME")
    register_webhook_commands(command)
    register_notification_commands(command)
    register_issuer_commands(command)
    return parser


def _fail(lines: Sequence[str]) -> None:
    for line in lines:
        print(f"certwright: {line}", file=sys.stderr)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Runs one command; returns the exit code (see EPILOG)."""
    environ = os.environ if environ is None else environ
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = resolve_config(args, environ, DOTENV)
        args.handler(ApiClient(config.api_url, config.token), config, args)
    except UsageError as exc:
        getattr(args, "command_parser", parser).print_usage(sys.stderr)
        _fail([f"error: {line}" for line in exc.lines])
        return exc.exit_code
    except CliError as exc:
        _fail(exc.lines)
        return exc.exit_code
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader (`| head`) went away: stop quietly, and keep Python from complaining at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as exc:
        # An answer shaped unlike the API's, most likely; a traceback helps nobody running the CLI.
        if environ.get("CERTWRIGHT_DEBUG"):
            raise
        _fail([f"unexpected error: {type(exc).__name__}: {exc} (CERTWRIGHT_DEBUG=1 shows the traceback)"])
        return SERVER_ERROR
    return 0
