"""`manage.py customer create NAME [--email E] [--token-name N] [--password] | list`."""

from __future__ import annotations

import getpass
import sys

from django.core.management.base import BaseCommand, CommandError

from api.customers import (
    FIRST_CREDENTIAL_NAME,
    CustomerExists,
    CustomerRejected,
    check_new_customer,
    create_customer,
    customers,
)

# Keeps the operator's words on stderr plain: Django styles that stream as errors.
PLAIN = str
# More than any passphrase needs: standard input is read no further than that.
MAX_PASSWORD_LENGTH = 4096


class Command(BaseCommand):
    help = (
        "Creates a customer (a user who is not staff, with no password unless asked) and prints their "
        "first API token, or lists the customers."
    )

    def add_arguments(self, parser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser(
            "create",
            help="Creates a customer and prints their first API token on stdout, once (it is not stored); "
            "what it says about it goes to stderr, so that TOKEN=$(manage.py customer create NAME) works.",
        )
        create.add_argument("name", help="Their user name: ASCII letters, digits and @.+-_ (150 at most).")
        create.add_argument("--email", default="", help="Their e-mail address.")
        create.add_argument(
            "--token-name", default=FIRST_CREDENTIAL_NAME, help="What the first token is for."
        )
        create.add_argument(
            "--password",
            action="store_true",
            help="Give them a password too: asked twice on a terminal, else the first line of stdin.",
        )
        sub.add_parser("list", help="Lists the customers with their apps and active tokens.")

    def handle(self, *args, action: str, **options) -> None:
        if action == "create":
            self._create(options)
        else:
            self._list()

    def _create(self, options: dict) -> None:
        try:
            # Before asking for a password, which would be wasted on a name that cannot be had.
            check_new_customer(options["name"], options["email"])
            password = self._ask_password() if options["password"] else None
            customer, token = create_customer(
                options["name"], email=options["email"], password=password, token_name=options["token_name"]
            )
        except CustomerExists as exc:
            existing = exc.existing
            if existing.is_staff or existing.is_superuser:
                raise CommandError(f"{exc} (a staff user, not a customer)") from None
            raise CommandError(
                f"{exc}: `manage.py api_token create {existing.username}` gives them another token"
            ) from None
        except CustomerRejected as exc:
            raise CommandError(str(exc)) from None
        who = customer.username + (f" <{customer.email}>" if customer.email else "")
        sign_in = (
            "a password" if password is not None else "no password (their API token is how they sign in)"
        )
        token_name = customer.api_tokens.get().name
        self.stderr.write(f"Created customer {who}: not staff, {sign_in}.", style_func=PLAIN)
        self.stderr.write(
            f'Their API token "{token_name}" follows, shown this once (only its hash is kept):',
            style_func=PLAIN,
        )
        self.stdout.write(token)
        self.stderr.write(
            "With it they create apps and add domains, through the API or the CLI, such as: "
            "CERTWRIGHT_API_TOKEN=<the token> certwright apps-create APP",
            style_func=PLAIN,
        )

    def _ask_password(self) -> str:
        if sys.stdin.isatty():
            password = getpass.getpass("Password: ")
            if getpass.getpass("Password (again): ") != password:
                raise CommandError("the two passwords differ")
        else:
            password = sys.stdin.readline(MAX_PASSWORD_LENGTH + 2).rstrip("\r\n")
            if len(password) > MAX_PASSWORD_LENGTH:
                raise CommandError(f"a password has at most {MAX_PASSWORD_LENGTH} characters")
        if not password:
            raise CommandError("--password needs a password (none was given)")
        return password

    def _list(self) -> None:
        rows = customers().order_by("username")
        if not rows.exists():
            self.stdout.write("No customers yet: `manage.py customer create NAME` makes one.")
            return
        self.stdout.write(f"{'NAME':24} {'EMAIL':32} {'ACTIVE':6} {'APPS':>5} {'TOKENS':>6}  JOINED")
        for row in rows.iterator(chunk_size=500):
            self.stdout.write(
                f"{row.username:24} {row.email or '-':32} {'yes' if row.is_active else 'no':6} "
                f"{row.app_count:>5} {row.active_tokens:>6}  {row.date_joined:%Y-%m-%d}"
            )
