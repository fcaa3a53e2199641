"""A small test PKI built in memory with `cryptography`: a root, an intermediate and leaves made to order
(expired, weak keys, SHA-1, another issuer...), plus the encodings customers upload (PEM, DER, PKCS#7,
PKCS#12, encrypted keys). Nothing touches the disk unless asked (`write_root`)."""

from __future__ import annotations

import base64
import datetime
import hmac
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from cryptography.hazmat.primitives.serialization import pkcs7, pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certfiles.pbe import pkcs12_kdf, pkcs12_password_forms

ONE_DAY = datetime.timedelta(days=1)
TEN_YEARS = datetime.timedelta(days=3652)

PrivateKey = CertificateIssuerPrivateKeyTypes

_KEY_MAKERS = {
    "ec": lambda: ec.generate_private_key(ec.SECP256R1()),
    "p256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "p384": lambda: ec.generate_private_key(ec.SECP384R1()),
    "p521": lambda: ec.generate_private_key(ec.SECP521R1()),
    "secp256k1": lambda: ec.generate_private_key(ec.SECP256K1()),
    "rsa1024": lambda: rsa.generate_private_key(public_exponent=65537, key_size=1024),  # noqa: S505 (weak on purpose)
    "rsa2048": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "rsa3072": lambda: rsa.generate_private_key(public_exponent=65537, key_size=3072),
    "dsa": lambda: dsa.generate_private_key(key_size=2048),
    "ed25519": ed25519.Ed25519PrivateKey.generate,
    "ed448": ed448.Ed448PrivateKey.generate,
}

# cryptography refuses to sign certificates with SHA-1 or MD5, but browsers still meet such certificates in
# uploads, so the weak ones are signed by hand: same TBS with this AlgorithmIdentifier (DER) swapped in.
_ALGORITHM_IDENTIFIERS = {
    ("rsa", "sha256"): bytes.fromhex("300d06092a864886f70d01010b0500"),
    ("rsa", "sha1"): bytes.fromhex("300d06092a864886f70d0101050500"),
    ("rsa", "md5"): bytes.fromhex("300d06092a864886f70d0101040500"),
    ("ec", "sha256"): bytes.fromhex("300a06082a8648ce3d040302"),
    ("ec", "sha1"): bytes.fromhex("300906072a8648ce3d0401"),
}


def new_key(key_type: str = "ec") -> PrivateKey:
    """A fresh private key: "ec" (P-256), "p384", "p521", "secp256k1", "rsa1024", "rsa2048", "rsa3072",
    "dsa", "ed25519" or "ed448"."""
    return _KEY_MAKERS[key_type]()


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Certwright Tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _der_header_length(data: bytes) -> tuple[int, int]:
    """(header length, content length) of the DER element at the start of `data`."""
    first = data[1]
    if first < 0x80:
        return 2, first
    count = first & 0x7F
    return 2 + count, int.from_bytes(data[2 : 2 + count], "big")


def _der(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        return bytes([tag, size]) + content
    encoded = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(encoded)]) + encoded + content


