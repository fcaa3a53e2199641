"""The router drivers' interface: what the agent hands a driver and what it calls on it.

A driver makes its router serve, for each name, the certificate the agent chose. The agent calls it from
one thread, in order: `start` once with the whole set, then `apply` each time a name's choice changes
(another fingerprint, or nothing), then `close`. A driver that cannot apply a name raises `DriverError`;
the agent logs the name and the message (never a key) and retries later.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class Served:
    """The certificate a name serves now: one candidate of the feed, chosen by the agent."""

    name: str  # "www.example.com" or "*.example.com"
    fingerprint: str  # sha256 hex of the leaf DER
    source: str  # "custom" | "letsencrypt"
    not_before: datetime  # aware, UTC
    not_after: datetime
    pem: str  # chain (leaf first) then the private key, as the feed gives it

    def __repr__(self) -> str:
        # The dataclass's own repr would print the key into any log line or traceback that shows it.
        return (
            f"Served(name={self.name!r}, fingerprint={self.fingerprint[:16]!r}..., source={self.source!r}, "
            f"not_before={self.not_before.isoformat()}, not_after={self.not_after.isoformat()})"
        )


class DriverError(Exception):
    """A driver could not apply a name; the message names what failed and holds no key."""


class Driver(Protocol):
    def start(self, served: Mapping[str, Served]) -> None:
        """Make the router serve exactly this set (name -> certificate). Called once when the agent starts,
        after its store is loaded or a snapshot taken; idempotent; removes names the router has that are
        not in `served`. `served` is read-only and dict-like (iterate, `in`, `[name]`, items()); each
        value's PEM is read from the agent's store when the value is taken, so a driver should use each
        one and let it go rather than hold 100,000 keys in memory."""
        ...

    def apply(self, name: str, served: Served | None) -> None:
        """From now on serve `served` for `name`; None: serve nothing for it."""
        ...

    def close(self) -> None:
        """Release what the driver holds (sockets, servers); the router keeps serving what it has."""
        ...


DRIVERS = ("haproxy", "caddy", "files")


def add_driver_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of every driver, on the `run` command."""
    parser.add_argument(
        "--driver",
        choices=DRIVERS,
        required=True,
        help="the router this agent drives: haproxy, caddy or files",
    )
    group = parser.add_argument_group("files driver")
    group.add_argument(
        "--files-dir",
        metavar="DIR",
        help="where to write one PEM per name (chain then key, mode 0600) and index.json",
    )
    group = parser.add_argument_group("caddy driver")
    group.add_argument(
        "--caddy-listen",
        metavar="HOST:PORT",
        default="127.0.0.1:8765",
        help="where to answer Caddy's get_certificate http requests (default 127.0.0.1:8765); "
        "Caddy's config: tls { get_certificate http http://HOST:PORT/certificate }",
    )
    group = parser.add_argument_group("haproxy driver")
    group.add_argument(
        "--haproxy-socket",
        metavar="PATH",
        help="HAProxy's runtime API socket (stats socket PATH level admin)",
    )
    group.add_argument(
        "--haproxy-crt-list",
        metavar="FILE",
        help="the crt-list file of the bind line (bind ... ssl crt-list FILE strict-sni)",
    )
    group.add_argument(
        "--haproxy-cert-dir",
        metavar="DIR",
        help="where to write the PEM files the crt-list names",
    )


class DriverConfigError(ValueError):
    """A driver's options are missing or wrong: the message says which."""


def make_driver(args: argparse.Namespace) -> Driver:
    """The driver `--driver` names, built from its options."""
    if args.driver == "files":
        if not args.files_dir:
            raise DriverConfigError("--driver files needs --files-dir DIR")
        from edge.drivers.files import FilesDriver

        return FilesDriver(args.files_dir)
    if args.driver == "caddy":
        from edge.drivers.caddy import CaddyDriver, parse_listen

        host, port = parse_listen(args.caddy_listen)
        return CaddyDriver(host, port)
    if args.driver == "haproxy":
        missing = [
            option
            for option, value in (
                ("--haproxy-socket", args.haproxy_socket),
                ("--haproxy-crt-list", args.haproxy_crt_list),
                ("--haproxy-cert-dir", args.haproxy_cert_dir),
            )
            if not value
        ]
        if missing:
            raise DriverConfigError(f"--driver haproxy needs {', '.join(missing)}")
        # Imported here: each driver's module loads only when chosen (the HAProxy one is its own file).
        from edge.drivers.haproxy import HaproxyDriver

        return HaproxyDriver(args.haproxy_socket, args.haproxy_crt_list, args.haproxy_cert_dir)
    raise DriverConfigError(f"unknown driver {args.driver!r}: choose one of {', '.join(DRIVERS)}")
