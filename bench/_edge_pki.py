"""The edge benchmark's CA: a root and an intermediate (EC P-256), and leaves for single names,
made fast (one P-256 key and one ECDSA signature each), with the extensions a Web PKI verifier
wants, so Certwright's upload checks accept them once the root is in EXTRA_TRUSTED_ROOTS."""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_CA_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)
_LEAF_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Certwright Bench"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


@dataclass(frozen=True)
class Leaf:
    """A leaf as Certwright stores it and a router serves it."""

    name: str
    certificate: x509.Certificate
    chain_pem: bytes  # leaf, then the intermediate
    key_pem: bytes  # unencrypted PKCS#8
    fingerprint: str  # SHA-256 of the leaf's DER, as the feed and the handshake show it

    @property
    def bundle(self) -> bytes:
        """The file a router loads: chain, then key."""
        return self.chain_pem + self.key_pem


class BenchPki:
    """A root valid for ten years and an intermediate under it."""

    def __init__(self, name: str = "Certwright Edge Bench") -> None:
        now = datetime.datetime.now(datetime.UTC)
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.root = self._ca(
            _name(f"{name} Root CA"), self.root_key, _name(f"{name} Root CA"), self.root_key, now
        )
        self.intermediate_key = ec.generate_private_key(ec.SECP256R1())
        self.intermediate = self._ca(
            _name(f"{name} Intermediate CA"), self.intermediate_key, self.root.subject, self.root_key, now
        )
        self.intermediate_pem = self.intermediate.public_bytes(serialization.Encoding.PEM)
        self.root_pem = self.root.public_bytes(serialization.Encoding.PEM)
        self._issuer_aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(
            self.intermediate_key.public_key()
        )

    @staticmethod
    def _ca(subject, key, issuer, issuer_key, now) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None if key is issuer_key else 0), True)
            .add_extension(_CA_USAGE, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        )
        if key is not issuer_key:
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
            )
        return builder.sign(issuer_key, hashes.SHA256())

    def leaf(
        self,
        name: str,
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
    ) -> Leaf:
        """A leaf for `name` (valid from an hour ago for 90 days unless told)."""
        now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        not_before = not_before or now - datetime.timedelta(hours=1)
        not_after = not_after or not_before + datetime.timedelta(days=90)
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.intermediate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_LEAF_USAGE, critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(self._issuer_aki, critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(self.intermediate_key, hashes.SHA256())
        )
        der = certificate.public_bytes(serialization.Encoding.DER)
        return Leaf(
            name=name,
            certificate=certificate,
            chain_pem=certificate.public_bytes(serialization.Encoding.PEM) + self.intermediate_pem,
            key_pem=key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
            fingerprint=hashlib.sha256(der).hexdigest(),
        )