def _resign_with_weak_hash(
    cert: x509.Certificate, issuer_key: PrivateKey, hash_name: str
) -> x509.Certificate:
    """The same certificate, really signed with SHA-1 or MD5 (the signature verifies with the issuer key)."""
    family = "rsa" if isinstance(issuer_key, rsa.RSAPrivateKey) else "ec"
    supported = isinstance(issuer_key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
    if not supported or (family, hash_name) not in _ALGORITHM_IDENTIFIERS:
        raise ValueError(f"cannot sign with {hash_name} using a {type(issuer_key).__name__}")
    tbs = cert.tbs_certificate_bytes
    header, size = _der_header_length(tbs)
    content = tbs[header : header + size]
    # TBSCertificate: [0] version, serialNumber, signature AlgorithmIdentifier, ...: skip the first two.
    offset = 0
    for _ in range(2):
        element_header, element_size = _der_header_length(content[offset:])
        offset += element_header + element_size
    old_header, old_size = _der_header_length(content[offset:])
    old = content[offset : offset + old_header + old_size]
    assert old == _ALGORITHM_IDENTIFIERS[(family, "sha256")], "expected a SHA-256 signed certificate"
    new = _ALGORITHM_IDENTIFIERS[(family, hash_name)]
    new_tbs = _der(0x30, content[:offset] + new + content[offset + len(old) :])
    algorithm = {"sha1": hashes.SHA1(), "md5": hashes.MD5()}[hash_name]  # noqa: S303
    if family == "rsa":
        signature = issuer_key.sign(new_tbs, padding.PKCS1v15(), algorithm)
    else:
        signature = issuer_key.sign(new_tbs, ec.ECDSA(algorithm))
    return x509.load_der_x509_certificate(_der(0x30, new_tbs + new + _der(0x03, b"\x00" + signature)))


def _sign(
    builder: x509.CertificateBuilder, issuer_key: PrivateKey, hash_algorithm: hashes.HashAlgorithm | None
) -> x509.Certificate:
    if isinstance(issuer_key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return builder.sign(issuer_key, None)
    if hash_algorithm is not None and hash_algorithm.name in ("sha1", "md5"):
        return _resign_with_weak_hash(
            builder.sign(issuer_key, hashes.SHA256()), issuer_key, hash_algorithm.name
        )
    return builder.sign(issuer_key, hash_algorithm or hashes.SHA256())


class Pki:
    """A root CA and one intermediate, valid from a day ago for ten years; makes leaves to order.
    `root_hash_algorithm` signs the root itself (SHA-1 for an old-style root).

    Two `Pki` built with the same `name` have the same subject names but different keys, which is how the
    tests make a "right name, wrong key" issuer."""

    def __init__(
        self,
        name: str = "Certwright Test",
        *,
        key_type: str = "ec",
        root_hash_algorithm: hashes.HashAlgorithm = hashes.SHA256(),  # noqa: B008 (immutable)
    ):
        self.name = name
        self.key_type = key_type
        now = datetime.datetime.now(datetime.UTC)
        self.root_key = new_key(key_type)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(f"{name} Root CA"))
            .issuer_name(_name(f"{name} Root CA"))
            .public_key(self.root_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - ONE_DAY)
            .not_valid_after(now + TEN_YEARS)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_ca_key_usage(), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.root_key.public_key()), critical=False
            )
        )
        self.root = _sign(builder, self.root_key, root_hash_algorithm)
        self.intermediate, self.intermediate_key = self.make_intermediate()

    def make_intermediate(
        self,
        common_name: str | None = None,
        *,
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
        key: PrivateKey | None = None,
        hash_algorithm: hashes.HashAlgorithm = hashes.SHA256(),  # noqa: B008 (immutable)
        path_length: int | None = 0,
    ) -> tuple[x509.Certificate, PrivateKey]:
        """Another intermediate signed by the root (the default one is `self.intermediate`); give it a
        `path_length` of 1 or more to hang another CA below it."""
        now = datetime.datetime.now(datetime.UTC)
        key = key or new_key(self.key_type)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name or f"{self.name} Intermediate CA"))
            .issuer_name(self.root.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - ONE_DAY)
            .not_valid_after(not_after or now + TEN_YEARS)
            .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
            .add_extension(_ca_key_usage(), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.root_key.public_key()), critical=False
            )
        )
        return _sign(builder, self.root_key, hash_algorithm), key

    def leaf(
        self,
        names: Sequence[str],
        *,
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
        key: PrivateKey | None = None,
        key_type: str = "ec",
        hash_algorithm: hashes.HashAlgorithm = hashes.SHA256(),  # noqa: B008 (immutable)
        issuer: str | tuple[x509.Certificate, PrivateKey] = "intermediate",
        ca: bool = False,
        common_name: str | None = None,
        extended_key_usage: Iterable[x509.ObjectIdentifier] | None = (ExtendedKeyUsageOID.SERVER_AUTH,),
    ) -> tuple[x509.Certificate, PrivateKey]:
        """A certificate for `names` (DNS SANs; none if empty), valid from a day ago for 90 days unless told.

        `issuer` is "intermediate", "root", "self" (self-signed) or a (certificate, key) pair; `ca=True` makes
        a CA certificate; `extended_key_usage=None` leaves the extension out."""
        now = datetime.datetime.now(datetime.UTC)
        key = key or new_key(key_type)
        subject = _name(common_name or (names[0] if names else "no name"))
        if issuer == "self":
            issuer_name, issuer_key = subject, key
        else:
            if issuer == "intermediate":
                issuer_cert, issuer_key = self.intermediate, self.intermediate_key
            elif issuer == "root":
                issuer_cert, issuer_key = self.root, self.root_key
            else:
                issuer_cert, issuer_key = issuer
            issuer_name = issuer_cert.subject
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - ONE_DAY)
            .not_valid_after(not_after or now + datetime.timedelta(days=90))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
            )
        )
        if ca:
            builder = builder.add_extension(_ca_key_usage(), critical=True)
        else:
            builder = builder.add_extension(_leaf_key_usage(key), critical=True)
        if names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(name) for name in names]), critical=False
            )
        if extended_key_usage is not None:
            builder = builder.add_extension(x509.ExtendedKeyUsage(list(extended_key_usage)), critical=False)
        return _sign(builder, issuer_key, hash_algorithm), key

    def chain_pem(self, leaf: x509.Certificate) -> bytes:
        """The leaf and the intermediate, as a PEM bundle (what a CA usually hands out)."""
        return pem(leaf) + pem(self.intermediate)

    def write_root(self, path: str | Path) -> str:
        """Writes the root as PEM (for EXTRA_TRUSTED_ROOTS) and returns the path."""
        Path(path).write_bytes(pem(self.root))
        return str(path)


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
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


