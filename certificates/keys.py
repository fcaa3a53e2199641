"""Fresh private keys and CSRs for orders."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

KEY_TYPES = ("ec256", "rsa2048")


def generate_private_key_pem(key_type: str) -> bytes:
    """A new private key as PKCS#8 PEM: ECDSA P-256 (`ec256`) or RSA 2048 (`rsa2048`)."""
    if key_type == "ec256":
        key = ec.generate_private_key(ec.SECP256R1())
    elif key_type == "rsa2048":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        raise ValueError(f"unknown key type {key_type!r}; expected one of {', '.join(KEY_TYPES)}")
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_csr_pem(private_key_pem: bytes, names: list[str]) -> bytes:
    """A CSR for `names` (SANs; the first is also the CN, as Let's Encrypt accepts up to 64 octets)."""
    key = serialization.load_pem_private_key(private_key_pem, password=None)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])] if len(names[0]) <= 64 else [])
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)
