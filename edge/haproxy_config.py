"""The HAProxy 2.6 configuration Certwright ships: `render_config(...)` fills in the paths and addresses
(the devstack, the tests and `certwright-edge haproxy-config` call it).

What it sets up, and why:
- `stats socket ... mode 600 level admin expose-fd listeners`: the agent's runtime API (admin level for
  `set/commit ssl cert`); `expose-fd listeners` lets a reload (`-Ws` master-worker, systemd) hand the
  listening sockets over without refusing a connection.
- `tune.bufsize 131072`: a CLI request (command and PEM payload) must fit in one buffer. With the default
  16 KB a chain with a 4096-bit key and two intermediates is already close, and a request as large as
  the buffer makes HAProxy 2.6.12 drop the connection and then abort. 128 KiB holds any bundle
  Certwright accepts (uploads are capped at 64 KiB); the driver reads the size back and refuses larger.
  Buffers are allocated per active stream, so idle connections do not pay for the size.
- TLS 1.2 and 1.3 only, modern ciphers, no session tickets (no ticket key to rotate across routers).
- `bind ... ssl crt-list FILE strict-sni`: the crt-list starts empty and the agent fills it; with
  strict-sni a name with no certificate fails the handshake instead of getting the first certificate
  of the list (a customer's). HAProxy 2.6.12 starts with the empty list (it warns that the bind line has
  no certificate) and serves what the runtime API adds.
- Port 80 sends `/.well-known/acme-challenge/` to Certwright's web processes (HTTP-01, Host header
  kept) and redirects everything else to HTTPS.
- The HTTPS frontend hands requests to `backend apps`: where the platform routes by Host header (its
  own routing layer). Without app servers it answers a placeholder page.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence

BUFSIZE = 131072
# Where the shipped edge/haproxy.cfg puts things (Debian's layout); `python -m edge.haproxy_config` prints it.
DEFAULT_SOCKET = "/run/haproxy/admin.sock"
DEFAULT_CRT_LIST = "/etc/haproxy/certwright/crt-list"
DEFAULT_CERT_DIR = "/etc/haproxy/certwright/certs"
DEFAULT_WEB = "127.0.0.1:8000"
DEFAULT_LOG = "/dev/log local0"
# TLS 1.2's forward-secret AEAD suites (TLS 1.3's are listed apart, by ssl-default-bind-ciphersuites).
TLS12_CIPHERS = ":".join(
    f"ECDHE-{key}-{cipher}"
    for cipher in ("AES128-GCM-SHA256", "AES256-GCM-SHA384", "CHACHA20-POLY1305")
    for key in ("ECDSA", "RSA")
)
TLS13_CIPHERSUITES = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
# Names the host the client asked for (SNI), so a demo shows which certificate answered.
PLACEHOLDER_ANSWER = '"Hello from %[ssl_fc_sni], served by HAProxy over TLS\\n"'

# Spaces or line breaks in a value would change the configuration's meaning, not just a value.
_SAFE = re.compile(r"[^\s#\"'\\]+")


class ConfigError(ValueError):
    """A value that cannot go into the configuration as given: the message names it."""


def _safe(what: str, value: str) -> str:
    if not _SAFE.fullmatch(value):
        raise ConfigError(f"{what} {value!r} cannot go into haproxy.cfg (no spaces, quotes, # or \\)")
    return value


def render_config(
    *,
    socket_path: str,
    crt_list: str,
    web_servers: Sequence[str],
    app_servers: Sequence[str] = (),
    https_bind: str = ":443",
    http_bind: str = ":80",
    log_target: str | None = "stdout format raw local0",
    bufsize: int = BUFSIZE,
) -> str:
    """haproxy.cfg for HAProxy 2.6: the agent's socket, the crt-list HTTPS serves from, Certwright's
    web processes (HOST:PORT, for HTTP-01) and the platform's app servers (none: a placeholder page).
    `log_target` is a `log` line's target (None: no log)."""
    _safe("the socket path", socket_path)
    _safe("the crt-list path", crt_list)
    _safe("the HTTPS bind address", https_bind)
    _safe("the HTTP bind address", http_bind)
    if not web_servers:
        raise ConfigError("at least one Certwright web server (HOST:PORT) is needed for HTTP-01")
    if bufsize < 16384:
        raise ConfigError(f"tune.bufsize {bufsize} is below HAProxy's default of 16384")
    web = "\n".join(
        f"    server web{n} {_safe('the web server', address)} check"
        for n, address in enumerate(web_servers, 1)
    )
    if app_servers:
        apps = "\n".join(
            f"    server app{n} {_safe('the app server', address)} check"
            for n, address in enumerate(app_servers, 1)
        )
    else:
        apps = (
            "    # Placeholder: the platform's routing by Host header goes here.\n"
            f"    http-request return status 200 content-type text/plain lf-string {PLACEHOLDER_ANSWER}"
        )
    log_global = f"    log {log_target}\n" if log_target else ""
    log_defaults = "    log global\n    option httplog\n" if log_target else ""
    return f"""\
# HAProxy 2.6 for Certwright's edge agent, rendered by `python -m edge.haproxy_config` (see --help).
# The agent on this host: certwright-edge run ... --driver haproxy --haproxy-socket {socket_path}
#   --haproxy-crt-list {crt_list} --haproxy-cert-dir DIR (where it writes the PEMs the list names)
global
    stats socket {socket_path} mode 600 level admin expose-fd listeners
    stats timeout 2m
    tune.bufsize {bufsize}
    tune.ssl.default-dh-param 2048
    ssl-default-bind-options ssl-min-ver TLSv1.2 no-tls-tickets
    ssl-default-bind-ciphers {TLS12_CIPHERS}
    ssl-default-bind-ciphersuites {TLS13_CIPHERSUITES}
{log_global}
defaults
    mode http
{log_defaults}    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-request 10s

frontend https
    bind {https_bind} ssl crt-list {crt_list} strict-sni alpn h2,http/1.1
    http-request set-header X-Forwarded-Proto https
    default_backend apps

frontend http
    bind {http_bind}
    acl acme_challenge path_beg /.well-known/acme-challenge/
    http-request redirect scheme https code 301 unless acme_challenge
    default_backend certwright_web

backend certwright_web
{web}

backend apps
{apps}
"""


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The options of `python -m edge.haproxy_config` (and of a `haproxy-config` command that reuses them)."""
    parser = parser or argparse.ArgumentParser(
        prog="python -m edge.haproxy_config",
        description="Print the HAProxy 2.6 configuration for Certwright's edge agent (haproxy.cfg).",
    )
    parser.add_argument("--socket", default=DEFAULT_SOCKET, help=f"the runtime API socket ({DEFAULT_SOCKET})")
    parser.add_argument(
        "--crt-list", default=DEFAULT_CRT_LIST, help=f"the crt-list the agent fills ({DEFAULT_CRT_LIST})"
    )
    parser.add_argument(
        "--web",
        action="append",
        metavar="HOST:PORT",
        help=f"a Certwright web process for HTTP-01, repeatable (default {DEFAULT_WEB})",
    )
    parser.add_argument(
        "--app", action="append", metavar="HOST:PORT", help="an app server (none: a placeholder page)"
    )
    parser.add_argument("--https-bind", default=":443", help="the HTTPS bind address (:443)")
    parser.add_argument("--http-bind", default=":80", help="the HTTP bind address (:80)")
    parser.add_argument(
        "--log", default=DEFAULT_LOG, help=f"a log line's target ({DEFAULT_LOG!r}; '' for none)"
    )
    return parser


def config_from_args(args: argparse.Namespace) -> str:
    return render_config(
        socket_path=args.socket,
        crt_list=args.crt_list,
        web_servers=args.web or [DEFAULT_WEB],
        app_servers=args.app or (),
        https_bind=args.https_bind,
        http_bind=args.http_bind,
        log_target=args.log or None,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        sys.stdout.write(config_from_args(args))
    except ConfigError as error:
        print(f"haproxy config: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
