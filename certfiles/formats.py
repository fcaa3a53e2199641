"""Certificate and key files as customers have them (PEM, DER, PKCS#7, PKCS#12), recognised from their
bytes rather than their names. Shared by the upload checks (certificates/custom.py) and the CLI
(cli/files.py), which word their own messages; Django-free, like the CLI."""

from __future__ import annotations

import re

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs7, pkcs12

from certfiles.kdf import Pkcs12Locked, check_pkcs12

PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 #]+)-----.*?-----END \1-----", re.DOTALL)
# PFX ::= SEQUENCE { version INTEGER (3), authSafe ContentInfo { contentType OID 1.2.840.113549.1.7.x ...
_PKCS12_VERSION = bytes.fromhex("020103")
_PKCS7_CONTENT_TYPE_PREFIX = bytes.fromhex("06092a864886f70d0107")


def pem_blocks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(label, whole block) of each PEM block; text around them (openssl's `subject=` lines) is ignored."""
    return [(match.group(1), match.group(0)) for match in PEM_BLOCK.finditer(data)]


def looks_like_pkcs12(data: bytes) -> bool:
    """Whether `data` starts like a PFX, so a failure to open it is a passphrase problem, not a format one."""
    if len(data) < 4 or data[0] != 0x30:
        return False
    header = 2 + (data[1] & 0x7F if data[1] & 0x80 else 0)
    body = data[header : header + 32]
    if not body.startswith(_PKCS12_VERSION):
        return False
    content_info = body[len(_PKCS12_VERSION) :]
    inner_header = 2 + (content_info[1] & 0x7F if len(content_info) > 1 and content_info[1] & 0x80 else 0)
    return content_info[:1] == b"\x30" and content_info[inner_header:].startswith(_PKCS7_CONTENT_TYPE_PREFIX)


def der_certificates(data: bytes) -> list[x509.Certificate] | None:
    """The certificates of a DER certificate or a DER PKCS#7 bundle (maybe none); None when it is neither."""
    try:
        return [x509.load_der_x509_certificate(data)]
    except ValueError:
        pass
    try:
        return pkcs7.load_der_pkcs7_certificates(data)
    except (ValueError, UnsupportedAlgorithm):
        return None


def open_pkcs12(
    data: bytes, passwords: list[bytes | None]
) -> tuple[list[x509.Certificate], PrivateKeyTypes | None] | None:
    """The certificates (leaf first when the file names one) and the key of a PKCS#12 file, opened with
    the first of `passwords` that works (None: no password), or None when none does. Its key-derivation
    costs are checked first (kdf.EncryptionRefused); a cipher this OpenSSL lacks raises
    UnsupportedAlgorithm."""
    try:
        attempts = check_pkcs12(data, passwords)
    except Pkcs12Locked:
        return None
    for password in attempts:
        try:
            # cryptography hands OpenSSL "" for None, and OpenSSL then tries both "no password" and
            # "empty password" (PKCS#12 tells them apart, exporters differ): b"" needs no attempt of its own.
            key, cert, extra = pkcs12.load_key_and_certificates(data, password)
        except ValueError:
            continue
        return ([cert] if cert is not None else []) + list(extra), key
    return None
