"""`manage.py domains-add --app APP [--no-letsencrypt] [--profile P] [--cert F --key F] NAME`, as the
platform's CLI."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from domains.management.commands._cli import (
    add_app_argument,
    add_certificate_arguments,
    find_app,
    install_from_files,
)
from domains.services import (
    DomainLimitReached,
    DomainNameTaken,
    InvalidDomainName,
    ProfileRefused,
    ProfileUnchecked,
    create_domain,
)


class Command(BaseCommand):
    help = (
        "Adds a custom domain to an app. Its DNS is checked at once and a Let's Encrypt certificate is "
        "ordered when it points at the platform, unless --no-letsencrypt; with --cert/--key the "
        "custom certificate is checked first and nothing is added if it is rejected."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="The domain, such as www.example.com (Unicode names are accepted).")
        add_app_argument(parser, required=True)
        parser.add_argument(
            "--no-letsencrypt",
            action="store_true",
            help="Never order a Let's Encrypt certificate (nothing reaches the CA, no quota is spent).",
        )
        parser.add_argument(
            "--profile",
            default="",
            help="The CA profile of its certificates, one the CA offers (Let's Encrypt: classic, "
            "tlsserver, shortlived); default: ACME_PROFILE.",
        )
        add_certificate_arguments(parser)

    def handle(self, *args, **options) -> None:
        if bool(options["cert"]) != bool(options["key"]) and not options["cert"]:
            raise CommandError("--key needs --cert")
        app = find_app(options["app"], options["region"])
        try:
            # With a certificate, the domain and its certificate are added together or not at all.
            with transaction.atomic():
                domain = create_domain(
                    app,
                    options["name"],
                    letsencrypt=not options["no_letsencrypt"],
                    profile=options["profile"],
                )
                if options["cert"]:
                    install_from_files(domain, options)
        except (
            InvalidDomainName,
            DomainNameTaken,
            DomainLimitReached,
            ProfileRefused,
            ProfileUnchecked,
        ) as exc:
            raise CommandError(str(exc)) from None
        domain.refresh_from_db()
        self.stdout.write(f"{domain.name} added to {app.name}: {domain.get_status_display()}")
        if domain.last_error:
            self.stdout.write(domain.last_error)
