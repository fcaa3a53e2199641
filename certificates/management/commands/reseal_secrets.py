"""`manage.py reseal_secrets`: re-encrypts every stored private key under the newest key."""

from django.core.management.base import BaseCommand, CommandError

from certificates.key_rotation import reseal_all_secrets
from certificates.sealing import SecretUnreadable


class Command(BaseCommand):
    help = (
        "Re-encrypts every stored private key with the first key of KEY_ENCRYPTION_KEYS. "
        "Rotation: put the new key first, keep the old ones after it, run this, then drop the old ones."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--batch-size", type=int, default=500)

    def handle(self, *args, batch_size: int, **options) -> None:
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        try:
            counts = reseal_all_secrets(batch_size=batch_size)
        except SecretUnreadable as exc:
            raise CommandError(f"{exc}; nothing after the failing batch was changed") from exc
        for label, count in counts.items():
            self.stdout.write(f"{label}: {count} row(s) re-sealed")
        self.stdout.write(self.style.SUCCESS("All secrets are sealed with the newest key."))
