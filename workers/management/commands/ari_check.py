"""`manage.py ari_check [--all | NAME ... | --cert-ids ID ...] [--now]`: incident response. Makes the
served Let's Encrypt certificates of all or some domains due for an ACME Renewal Information check
(RFC 9773) now: the sweep asks the CA within a minute, and a CA that moved their windows (a mass
revocation) has them renewed inside the new window. With --now the check runs here, at once, and
each certificate's window and renewal time are printed."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Q
from django.utils import timezone

from certificates.ari_schedule import check_soon, checkable
from certificates.models import Certificate, CertificateSource
from domains.models import Domain
from domains.names import InvalidDomainName, normalize_domain_name
from domains.quota_policy import when
from workers.ari_checks import check_claimed, claim_now

# --now checks inline, one request after another in bursts: beyond this many, the sweep's workers
# are the right tool (without --now they are all checked within a minute or two).
MAX_INLINE = 1000


class Command(BaseCommand):
    help = (
        "Makes Let's Encrypt certificates due for an ARI (renewal information) check now: all "
        "(--all), those of the named domains, or those with the given ARI certificate IDs or serials. "
        "With --now, checks them here and prints each one's window and renewal time."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("names", nargs="*", help="Domain names whose served certificates to check.")
        parser.add_argument("--all", action="store_true", help="Every served Let's Encrypt certificate.")
        parser.add_argument(
            "--cert-ids",
            "--issuer-cert-ids",
            dest="cert_ids",
            nargs="+",
            default=[],
            metavar="ID",
            help="Certificates by ARI certificate ID (AKI.serial, as the CA publishes them) or by "
            "hexadecimal serial.",
        )
        parser.add_argument(
            "--now", action="store_true", help=f"Check here and now (at most {MAX_INLINE} certificates)."
        )

    def handle(self, *args, names: list[str], all: bool, cert_ids: list[str], now: bool, **options) -> None:
        if all and (names or cert_ids):
            raise CommandError("--all checks every certificate: give it no names or --cert-ids")
        if not (all or names or cert_ids):
            raise CommandError("say which certificates: --all, domain names, or --cert-ids")
        moment = timezone.now()
        wanted, unknown = self._select(all, names, cert_ids)
        certificates = Certificate.objects.filter(wanted).filter(checkable(moment))
        if now:
            ids = list(certificates.order_by("pk").values_list("pk", flat=True)[: MAX_INLINE + 1])
            if len(ids) > MAX_INLINE:
                raise CommandError(
                    f"more than {MAX_INLINE} certificates: run without --now, and the ARI sweep checks "
                    "them all within a minute or two"
                )
            self._check_inline(ids)
        else:
            marked = check_soon(certificates, moment)
            self.stdout.write(
                f"{marked} certificate{'s' if marked != 1 else ''} due for an ARI check now: the sweep "
                "asks the CA within a minute (see the certificates in the admin)."
                if marked
                else "No served Let's Encrypt certificate to check among those."
            )
        if unknown:
            raise CommandError("not found: " + ", ".join(unknown))

    def _select(self, all: bool, names: list[str], cert_ids: list[str]) -> tuple[Q, list[str]]:
        if all:
            return Q(source=CertificateSource.LETSENCRYPT), []
        wanted, unknown = Q(pk__in=[]), []
        if names:
            normalized = {}
            for raw in names:
                try:
                    normalized[normalize_domain_name(raw)] = raw
                except InvalidDomainName as exc:
                    unknown.append(f"{raw} ({exc.message})")
            found = set(Domain.objects.filter(name__in=list(normalized)).values_list("name", flat=True))
            unknown += [raw for name, raw in normalized.items() if name not in found]
            wanted |= Q(domain__name__in=list(found))
        if cert_ids:
            serials = {_serial(value) for value in cert_ids} - {""}
            by_id = Q(ari_cert_id__in=cert_ids) | Q(serial__in=serials)
            found_ids = set(Certificate.objects.filter(by_id).values_list("ari_cert_id", "serial"))
            known = {value for pair in found_ids for value in pair}
            unknown += [value for value in cert_ids if value not in known and _serial(value) not in known]
            wanted |= by_id
        return wanted, unknown

    def _check_inline(self, ids: list[int]) -> None:
        if not ids:
            self.stdout.write("No served Let's Encrypt certificate to check among those.")
            return
        moment = timezone.now()
        claimed, lease = claim_now(ids, moment)
        counts = check_claimed(claimed, lease)
        rows = (
            Certificate.objects.filter(pk__in=claimed)
            .select_related("domain")
            .order_by("domain__name", "pk")
            .only(
                "domain__name",
                "serial",
                "ari_cert_id",
                "renew_at",
                "ari_window_start",
                "ari_window_end",
                "ari_explanation_url",
                "ari_next_check",
                "ari_error",
            )
        )
        for cert in rows:
            self.stdout.write(f"{cert.domain.name}  (ARI ID {cert.ari_cert_id})")
            if cert.ari_error:
                self.stdout.write(f"  error        {cert.ari_error}")
            if cert.ari_window_start and cert.ari_window_end:
                self.stdout.write(
                    f"  window       {_at(cert.ari_window_start)} to {_at(cert.ari_window_end)}"
                )
            if cert.ari_explanation_url:
                self.stdout.write(f"  explanation  {cert.ari_explanation_url}")
            self.stdout.write(f"  renewal at   {_at(cert.renew_at) if cert.renew_at else 'not scheduled'}")
            self.stdout.write(f"  next check   {_at(cert.ari_next_check) if cert.ari_next_check else '-'}")
        self.stdout.write(
            f"Checked {counts['claimed']}: {counts.get('windows', 0)} windows, "
            f"{counts.get('rescheduled', 0)} renewals rescheduled, {counts.get('failed', 0)} failed."
        )
        if counts.get("due_now"):
            self.stdout.write(
                f"{counts['due_now']} due now: the renewal sweep takes them within a minute "
                "(beat's 'Renew due certificates')."
            )


def _serial(value: str) -> str:
    """A hexadecimal serial as Certificate.serial stores it (lowercase, no separators or leading
    zeros); empty when `value` is not one."""
    text = value.strip().lower().replace(":", "")
    text = text[2:] if text.startswith("0x") else text
    if not text or len(text) > 64 or any(c not in "0123456789abcdef" for c in text):
        return ""
    return text.lstrip("0") or "0"


def _at(moment) -> str:
    return when(moment)
