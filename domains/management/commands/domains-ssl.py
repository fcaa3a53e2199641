"""`manage.py domains-ssl --cert F --key F NAME` and `domains-ssl --disable NAME`, as the
platform's CLI: upload or remove a domain's custom certificate."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from domains.custom_certificates import remove_custom_certificate
from domains.management.commands._cli import (
    add_app_argument,
    add_certificate_arguments,
    find_domain,
    install_from_files,
)


class Command(BaseCommand):
    help = (
        "Uploads a custom certificate for a domain (checked first: it must cover the domain, match its "
        "key, be valid and chain up to a trusted root), or removes it with --disable (the Let's Encrypt "
        "certificate is then served at once)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="The domain.")
        add_app_argument(parser, required=False)
        add_certificate_arguments(parser)
        parser.add_argument("--disable", action="store_true", help="Remove the custom certificate.")

    def handle(self, *args, **options) -> None:
        domain = find_domain(options["name"], options["app"], options["region"])
        if options["disable"]:
            if options["cert"] or options["key"]:
                raise CommandError("--disable takes no certificate")
            if not remove_custom_certificate(domain):
                raise CommandError(f"{domain.name} has no custom certificate")
            domain.refresh_from_db()
            self.stdout.write(f"{domain.name}: custom certificate removed; {domain.get_status_display()}")
            return
        if not options["cert"]:
            raise CommandError("give --cert (and --key, unless it is a PKCS#12 file), or --disable")
        stored = install_from_files(domain, options)
        domain.refresh_from_db()
        self.stdout.write(
            f"{domain.name}: custom certificate for {', '.join(stored.sans)} stored and served, valid until "
            f"{stored.not_after:%Y-%m-%d %H:%M} UTC (SHA-256 {stored.fingerprint_sha256}); "
            f"Let's Encrypt: {domain.get_status_display()}"
        )
