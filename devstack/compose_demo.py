"""`python -m devstack.compose_demo`: `make run`'s demo certificate in the Docker stack
(docker/compose.yml), run in its web container:

    docker-compose -f docker/compose.yml exec -T web python -m devstack.compose_demo

Creates the region `local` (its ingress: the edge container, where Pebble's HTTP-01 requests land and
HAProxy passes them to web), the app `demo` owned by the admin user, and www.example.com, publishes
the platform's names and the customer's CNAME in challtestsrv, and prints the statuses until the
certificate is In use. Exit status 0 when it is, 1 when not within --timeout seconds.
"""

from __future__ import annotations

import argparse
import os
import sys

import django

# The edge service's fixed address in docker/compose.yml.
EDGE_ADDRESS = "172.29.53.20"


def say(message: str) -> None:
    print(f"[compose demo] {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.compose_demo", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--ingress", default=EDGE_ADDRESS, help=f"the region's router address ({EDGE_ADDRESS})"
    )
    parser.add_argument("--timeout", type=float, default=120, help="seconds to wait for In use (120)")
    args = parser.parse_args(argv)
    django.setup()
    from django.conf import settings

    from devstack.demo import run_demo
    from devstack.pebble import ChallTestSrv
    from devstack.platform_dns import PlatformDns

    if not settings.DNS01_CHALLTESTSRV_URL:
        say("DNS01_CHALLTESTSRV_URL is not set: this runs in docker/compose.yml's stack only")
        return 1
    platform_dns = PlatformDns(ChallTestSrv(management_url=settings.DNS01_CHALLTESTSRV_URL))
    admin = os.environ.get("DJANGO_SUPERUSER_USERNAME", "admin")
    logs = "`docker-compose -f docker/compose.yml logs worker`"
    in_use = run_demo(platform_dns, admin, say, timeout=args.timeout, ingress_ipv4=args.ingress, logs=logs)
    return 0 if in_use else 1


if __name__ == "__main__":
    sys.exit(main())
