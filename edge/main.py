"""certwright-edge: the command line of the edge agent.

certwright-edge run --url URL --token-file FILE --store DIR --driver files|caddy|haproxy [driver options]
certwright-edge status --store DIR
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from edge import haproxy_config
from edge.drivers import DriverConfigError, DriverError, add_driver_arguments, make_driver

TOKEN_ENV = "CERTWRIGHT_EDGE_TOKEN"  # noqa: S105 (the variable's name, not a token)

DESCRIPTION = """\
The edge agent of Certwright: run one on each router host. It keeps every certificate the router
serves in a local store (keys mode 0600), follows Certwright's change feed (a snapshot, then
long-polled changes), picks each name's certificate by this host's clock (a custom certificate
expiring at T gives way to Let's Encrypt's at T, Certwright up or not) and drives the router:
HAProxy's runtime API, Caddy's get_certificate http on localhost, or plain files. When Certwright
is unreachable the router keeps serving what the store holds; the agent catches up from its cursor.
"""

RUN_EPILOG = """\
The token (a router token: manage.py router_token create --name N [--region R]) is read from
--token-file or the environment variable CERTWRIGHT_EDGE_TOKEN; it is never logged.

drivers:
  files    one PEM per name in --files-dir (chain then key, mode 0600; a wildcard *.example.com is
           _wildcard.example.com.pem) and index.json (name -> file, fingerprint, not_after, source)
  caddy    answers GET /certificate?server_name=NAME on --caddy-listen from memory (200 with the PEM,
           204 when nothing): tls { get_certificate http http://127.0.0.1:PORT/certificate }
  haproxy  HAProxy's runtime API (--haproxy-socket), without reload; the bind line is
           bind :443 ssl crt-list FILE strict-sni, FILE given as --haproxy-crt-list; PEMs in
           --haproxy-cert-dir

exit status: 0 after SIGTERM or SIGINT, 1 when the store cannot be used, 2 for bad options.
"""


class UsageError(Exception):
    """Bad command-line input: the message says what to fix."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="certwright-edge",
        description=DESCRIPTION,
        epilog="The options of each command: certwright-edge run --help, certwright-edge status --help.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="follow Certwright's feed and drive the router (runs until SIGTERM)",
        description="Follow Certwright's feed into the store and drive the router.",
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--url", required=True, help="Certwright's feed, e.g. https://certwright.internal:8001")
    run.add_argument(
        "--token-file",
        metavar="FILE",
        help=f"a file holding the router token (else the environment variable {TOKEN_ENV})",
    )
    run.add_argument(
        "--ca-file",
        metavar="FILE",
        help="PEM file of the CA(s) that signed the feed's HTTPS certificate (an internal CA); "
        "default: the public CAs of certifi",
    )
    run.add_argument("--store", required=True, metavar="DIR", help="the local store (created if missing)")
    add_driver_arguments(run)
    run.add_argument(
        "--wait",
        type=int,
        default=55,
        metavar="SECONDS",
        help="how long the server may hold a changes request (1..60, default 55)",
    )
    run.add_argument("--log-file", metavar="FILE", help="log there instead of stderr")
    run.add_argument("--verbose", action="store_true", help="log debug lines too")

    status = commands.add_parser(
        "status",
        help="print the store's cursor, number of names and last sync time",
        description="Print the store's cursor, number of names and last sync time (read-only).",
    )
    status.add_argument("--store", required=True, metavar="DIR", help="the agent's store")

    haproxy_config.build_parser(
        commands.add_parser(
            "haproxy-config",
            help="print the HAProxy 2.6 configuration the haproxy driver expects (haproxy.cfg)",
            description="Print the HAProxy 2.6 configuration for this agent (haproxy.cfg): the runtime "
            "API socket, HTTPS from the crt-list the agent fills (strict-sni), HTTP-01 to Certwright's "
            "web processes on port 80 and a redirect to HTTPS for the rest.",
        )
    )
    return parser


def read_token(args: argparse.Namespace) -> str:
    if args.token_file:
        try:
            token = Path(args.token_file).read_text().strip()
        except OSError as error:
            raise UsageError(f"cannot read the token file {args.token_file}: {error.strerror}") from None
        where = f"the token file {args.token_file}"
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
        where = TOKEN_ENV
        if not token:
            raise UsageError(f"no token: give --token-file FILE or set {TOKEN_ENV}")
    if not token:
        raise UsageError(f"{where} is empty")
    if any(ch.isspace() or not ch.isprintable() for ch in token):
        raise UsageError(f"{where} holds more than one token (spaces or control characters inside)")
    return token


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--url must be an http:// or https:// URL with a host, not {url[:100]!r}")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise UsageError("--url takes no user, password, query or fragment (the token goes in --token-file)")
    return url


class UtcFormatter(logging.Formatter):
    converter = time.gmtime

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


def setup_logging(log_file: str | None, verbose: bool) -> None:
    handler: logging.Handler
    if log_file:
        try:
            handler = logging.FileHandler(log_file)
        except OSError as error:
            raise UsageError(f"cannot open the log file {log_file}: {error.strerror}") from None
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(UtcFormatter("%(asctime)s certwright-edge %(levelname)s %(message)s"))
    root = logging.getLogger("certwright")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False
    # urllib3 logs every retry and connection with URLs only, but nothing it says helps an operator.
    logging.getLogger("urllib3").setLevel(logging.WARNING)


def command_run(args: argparse.Namespace) -> int:
    from edge.agent import Agent
    from edge.feed import Feed
    from edge.store import Store, StoreError

    url = check_url(args.url)
    token = read_token(args)
    if not 1 <= args.wait <= 60:
        raise UsageError("--wait must be between 1 and 60 seconds")
    if args.ca_file and not Path(args.ca_file).is_file():
        raise UsageError(f"--ca-file {args.ca_file} is not a readable file")
    setup_logging(args.log_file, args.verbose)
    log = logging.getLogger("certwright.edge")
    host = urlsplit(url).hostname or ""
    if urlsplit(url).scheme == "http" and host not in ("localhost", "127.0.0.1", "::1"):
        log.warning(
            "the feed at %s is plain HTTP: private keys cross the network unencrypted; "
            "use https:// (with --ca-file for an internal CA) outside one host",
            url,
        )
    try:
        driver = make_driver(args)
    except DriverConfigError as error:
        raise UsageError(str(error)) from None
    except (DriverError, OSError) as error:
        print(f"certwright-edge: the {args.driver} driver cannot start: {error}", file=sys.stderr)
        return 1
    try:
        store = Store(args.store)
    except (StoreError, OSError) as error:
        print(f"certwright-edge: the store at {args.store} cannot be used: {error}", file=sys.stderr)
        driver.close()
        return 1
    agent = Agent(Feed(url, token, verify=args.ca_file or True), store, driver, wait=args.wait)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            agent.run()
        except BaseException as error:
            failure.append(error)
        finally:
            agent.stopping.set()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        agent.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("starting: feed %s, store %s, driver %s", url, args.store, args.driver)
    # The agent runs in its own thread so that a signal stops it between driver calls, not inside one.
    thread = threading.Thread(target=run, name="edge-sync", daemon=True)
    thread.start()
    while not agent.stopping.wait(1.0):
        pass
    agent.close()
    if failure:
        error = failure[0]
        log.error("stopped: %s: %s", type(error).__name__, error)
        return 1
    log.info("stopped")
    return 0


def command_status(args: argparse.Namespace) -> int:
    from edge.store import Store, StoreError

    try:
        store = Store(args.store, create=False)
        if store.generation is None:
            print(f"certwright-edge: {args.store} holds no store yet", file=sys.stderr)
            return 1
        state = store.sync_state()
        names = store.count()
    except (StoreError, OSError) as error:
        print(f"certwright-edge: cannot read the store at {args.store}: {error}", file=sys.stderr)
        return 1
    if state is None:
        print("cursor: none (no snapshot yet)")
        print(f"names: {names}")
        print("last sync: never")
        return 0
    print(f"cursor: {state['cursor']}")
    print(f"names: {names}")
    synced_at = state.get("synced_at")
    try:
        ago = (datetime.now(UTC) - datetime.fromisoformat(synced_at)).total_seconds()
        print(f"last sync: {synced_at} ({ago:.0f} s ago)")
    except (TypeError, ValueError):
        print("last sync: unknown")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            return command_run(args)
        if args.command == "haproxy-config":
            sys.stdout.write(haproxy_config.config_from_args(args))
            return 0
        return command_status(args)
    except haproxy_config.ConfigError as error:
        parser.exit(2, f"certwright-edge: {error}\n")
    except UsageError as error:
        parser.exit(2, f"certwright-edge: {error}\n")
    return 2


if __name__ == "__main__":
    sys.exit(main())
