"""`manage.py router_token create [--name N] | list | revoke PREFIX`: the routers' tokens."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from api.models import ApiToken
from api.routers import ROUTERS_USERNAME, create_router_token
from api.tokens import InvalidTokenName, check_token_name, revoke_by_prefix
from domains.models import Region


class Command(BaseCommand):
    help = (
        "Creates (prints once), lists or revokes the tokens TLS routers use to fetch served "
        "certificates and their keys from /routers/v1/certificate."
    )

    def add_arguments(self, parser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="Creates a router token and prints it (it is not stored).")
        create.add_argument("--name", default="router", help="Which router it is for, such as 'edge-1'.")
        create.add_argument(
            "--region",
            action="append",
            default=[],
            help="A region whose certificates it may fetch (repeat for several); none: every region.",
        )
        sub.add_parser("list", help="Lists the routers' tokens (never the tokens themselves).")
        revoke = sub.add_parser("revoke", help="Revokes the router token whose first characters are PREFIX.")
        revoke.add_argument("prefix")

    def handle(self, *args, action: str, **options) -> None:
        rows = ApiToken.objects.filter(user__username=ROUTERS_USERNAME)
        if action == "create":
            try:
                # Checked first: create_router_token makes the routers' user before the token.
                name = check_token_name(options["name"])
            except InvalidTokenName as exc:
                raise CommandError(str(exc)) from None
            self.stdout.write(create_router_token(name, _region_ids(options["region"])))
        elif action == "list":
            names = dict(Region.objects.values_list("pk", "name"))
            for row in rows:
                state = f"revoked {row.revoked:%Y-%m-%d}" if row.revoked else "active"
                used = f"{row.last_used:%Y-%m-%d %H:%M}" if row.last_used else "never"
                scope = ",".join(names.get(pk, f"#{pk}") for pk in row.regions) or "every region"
                self.stdout.write(f"{row.prefix}...  {row.name:24} {state:18} used {used:16}  {scope}")
        else:
            try:
                row = revoke_by_prefix(rows, options["prefix"], what="router token")
            except LookupError as exc:
                raise CommandError(str(exc)) from None
            self.stdout.write(f"revoked {row}")


def _region_ids(names: list[str]) -> list[int]:
    """The ids of the regions named, or a CommandError naming the unknown ones and the known ones."""
    known = dict(Region.objects.values_list("name", "pk"))
    unknown = [name for name in names if name not in known]
    if unknown:
        raise CommandError(
            f"no region named {', '.join(unknown)}; the regions are: {', '.join(sorted(known)) or 'none yet'}"
        )
    return [known[name] for name in names]
