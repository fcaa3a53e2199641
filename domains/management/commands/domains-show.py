"""`manage.py domains-show NAME`: the domain's status and the certificate served for it now."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from certificates.models import Certificate, CertificateSource
from certificates.serving import served_certificate_of
from domains.management.commands._cli import add_app_argument, find_domain
from domains.ownership import ownership_record
from domains.profiles import effective_profile


class Command(BaseCommand):
    help = "Shows a domain's Let's Encrypt status and the certificate served for it right now."

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="The domain.")
        add_app_argument(parser, required=False)

    def handle(self, *args, **options) -> None:
        domain = find_domain(options["name"], options["app"], options["region"])
        lines = [
            ("name", domain.name),
            ("app", domain.app.name),
            ("letsencrypt", "enabled" if domain.letsencrypt_enabled else "disabled"),
            (
                "profile",
                domain.acme_profile or f"{effective_profile('') or 'the CA default'} (platform default)",
            ),
            ("status", domain.get_status_display()),
        ]
        if domain.last_error:
            lines.append(("last error", domain.last_error))
        if domain.ownership_verified_at:
            lines.append(("ownership", f"proven {domain.ownership_verified_at:%Y-%m-%d %H:%M:%S} UTC"))
        else:
            lines.append(
                ("ownership", f"not proven yet: {ownership_record(domain.name, domain.ownership_token)}")
            )
        if domain.next_attempt_at:
            lines.append(("next attempt", f"{domain.next_attempt_at:%Y-%m-%d %H:%M:%S} UTC"))
        cert = served_certificate_of(domain.pk)
        if cert is None:
            lines.append(("served", "nothing"))
        else:
            lines += [
                ("served", cert.get_source_display()),
                ("names", ", ".join(cert.sans)),
                ("issuer", cert.issuer),
                ("profile", cert.profile or "-"),
                ("not after", f"{cert.not_after:%Y-%m-%d %H:%M:%S} UTC"),
                ("sha-256", cert.fingerprint_sha256),
            ]
            if cert.source == CertificateSource.LETSENCRYPT:
                lines += _renewal_lines(cert)
        for label, value in lines:
            self.stdout.write(f"{label:13} {value}")


def _renewal_lines(cert: Certificate) -> list[tuple[str, str]]:
    """When the certificate is renewed, and the CA's renewal window (ACME Renewal Information)."""
    lines = [("renewal at", f"{cert.renew_at:%Y-%m-%d %H:%M:%S} UTC" if cert.renew_at else "not scheduled")]
    if cert.ari_window_start and cert.ari_window_end:
        window = f"{cert.ari_window_start:%Y-%m-%d %H:%M:%S} to {cert.ari_window_end:%Y-%m-%d %H:%M:%S} UTC"
        lines.append(("ari window", window))
    if cert.ari_explanation_url:
        lines.append(("ari why", cert.ari_explanation_url))
    if cert.ari_next_check:
        lines.append(("ari next", f"{cert.ari_next_check:%Y-%m-%d %H:%M:%S} UTC"))
    if cert.ari_error:
        lines.append(("ari error", cert.ari_error))
    return lines
