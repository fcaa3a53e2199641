"""`make run`'s demo: a region, an app and www.example.com, whose certificate Pebble issues while
you watch. www.example.com is pointed at the app with the record Certwright asks customers for, a
CNAME to the app's hostname (which the mock DNS resolves to the region's ingress, as the platform's
DNS would). Idempotent: a second `make run` reuses them and only re-creates the DNS record (the
mock DNS forgets everything when it restarts)."""

from __future__ import annotations

import time

from django.contrib.auth import get_user_model
from django.db import transaction

from certificates.models import Certificate
from devstack.platform_dns import PlatformDns
from domains.models import App, Domain, DomainStatus, Region
from domains.platform import ensure_platform_domains
from domains.services import create_domain, retry_now

DEMO_DOMAIN = "www.example.com"


def ensure_demo_app(admin_username: str, ingress_ipv4: str = "127.0.0.1") -> App:
    """The region `local` (its ingress at `ingress_ipv4`) and the app `demo`, owned by the admin user."""
    with transaction.atomic():
        region, _ = Region.objects.get_or_create(
            name="local",
            defaults={
                "domain_suffix": "local.example-paas.io",
                "cname_target": "ingress.local.example-paas.io",
                "ingress_ipv4": [ingress_ipv4],
                "ingress_ipv6": [],
            },
        )
        owner = get_user_model().objects.get(username=admin_username)
        app, _ = App.objects.get_or_create(region=region, name="demo", defaults={"owner": owner})
    return app


def run_demo(
    platform_dns: PlatformDns,
    admin_username: str,
    say,
    timeout: float = 120,
    ingress_ipv4: str = "127.0.0.1",
    logs: str = ".run/logs/",
) -> bool:
    """Creates the demo (once), points its DNS at the app and prints the statuses until in use.
    `ingress_ipv4` is the region's router (the CA's HTTP-01 requests go there); `logs` where to look
    when it fails."""
    app = ensure_demo_app(admin_username, ingress_ipv4)
    # The region's platform certificate (*.<suffix>) now rather than at beat's next tick.
    for change in ensure_platform_domains():
        say(f"demo: the platform certificate of region {change.region}, {change.name}: {change.what}")
    # The app's hostname (and the platform certificate's records) must resolve before the first
    # check: publish them now, not in a few seconds.
    platform_dns.sync()
    # A CNAME to the app's own hostname also proves the name is demo's (no ownership record needed).
    record = f"{DEMO_DOMAIN}. CNAME {app.default_hostname}."
    platform_dns.challtestsrv.set_cname(DEMO_DOMAIN, f"{app.default_hostname}.")
    domain = Domain.objects.filter(name=DEMO_DOMAIN).first()
    if domain is None:
        say(f"demo: adding {DEMO_DOMAIN} to app demo ({record} in the mock DNS, as domains-show asks)")
        domain = create_domain(app, DEMO_DOMAIN)
    elif domain.status != DomainStatus.IN_USE:
        say(f"demo: {DEMO_DOMAIN} exists ({domain.get_status_display()}); retrying it now")
        retry_now(domain)
    seen = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        domain.refresh_from_db()
        if domain.status != seen:
            seen = domain.status
            detail = f" - {domain.last_error}" if domain.last_error else ""
            say(f"demo: {DEMO_DOMAIN} is {domain.get_status_display()}{detail}")
        if domain.status == DomainStatus.IN_USE:
            certificate = Certificate.objects.filter(domain=domain).order_by("-not_after").first()
            say(
                f"demo: certificate issued by {certificate.issuer}, for {', '.join(certificate.sans)}, "
                f"valid until {certificate.not_after:%Y-%m-%d %H:%M} UTC (fingerprint "
                f"{certificate.fingerprint_sha256[:16]}...)"
            )
            return True
        time.sleep(0.2)
    say(f"demo: {DEMO_DOMAIN} did not reach In use within {timeout:.0f} s; see {logs}")
    return False
