"""What is stored about a certificate, read from its leaf and the chain served with it: one type and one
function for the uploads (certificates/custom.py) and for the certificates Let's Encrypt issues
(certificates/verify.py). Django-free."""

from __future__ import annotations

import base64
import datetime
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization


@dataclass(frozen=True)
class CertificateFacts:
    """The stored facts of a certificate (the columns of a Certificate row but its key)."""

    fullchain_pem: str  # leaf first, then the intermediates in path order; no self-signed root
    not_before: datetime.datetime
    not_after: datetime.datetime
    sans: list[str]
    issuer: str
    serial: str  # hexadecimal
    fingerprint_sha256: str  # hexadecimal SHA-256 of the leaf's DER
    ari_cert_id: str = ""  # RFC 9773's certificate identifier; empty without an authority key identifier


def certificate_facts(path: Sequence[x509.Certificate]) -> CertificateFacts:
    """The facts of the leaf `path[0]` served with the rest of `path`. A damaged field of the leaf raises
    ValueError (cryptography reads fields when they are first used)."""
    leaf = path[0]
    return CertificateFacts(
        fullchain_pem="".join(cert.public_bytes(serialization.Encoding.PEM).decode("ascii") for cert in path),
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        sans=dns_names(leaf),
        issuer=leaf.issuer.rfc4514_string(),
        serial=format(leaf.serial_number, "x"),
        fingerprint_sha256=hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest(),
        ari_cert_id=renewal_info_id(leaf),
    )


def renewal_info_id(leaf: x509.Certificate) -> str:
    """The certificate's identifier in ACME Renewal Information (RFC 9773 section 4.1): the
    base64url (unpadded) key identifier of its Authority Key Identifier, a dot, and the base64url
    of its serial's DER integer octets (a leading zero octet kept when the high bit is set). Empty
    when the leaf has no key identifier to name its issuer by."""
    try:
        aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except (x509.ExtensionNotFound, ValueError):
        return ""
    if not aki.key_identifier:
        return ""
    serial = leaf.serial_number
    # Two's complement, minimal: a positive serial whose top bit is set gets a leading zero octet.
    octets = serial.to_bytes(serial.bit_length() // 8 + 1, "big", signed=True)
    return f"{_b64url(aki.key_identifier)}.{_b64url(octets)}"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def dns_names(leaf: x509.Certificate) -> list[str]:
    """The leaf's DNS subject alternative names, lowercase; none without the extension. Malformed or
    duplicate extensions raise ValueError."""
    try:
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [name.lower() for name in names.get_values_for_type(x509.DNSName)]
