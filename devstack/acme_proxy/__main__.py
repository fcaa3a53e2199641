"""`python -m devstack.acme_proxy`: the proxy in its own process, driven through its control API."""

from __future__ import annotations

import argparse
import importlib
import signal
import ssl
import sys
import threading
from pathlib import Path

from devstack.acme_proxy.documents import AccountKey
from devstack.acme_proxy.proxy import AcmeProxy


def _load_account_key(spec: str) -> AccountKey:
    module, _, name = spec.partition(":")
    if not module or not name:
        raise SystemExit(f"--account-key takes MODULE:FUNCTION, not {spec!r}")
    return getattr(importlib.import_module(module), name)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.acme_proxy", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--upstream", required=True, help="Pebble's ACME listener, HOST:PORT")
    parser.add_argument("--ca-file", required=True, help="the CA of Pebble's listener certificate")
    parser.add_argument("--cert", required=True, help="the proxy's listener certificate (Pebble's)")
    parser.add_argument("--key", required=True, help="its key")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument(
        "--account-key", help="MODULE:FUNCTION taking an account URL, returning its josepy JWK (for profiles)"
    )
    args = parser.parse_args(argv)
    upstream_host, _, upstream_port = args.upstream.rpartition(":")
    if not upstream_host or not upstream_port.isdigit():
        parser.error(f"--upstream is HOST:PORT, not {args.upstream!r}")
    proxy = AcmeProxy(
        upstream_host,
        int(upstream_port),
        ssl.create_default_context(cafile=args.ca_file),
        Path(args.cert),
        Path(args.key),
        account_key=_load_account_key(args.account_key) if args.account_key else None,
        host=args.host,
        port=args.port,
    )
    stopped = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopped.set())
    with proxy:
        print(proxy.directory_url, flush=True)
        stopped.wait()
    sys.exit(0)


if __name__ == "__main__":
    main()