def _leaf_key_usage(key: PrivateKey) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        # RSA key exchange (TLS 1.2) encrypts with the certificate's key.
        key_encipherment=isinstance(key, rsa.RSAPrivateKey),
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def pem(*certs: x509.Certificate) -> bytes:
    """The certificates as concatenated PEM blocks."""
    return b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in certs)


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _key_bytes(
    key: PrivateKey, encoding: serialization.Encoding, fmt: str, passphrase: str | bytes | None
) -> bytes:
    formats = {
        "pkcs8": serialization.PrivateFormat.PKCS8,
        "pkcs1": serialization.PrivateFormat.TraditionalOpenSSL,
        "sec1": serialization.PrivateFormat.TraditionalOpenSSL,
    }
    # TraditionalOpenSSL is PKCS#1 for an RSA key and SEC1 for an EC key: refuse the mix-up a test would hide.
    if fmt == "pkcs1" and not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("PKCS#1 holds RSA keys only")
    if fmt == "sec1" and not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("SEC1 holds EC keys only")
    if passphrase is None:
        encryption: serialization.KeySerializationEncryption = serialization.NoEncryption()
    else:
        encryption = serialization.BestAvailableEncryption(
            passphrase.encode() if isinstance(passphrase, str) else passphrase
        )
    return key.private_bytes(encoding, formats[fmt], encryption)


def key_pem(key: PrivateKey, fmt: str = "pkcs8", passphrase: str | bytes | None = None) -> bytes:
    """The key as PEM: "pkcs8", "pkcs1" (RSA) or "sec1" (EC); encrypted when a passphrase is given
    (PKCS#1 and SEC1 then get the traditional "Proc-Type: 4,ENCRYPTED" header)."""
    return _key_bytes(key, serialization.Encoding.PEM, fmt, passphrase)


def key_der(key: PrivateKey, fmt: str = "pkcs8", passphrase: str | bytes | None = None) -> bytes:
    """The key as DER; only PKCS#8 can be encrypted in DER."""
    return _key_bytes(key, serialization.Encoding.DER, fmt, passphrase)


def p7b(certs: Sequence[x509.Certificate], der: bool = True) -> bytes:
    """A PKCS#7 certificate bundle (.p7b), DER or PEM."""
    encoding = serialization.Encoding.DER if der else serialization.Encoding.PEM
    return pkcs7.serialize_certificates(list(certs), encoding)


def pfx(
    key: PrivateKey | None,
    cert: x509.Certificate | None,
    cas: Sequence[x509.Certificate] = (),
    passphrase: str | bytes | None = None,
) -> bytes:
    """A PKCS#12 file (.pfx/.p12) with the key, the certificate and extra CA certificates."""
    if passphrase is None:
        encryption: serialization.KeySerializationEncryption = serialization.NoEncryption()
    else:
        encryption = serialization.BestAvailableEncryption(
            passphrase.encode() if isinstance(passphrase, str) else passphrase
        )
    return pkcs12.serialize_key_and_certificates(b"certwright", key, cert, list(cas) or None, encryption)


# --- encrypted keys and PKCS#12 files with chosen key-derivation costs -------------------------------------


def pbkdf2_key(key: PrivateKey, passphrase: str, rounds: int = 2048) -> bytes:
    """The key as encrypted PKCS#8 PEM: PBES2 with PBKDF2-HMAC-SHA256 over `rounds` iterations and
    AES-256-CBC (what `openssl pkcs8 -topk8 -iter N` writes; cryptography's own always takes 2,048)."""
    salt = os.urandom(16)
    secret = PBKDF2HMAC(hashes.SHA256(), length=32, salt=salt, iterations=rounds).derive(passphrase.encode())
    prf = _der(0x30, _der(0x06, _HMAC_SHA256_OID) + b"\x05\x00")
    kdf = _der(0x30, _der(0x06, _PBKDF2_OID) + _der(0x30, _der(0x04, salt) + _der_integer(rounds) + prf))
    return _pbes2_key(key, secret, kdf)


