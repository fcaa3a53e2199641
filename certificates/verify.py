"""Checks an issued chain before it is stored: it parses, matches our key, covers the names, and
validates up to a trusted root with `cryptography.x509.verification`."""

from __future__ import annotations

import datetime
import logging
import os
import re
import warnings
from functools import lru_cache

import certifi
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
from django.conf import settings

from certificates.facts import CertificateFacts, certificate_facts
from certificates.issuers import by_directory

logger = logging.getLogger(__name__)


class ChainRejected(Exception):
    """The chain is unusable; the message says why in plain words."""


_PEM_BLOCK = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


@lru_cache(maxsize=8)
def _load_roots(path: str, mtime: float) -> tuple[x509.Certificate, ...]:
    """The certificates of a PEM bundle, one by one: a root that this cryptography cannot parse
    (certifi ships one with a negative serial, which a future release will refuse) is skipped
    instead of making the whole trust store unusable."""
    with open(path, "rb") as handle:
        data = handle.read()
    roots = []
    for block in _PEM_BLOCK.findall(data):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", CryptographyDeprecationWarning)
                roots.append(x509.load_pem_x509_certificate(block))
        except ValueError:
            logger.warning("skipping a certificate of %s that cannot be parsed", path)
    return tuple(roots)


def trusted_roots(extra: str | None = None, setting: str = "EXTRA_TRUSTED_ROOTS") -> list[x509.Certificate]:
    """certifi's public roots plus the roots of the file `extra` (default EXTRA_TRUSTED_ROOTS; an
    issuer's `roots`, named by `setting` when it is missing), read again when the file changes."""
    roots = list(_load_roots(certifi.where(), os.path.getmtime(certifi.where())))
    extra = settings.EXTRA_TRUSTED_ROOTS if extra is None else extra
    if extra:
        try:
            roots += _load_roots(extra, os.path.getmtime(extra))
        except FileNotFoundError:
            raise ChainRejected(f"{setting} names a file that does not exist: {extra}") from None
    return roots


def split_chain(pem: str | bytes) -> list[x509.Certificate]:
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        chain = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ChainRejected("the CA's answer is not a PEM certificate chain") from None
    return chain


def public_key_der(key) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def verify_issued_chain(
    fullchain_pem: str,
    private_key_pem: bytes,
    names: list[str],
    now: datetime.datetime | None = None,
    directory_url: str | None = None,
) -> CertificateFacts:
    """Verifies the chain the CA at `directory_url` returned for `names` and our key, up to that
    issuer's roots (certifi's and its `roots`), and returns what is stored about it; raises
    ChainRejected."""
    chain = split_chain(fullchain_pem)
    leaf, intermediates = chain[0], chain[1:]
    key = serialization.load_pem_private_key(private_key_pem, password=None)
    if public_key_der(leaf.public_key()) != public_key_der(key.public_key()):
        raise ChainRejected("the certificate's public key does not match the order's private key")
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise ChainRejected("the certificate has no subject alternative names") from None
    sans = san.get_values_for_type(x509.DNSName)
    missing = [name for name in names if name not in sans]
    if missing:
        raise ChainRejected(f"the certificate does not cover {', '.join(missing)}")
    issuer = by_directory(directory_url) if directory_url else None
    if issuer is None or not settings.ACME_ISSUERS_SET:
        roots = trusted_roots()
    else:
        roots = trusted_roots(issuer.roots, f"ACME_ISSUERS' roots of issuer {issuer.name}")
    if not roots:
        raise ChainRejected("no trusted root is configured")
    builder = PolicyBuilder().store(Store(roots))
    if now is not None:
        builder = builder.time(now)
    # A TLS client asks for a name, never for "*.example.com": a wildcard is checked as one below it.
    subject = names[0].replace("*.", "wildcard-check.", 1) if names[0].startswith("*.") else names[0]
    verifier = builder.build_server_verifier(x509.DNSName(subject))
    try:
        verifier.verify(leaf, intermediates)
    except VerificationError as exc:
        raise ChainRejected(f"the chain does not validate up to a trusted root: {exc}") from None
    return certificate_facts(chain)
