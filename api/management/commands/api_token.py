"""`manage.py api_token create USER [--name N] | list [USER] | revoke PREFIX`."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from api.models import ApiToken
from api.tokens import InvalidTokenName, create_token, revoke_by_prefix


class Command(BaseCommand):
    help = "Creates (prints once), lists or revokes API tokens."

    def add_arguments(self, parser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="Creates a token and prints it (it is not stored).")
        create.add_argument("username")
        create.add_argument("--name", default="CLI", help="What it is for.")
        listing = sub.add_parser("list", help="Lists tokens (never the tokens themselves).")
        listing.add_argument("username", nargs="?")
        revoke = sub.add_parser("revoke", help="Revokes the token whose first characters are PREFIX.")
        revoke.add_argument("prefix")

    def handle(self, *args, action: str, **options) -> None:
        if action == "create":
            user = get_user_model().objects.filter(username=options["username"]).first()
            if user is None:
                raise CommandError(
                    f"no user named {options['username']}: a new customer and its first token come from "
                    f"`manage.py customer create {options['username']} [--email E]`"
                )
            try:
                _, token = create_token(user, options["name"])
            except InvalidTokenName as exc:
                raise CommandError(str(exc)) from None
            self.stdout.write(token)
        elif action == "list":
            rows = ApiToken.objects.select_related("user")
            if options["username"]:
                rows = rows.filter(user__username=options["username"])
            for row in rows:
                state = f"revoked {row.revoked:%Y-%m-%d}" if row.revoked else "active"
                used = f"{row.last_used:%Y-%m-%d %H:%M}" if row.last_used else "never"
                self.stdout.write(
                    f"{row.prefix}...  {row.user.get_username():20} {row.name:24} {state:18} used {used}"
                )
        else:
            try:
                row = revoke_by_prefix(ApiToken.objects.all(), options["prefix"])
            except LookupError as exc:
                raise CommandError(str(exc)) from None
            self.stdout.write(f"revoked {row}")