def scrypt_key(key: PrivateKey, passphrase: str, n: int = 16384, r: int = 8, p: int = 1) -> bytes:
    """The key as encrypted PKCS#8 PEM with PBES2 over scrypt and AES-256-CBC, as `openssl pkcs8 -topk8
    -scrypt` writes it (cryptography cannot write one)."""
    salt = os.urandom(16)
    secret = Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode())
    params = _der(0x30, _der(0x04, salt) + _der_integer(n) + _der_integer(r) + _der_integer(p))
    return _pbes2_key(key, secret, _der(0x30, _der(0x06, _SCRYPT_OID) + params))


def _pbes2_key(key: PrivateKey, secret: bytes, kdf: bytes) -> bytes:
    plain = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return _pbes2_seal(plain, secret, kdf)


def _pbes2_seal(plain: bytes, secret: bytes, kdf: bytes) -> bytes:
    """`plain` encrypted with AES-256-CBC under `secret`, as an EncryptedPrivateKeyInfo PEM naming `kdf`."""
    iv = os.urandom(16)
    padder = sym_padding.PKCS7(128).padder()
    encryptor = Cipher(algorithms.AES(secret), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padder.update(plain) + padder.finalize()) + encryptor.finalize()
    cipher = _der(0x30, _der(0x06, _AES256_CBC_OID) + _der(0x04, iv))
    algorithm = _der(0x30, _der(0x06, _PBES2_OID) + _der(0x30, kdf + cipher))
    return der_to_pem(_der(0x30, algorithm + _der(0x04, ciphertext)), "ENCRYPTED PRIVATE KEY")


def pfx_with_rounds(
    key: PrivateKey | None,
    cert: x509.Certificate | None,
    cas: Sequence[x509.Certificate] = (),
    passphrase: str = "",
    rounds: int = 2048,
    legacy: bool = False,
) -> bytes:
    """A PKCS#12 file whose key and certificates are encrypted with `rounds` iterations (PBES2/PBKDF2 and
    AES, or the legacy PKCS#12 scheme with 3DES); its MAC takes cryptography's 2,048."""
    scheme = pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC if legacy else pkcs12.PBES.PBESv2SHA256AndAES256CBC
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(rounds)
        .key_cert_algorithm(scheme)
        .build(passphrase.encode())
    )
    return pkcs12.serialize_key_and_certificates(b"certwright", key, cert, list(cas) or None, encryption)


def with_integer(der: bytes, old: int, new: int) -> bytes:
    """`der` with every INTEGER equal to `old` set to `new` and the lengths around it fixed, as an attacker
    edits an iteration count; looks inside OCTET STRINGs that hold DER (PKCS#12 wraps its parts in them)."""
    edited, count = _rewrite_integers(der, old, new)
    if not count:
        raise ValueError(f"no INTEGER {old} in the DER")
    return edited


def pem_to_der(pem_data: bytes) -> bytes:
    body = b"".join(line for line in pem_data.strip().splitlines()[1:-1] if b":" not in line)
    return base64.b64decode(body)


def der_to_pem(der_data: bytes, label: str) -> bytes:
    body = base64.encodebytes(der_data).replace(b"\n", b"")
    lines = b"\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    return f"-----BEGIN {label}-----\n".encode() + lines + f"\n-----END {label}-----\n".encode()


_SCRYPT_OID = bytes.fromhex("2b06010401da47040b")  # 1.3.6.1.4.1.11591.4.11
_AES256_CBC_OID = bytes.fromhex("60864801650304012a")  # 2.16.840.1.101.3.4.1.42
_PBES2_OID = bytes.fromhex("2a864886f70d01050d")  # 1.2.840.113549.1.5.13
_PBKDF2_OID = bytes.fromhex("2a864886f70d01050c")  # 1.2.840.113549.1.5.12
_HMAC_SHA256_OID = bytes.fromhex("2a864886f70d0209")  # 1.2.840.113549.2.9


def _der_integer(value: int) -> bytes:
    return _der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big", signed=True))


