"""`manage.py unpause_domains NAME ...`: after visiting Let's Encrypt's unpause URL, makes the named
domains due again (domains/pauses.py); `--list` shows the paused domains and their URLs."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from domains.models import Domain
from domains.names import InvalidDomainName, normalize_domain_name
from domains.pauses import unpause_domains


class Command(BaseCommand):
    help = (
        "Marks domains unpaused at the CA, once an operator has lifted Let's Encrypt's pause at the "
        "URL it gave: the pause is forgotten, the backoff reset, and each domain (or its renewal) is "
        "due now. --list shows the paused domains and the URL to visit."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("names", nargs="*", help="Domain names to mark unpaused.")
        parser.add_argument(
            "--list", dest="show", action="store_true", help="List the paused domains and their unpause URLs."
        )

    def handle(self, *args, names: list[str], show: bool, **options) -> None:
        if show:
            paused = Domain.objects.exclude(ca_unpause_url="").order_by("ca_paused_at", "name")
            for name, at, url in paused.values_list("name", "ca_paused_at", "ca_unpause_url"):
                since = f"{at:%Y-%m-%d %H:%M} UTC" if at else "(time unknown)"
                self.stdout.write(f"{name}  paused {since}  {url}")
            if not paused.exists():
                self.stdout.write("(no domain is paused by the CA)")
            return
        if not names:
            raise CommandError("name the domains to mark unpaused (or --list the paused ones)")
        wanted = {}
        for raw in names:
            try:
                wanted[normalize_domain_name(raw)] = raw
            except InvalidDomainName as exc:
                raise CommandError(f"{raw}: {exc}") from None
        found = dict(Domain.objects.filter(name__in=wanted).values_list("name", "pk"))
        unknown = [wanted[name] for name in wanted if name not in found]
        if unknown:
            raise CommandError(f"no such domain: {', '.join(unknown)}")
        done = set(unpause_domains(list(found.values())))
        for name in sorted(found):
            if name in done:
                self.stdout.write(f"{name}: unpaused; due now")
            else:
                self.stdout.write(f"{name}: was not paused by the CA; left as it is")
