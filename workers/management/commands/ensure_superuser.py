"""`manage.py ensure_superuser`: creates the operators' admin user from the environment, once."""

import os

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = (
        "Creates a superuser from DJANGO_SUPERUSER_USERNAME, DJANGO_SUPERUSER_PASSWORD and "
        "DJANGO_SUPERUSER_EMAIL unless that user exists. Never changes an existing user's password."
    )

    def handle(self, *args, **options) -> None:
        username = os.environ.get("DJANGO_SUPERUSER_USERNAME", "").strip()
        password = os.environ.get("DJANGO_SUPERUSER_PASSWORD", "")
        email = os.environ.get("DJANGO_SUPERUSER_EMAIL", "").strip()
        if not username or not password:
            raise CommandError("DJANGO_SUPERUSER_USERNAME and DJANGO_SUPERUSER_PASSWORD must both be set")
        users = get_user_model().objects
        if users.filter(username=username).exists():
            self.stdout.write(f"superuser {username} already exists; left as it is")
            return
        users.create_superuser(username=username, email=email, password=password)
        self.stdout.write(f"created superuser {username}")
