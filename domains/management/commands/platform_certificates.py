"""`manage.py platform_certificates`: gives every region its platform domain `*.<suffix>` (idempotent,
as beat's tick does) and lists their statuses and the certificates served for them."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from certificates.serving import served_certificate_of
from domains.platform import ensure_platform_domains, platform_domains


class Command(BaseCommand):
    help = (
        "Makes sure every region has its platform certificate domain (*.<domain suffix>), then lists "
        "them: status, the certificate served now and until when, and what is wrong, if anything."
    )

    def handle(self, *args, **options) -> None:
        now = timezone.now()
        refused = []
        for change in ensure_platform_domains(now):
            self.stdout.write(f"{change.region}: {change.name} {change.what}")
            if change.what.startswith("refused"):
                refused.append(change.region)
        self.stdout.write(f"{'region':16} {'name':40} {'status':16} {'served until':24} problem")
        domains = platform_domains().select_related("app__region").order_by("app__region__name")
        for domain in domains:
            served = served_certificate_of(domain.pk, now)
            until = f"{served.not_after:%Y-%m-%d %H:%M} UTC" if served else "-"
            self.stdout.write(
                f"{domain.app.region.name:16} {domain.name:40} {domain.get_status_display():16} "
                f"{until:24} {domain.last_error or '-'}"
            )
        if refused:
            raise CommandError(f"no platform domain for {', '.join(refused)}: see above")
