"""What the platform-CLI-like commands share: finding the app and the domain, reading certificate
files, and asking for a passphrase."""

from __future__ import annotations

import getpass
import sys
from pathlib import Path

from django.core.management.base import CommandError

from certificates.custom import MAX_UPLOAD_BYTES, UploadRejected
from domains.custom_certificates import install_custom_certificate
from domains.models import App, Domain
from domains.names import InvalidDomainName, normalize_domain_name


def add_app_argument(parser, required: bool) -> None:
    parser.add_argument("--app", "-a", required=required, help="The app (its name).")
    parser.add_argument("--region", help="The app's region, when apps of that name exist in several.")


def add_certificate_arguments(parser) -> None:
    parser.add_argument("--cert", help="Certificate file: PEM bundle, DER, PKCS#7 (.p7b) or PKCS#12 (.pfx).")
    parser.add_argument("--key", help="Private key file: PEM or DER (PKCS#1, PKCS#8, SEC1), maybe encrypted.")
    parser.add_argument("--chain", help="Intermediates, when the certificate file lacks them.")
    parser.add_argument(
        "--passphrase-file", help="A file whose first line is the key's (or PKCS#12's) passphrase."
    )


def find_app(name: str, region: str | None) -> App:
    apps = App.objects.filter(name=name).select_related("region")
    if region:
        apps = apps.filter(region__name=region)
    found = list(apps[:2])
    if not found:
        raise CommandError(f"no app named {name}" + (f" in region {region}" if region else ""))
    if len(found) > 1:
        raise CommandError(f"apps named {name} exist in several regions: say which with --region")
    return found[0]


def find_domain(raw_name: str, app_name: str | None, region: str | None) -> Domain:
    try:
        name = normalize_domain_name(raw_name)
    except InvalidDomainName as exc:
        raise CommandError(str(exc)) from None
    domain = Domain.objects.select_related("app").filter(name=name).first()
    if domain is None or (app_name and domain.app.name != app_name):
        where = f" on app {app_name}" if app_name else ""
        raise CommandError(f"no domain {name}{where}")
    if app_name and region and domain.app.region.name != region:
        raise CommandError(f"no domain {name} on app {app_name} in region {region}")
    return domain


def read_file(path: str | None, what: str) -> bytes | None:
    if not path:
        return None
    file = Path(path)
    try:
        size = file.stat().st_size
        if size > MAX_UPLOAD_BYTES:
            raise CommandError(
                f"the {what} file {path} is {size:,} bytes; at most {MAX_UPLOAD_BYTES:,} bytes (64 KiB) "
                "are accepted"
            )
        return file.read_bytes()
    except OSError as exc:
        raise CommandError(f"cannot read the {what} file {path}: {exc.strerror}") from None


def install_from_files(domain: Domain, options: dict, stdin_is_tty: bool | None = None):
    """Reads the files named by --cert/--key/--chain/--passphrase-file and installs them; asks for
    a passphrase (once) when the key or PKCS#12 file needs one and none was given."""
    cert = read_file(options["cert"], "certificate")
    key = read_file(options["key"], "key")
    chain = read_file(options["chain"], "intermediates")
    passphrase = None
    if options.get("passphrase_file"):
        passphrase = (read_file(options["passphrase_file"], "passphrase") or b"").splitlines()[0:1]
        passphrase = passphrase[0] if passphrase else b""
    interactive = sys.stdin.isatty() if stdin_is_tty is None else stdin_is_tty
    try:
        return install_custom_certificate(domain, cert, key=key, chain=chain, passphrase=passphrase)
    except UploadRejected as exc:
        if exc.field == "passphrase" and passphrase is None and interactive:
            passphrase = getpass.getpass("Passphrase of the private key: ")
            try:
                return install_custom_certificate(domain, cert, key=key, chain=chain, passphrase=passphrase)
            except UploadRejected as again:
                raise CommandError(str(again)) from None
        raise CommandError(str(exc)) from None
