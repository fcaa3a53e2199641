"""Custom certificates: the one way to upload and remove them (the admin, the management
commands and the REST API all call these). An upload changes what is served, so the domain's
status follows at once (settle_status)."""

from __future__ import annotations

import datetime

from django.db import transaction
from django.utils import timezone

from certificates.custom import CheckedUpload, UploadRejected, check_upload
from certificates.models import Certificate, CertificateSource
from certificates.store import store_certificate
from domains.models import Domain
from domains.status import settle_status


def install_custom_certificate(
    domain: Domain,
    cert: bytes,
    key: bytes | None = None,
    chain: bytes | None = None,
    passphrase: str | bytes | None = None,
    now: datetime.datetime | None = None,
) -> Certificate:
    """Checks the upload for `domain` (certificates/custom.py) and makes it the domain's custom
    certificate, replacing any earlier one; it is served at once. Raises UploadRejected naming
    the problem, and then stores nothing."""
    now = now or timezone.now()
    checked = check_upload(domain.name, cert, key=key, chain=chain, passphrase=passphrase, now=now)
    with transaction.atomic():
        if not Domain.objects.select_for_update().filter(pk=domain.pk).exists():
            raise UploadRejected(f"{domain.name} no longer exists")
        Certificate.objects.filter(domain_id=domain.pk, source=CertificateSource.CUSTOM).delete()
        stored = store_certificate(domain.pk, CertificateSource.CUSTOM, checked, checked.private_key_pem, now)
        if stored is None:
            # With the custom one deleted just above, only the Let's Encrypt certificate can have this leaf;
            # the exception undoes the deletion.
            raise UploadRejected(
                "this is the domain's Let's Encrypt certificate, which Certwright already serves and renews: "
                "upload a certificate of your own",
                "cert",
            )
        settle_status(domain.pk, f"custom certificate uploaded ({_describe(checked)})", now)
    return stored


def remove_custom_certificate(domain: Domain, now: datetime.datetime | None = None) -> bool:
    """Deletes the domain's custom certificate; its Let's Encrypt certificate (if any, and if
    Let's Encrypt is enabled) is served at once. Returns whether there was one."""
    now = now or timezone.now()
    with transaction.atomic():
        deleted, _ = Certificate.objects.filter(domain_id=domain.pk, source=CertificateSource.CUSTOM).delete()
        if deleted:
            settle_status(domain.pk, "custom certificate removed", now)
    return bool(deleted)


def _describe(checked: CheckedUpload) -> str:
    return f"{', '.join(checked.sans[:3])}, valid until {checked.not_after:%Y-%m-%d}"
