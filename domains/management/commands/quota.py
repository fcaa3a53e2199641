"""`manage.py quota [REGISTERED_DOMAIN ...]`: Let's Encrypt's per-registered-domain limit as the
platform sees it: tokens left and when the next one arrives."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from certificates.models import RegisteredDomain
from domains.names import registered_domain
from domains.quota_policy import quota_of

PAGE = 1000


class Command(BaseCommand):
    help = (
        "Shows each registered domain's certificate quota (tokens left, next token). Without "
        "arguments: every registered domain that has custom domains."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("names", nargs="*", help="Registered domains (or any name under one).")
        parser.add_argument(
            "--below", type=int, default=None, help="Only show registered domains with fewer tokens left."
        )

    def handle(self, *args, names: list[str], below: int | None, **options) -> None:
        if names:
            wanted = []
            for name in names:
                domain = registered_domain(name.strip().lower().rstrip("."))
                if domain is None:
                    raise CommandError(f"{name} is a public suffix, not a registered domain")
                wanted.append(domain)
            pages = [sorted(set(wanted))]
        else:
            pages = _all_registered_domains()
        self.stdout.write(f"{'registered domain':40} {'limit':28} {'tokens left':>11}  next token at")
        shown, unreachable = 0, False
        for page in pages:
            for entry in quota_of(page):
                if below is not None and (entry.tokens_left is None or entry.tokens_left >= below):
                    continue
                left = "unknown" if entry.tokens_left is None else str(entry.tokens_left)
                next_at = f"{entry.next_token_at:%Y-%m-%d %H:%M:%S %Z}" if entry.next_token_at else "-"
                self.stdout.write(f"{entry.registered_domain:40} {entry.limit:28} {left:>11}  {next_at}")
                shown += 1
                unreachable = unreachable or entry.tokens_left is None
        if not shown:
            self.stdout.write("(none)")
        if unreachable:
            self.stderr.write("the quota store (QUOTA_REDIS_URL) is unreachable: tokens left are unknown")


def _all_registered_domains():
    last = ""
    while True:
        page = list(
            RegisteredDomain.objects.filter(name__gt=last)
            .order_by("name")
            .values_list("name", flat=True)[:PAGE]
        )
        if not page:
            return
        yield page
        last = page[-1]