def _rewrite_integers(data: bytes, old: int, new: int) -> tuple[bytes, int]:
    out, count, offset = b"", 0, 0
    while offset < len(data):
        tag = data[offset]
        header, size = _der_header_length(data[offset:])
        if size < 0 or offset + header + size > len(data) or tag & 0x1F == 0x1F:
            raise ValueError("not DER")
        content = data[offset + header : offset + header + size]
        whole = data[offset : offset + header + size]
        if tag == 0x02 and int.from_bytes(content, "big", signed=True) == old:
            out += _der_integer(new)
            count += 1
        elif tag & 0x20 or tag == 0x04:
            try:
                inner, found = _rewrite_integers(content, old, new)
            except (ValueError, IndexError):
                inner, found = content, 0  # an OCTET STRING of plain bytes
            out += _der(tag, inner) if found else whole
            count += found
        else:
            out += whole
        offset += header + size
    return out, count


def pfx_hiding_key(cert: x509.Certificate, shrouded_key: bytes, passphrase: str) -> bytes:
    """A PKCS#12 file whose key bag (`shrouded_key`, an EncryptedPrivateKeyInfo) sits with the certificate
    INSIDE the part encrypted with the passphrase (PBES2, 2,048 PBKDF2 iterations), with a SHA-1 MAC: its
    key's cost shows only once that part is decrypted. cryptography never writes one like it."""
    password = passphrase.encode()
    cert_bag = _der(0x30, _der(0x06, _X509_CERTIFICATE_OID) + _der(0xA0, _der(0x04, der(cert))))
    bags = _der(0x30, _der(0x06, _CERT_BAG_OID) + _der(0xA0, cert_bag))
    bags += _der(0x30, _der(0x06, _SHROUDED_KEY_BAG_OID) + _der(0xA0, shrouded_key))
    encrypted_bags = pem_to_der(_pbes2_encrypt_pem(_der(0x30, bags), password))
    algorithm, ciphertext = _split_encrypted_key_info(encrypted_bags)
    content_info = _der(0x30, _der(0x06, _DATA_OID) + algorithm + _der(0x80, ciphertext))
    encrypted_data = _der(0x30, _der_integer(0) + content_info)
    auth_safe = _der(0x30, _der(0x30, _der(0x06, _ENCRYPTED_DATA_OID) + _der(0xA0, encrypted_data)))
    salt = os.urandom(8)
    mac_key = pkcs12_kdf(pkcs12_password_forms(password)[0], salt, 3, 2048, 20)
    mac = hmac.new(mac_key, auth_safe, "sha1").digest()
    digest_info = _der(0x30, _der(0x30, _der(0x06, _SHA1_OID) + b"\x05\x00") + _der(0x04, mac))
    mac_data = _der(0x30, digest_info + _der(0x04, salt) + _der_integer(2048))
    outer = _der(0x30, _der(0x06, _DATA_OID) + _der(0xA0, _der(0x04, auth_safe)))
    return _der(0x30, _der_integer(3) + outer + mac_data)


def _pbes2_encrypt_pem(plain: bytes, password: bytes) -> bytes:
    salt = os.urandom(16)
    secret = PBKDF2HMAC(hashes.SHA256(), length=32, salt=salt, iterations=2048).derive(password)
    prf = _der(0x30, _der(0x06, _HMAC_SHA256_OID) + b"\x05\x00")
    kdf = _der(0x30, _der(0x06, _PBKDF2_OID) + _der(0x30, _der(0x04, salt) + _der_integer(2048) + prf))
    return _pbes2_seal(plain, secret, kdf)


def _split_encrypted_key_info(info: bytes) -> tuple[bytes, bytes]:
    """(AlgorithmIdentifier TLV, ciphertext) of an EncryptedPrivateKeyInfo."""
    header, _ = _der_header_length(info)
    body = info[header:]
    algorithm_header, algorithm_size = _der_header_length(body)
    algorithm = body[: algorithm_header + algorithm_size]
    rest = body[len(algorithm) :]
    octets_header, octets_size = _der_header_length(rest)
    return algorithm, rest[octets_header : octets_header + octets_size]


_DATA_OID = bytes.fromhex("2a864886f70d010701")  # 1.2.840.113549.1.7.1
_ENCRYPTED_DATA_OID = bytes.fromhex("2a864886f70d010706")  # 1.2.840.113549.1.7.6
_CERT_BAG_OID = bytes.fromhex("2a864886f70d010c0a0103")  # 1.2.840.113549.1.12.10.1.3
_SHROUDED_KEY_BAG_OID = bytes.fromhex("2a864886f70d010c0a0102")  # 1.2.840.113549.1.12.10.1.2
_X509_CERTIFICATE_OID = bytes.fromhex("2a864886f70d01091601")  # 1.2.840.113549.1.9.22.1
_SHA1_OID = bytes.fromhex("2b0e03021a")  # 1.3.14.3.2.26
