"""Caps on the work an encrypted private key or a PKCS#12 file can ask for: the key-derivation parameters
(PBKDF2 iterations, scrypt N/r/p, PKCS#12 MAC and PBE iterations) are read with an ASN.1 parser and
checked BEFORE any loader derives a key, because `cryptography` shows none of them first and one edited
integer (2^31-1 PBKDF2 iterations) otherwise holds a web worker for minutes.

A PKCS#12 file's encrypted parts are opened here (certfiles/pbe.py) to check the key bags inside them
too: OpenSSL decrypts them, then derives again for the key they hold.

Django-free: cli/files.py imports it and the CLI must not need Django."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator, Sequence

from asn1crypto import algos, cms, keys, parser, pkcs12
from asn1crypto.core import Void

from certfiles.pbe import (
    PBES2_CIPHERS,
    PBKDF2_HASHES,
    PKCS12_SCHEMES,
    SCRYPT_OID,
    decrypt,
    scrypt_parameters,
)

MAX_PBKDF2_ITERATIONS = 2_000_000  # about 0.4 s of one core here
MAX_PKCS12_ITERATIONS = 2_000_000  # the MAC's and each encrypted part's
MAX_SCRYPT_MEMORY = 64 * 1024 * 1024  # 128 * N * r bytes
MAX_SCRYPT_PARALLELISM = 4  # p runs N*r's work p times over: 4 at 64 MiB is about 0.6 s
# Exporters put the certificates in one encrypted part (OpenSSL, Windows, Java, NSS); each is opened
# here and again by OpenSSL, so their number bounds the work too.
MAX_ENCRYPTED_PARTS = 2
MAX_BAG_NESTING = 4

_PBKDF2_OID = "1.2.840.113549.1.5.12"
_PBMAC1_OID = "1.2.840.113549.1.5.14"
_PBES1_SCHEMES = {
    "pbes1_md2_des",
    "pbes1_md5_des",
    "pbes1_md2_rc2",
    "pbes1_md5_rc2",
    "pbes1_sha1_des",
    "pbes1_sha1_rc2",
}
_MAC_DIGESTS = {"md5", "sha1", "sha224", "sha256", "sha384", "sha512", "sha512_224", "sha512_256"}
_FEWER = "export it again with fewer (OpenSSL's default is 2,048)"
_USE_AES = "export it again with AES encryption (PBES2 with PBKDF2)"
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.DOTALL)
# What asn1crypto raises on input it cannot read (it parses lazily, so any access may raise).
_UNREADABLE = (ValueError, TypeError, KeyError, IndexError, OverflowError)


class EncryptionRefused(Exception):
    """Deriving the key would cost more than a cap, uses a scheme that is not accepted, or its parameters
    are damaged; str(exc) says which, for the customer."""


class Pkcs12Locked(Exception):
    """None of the passwords opens the PKCS#12 file's encrypted parts."""


def check_private_key(data: bytes, what: str = "the private key") -> None:
    """Refuses a PEM or DER private key whose decryption would derive a key beyond the caps. Legacy PEM
    encryption (Proc-Type/DEK-Info: one MD5 round) and unencrypted keys pass."""
    if b"-----BEGIN " not in data:
        _check_der_key(data, what, required=False)
        return
    for match in _PEM_BLOCK.finditer(data):
        label, body = match.group(1), match.group(2)
        if label.endswith(b"PRIVATE KEY"):
            _check_pem_key(label, body, what)


def check_pkcs12(data: bytes, passwords: Sequence[bytes | None]) -> list[bytes | None]:
    """Refuses a PKCS#12 file (EncryptionRefused) whose MAC or any encrypted part or key would cost more
    than the caps, looking inside its encrypted parts with `passwords` (tried in order; None is no
    password). Returns the passwords to give the loader: the one that opened the encrypted parts, or all
    of them when nothing is encrypted. Raises Pkcs12Locked when none opens them."""
    try:
        pfx = pkcs12.Pfx.load(data, strict=True)
        auth_safe = pfx["auth_safe"]
        if auth_safe["content_type"].native != "data":
            raise EncryptionRefused(
                "the PKCS#12 file is protected with a public key instead of a password, which is not "
                f"supported: {_USE_AES}"
            )
        _check_mac(pfx["mac_data"])
        contents = pkcs12.AuthenticatedSafe.load(auth_safe["content"].native, strict=True)
        encrypted = []
        for info in contents:
            kind = info["content_type"].native
            if kind == "data":
                _check_bags(pkcs12.SafeContents.load(info["content"].native, strict=True), 0)
            elif kind == "encrypted_data":
                encrypted.append(_encrypted_part(info["content"]))
            # OpenSSL skips any other kind (enveloped data) without deriving anything.
    except EncryptionRefused:
        raise
    except _UNREADABLE:
        raise EncryptionRefused("the PKCS#12 file is damaged: its structure cannot be read") from None
    if len(encrypted) > MAX_ENCRYPTED_PARTS:
        raise EncryptionRefused(
            f"the PKCS#12 file has {len(encrypted)} encrypted parts; at most {MAX_ENCRYPTED_PARTS} are "
            "accepted: export it again with its certificates in one"
        )
    if not encrypted:
        return list(passwords)
    for password in passwords:
        opened = _open_all(encrypted, password)
        if opened is None:
            continue
        try:
            for plaintext in opened:
                _check_bags(pkcs12.SafeContents.load(plaintext, strict=True), 0)
        except _UNREADABLE:
            raise EncryptionRefused("the PKCS#12 file is damaged: its structure cannot be read") from None
        return [password]
    raise Pkcs12Locked


def _check_pem_key(label: bytes, body: bytes, what: str) -> None:
    lines = body.strip().splitlines()
    legacy = any(line.startswith(b"Proc-Type:") and b"ENCRYPTED" in line for line in lines)
    # Only the traditional labels take legacy encryption; a PKCS#8 block is read for its own scheme
    # whatever headers it carries.
    pkcs8 = label in (b"ENCRYPTED PRIVATE KEY", b"PRIVATE KEY")
    if legacy and not pkcs8:
        return
    required = label == b"ENCRYPTED PRIVATE KEY"
    try:
        der = base64.b64decode(b"".join(line.strip() for line in lines if b":" not in line))
    except (binascii.Error, ValueError):
        if required:
            raise EncryptionRefused(f"{what} is damaged: its PEM block cannot be decoded") from None
        return
    _check_der_key(der, what, required=required)


def _check_der_key(der: bytes, what: str, *, required: bool) -> None:
    """Checks an EncryptedPrivateKeyInfo (SEQUENCE { AlgorithmIdentifier, OCTET STRING }); other keys
    start with an INTEGER and are not encrypted."""
    if not _starts_with_sequence(der):
        if required:
            raise EncryptionRefused(f"{what} is damaged: it is not an encrypted PKCS#8 key")
        return
    try:
        algorithm = keys.EncryptedPrivateKeyInfo.load(der, strict=True)["encryption_algorithm"]
    except _UNREADABLE:
        raise EncryptionRefused(f"{what} is damaged: its encryption parameters cannot be read") from None
    check_cost(algorithm, what)


def _starts_with_sequence(der: bytes) -> bool:
    try:
        _, constructed, tag, _, contents, _ = parser.parse(der)
        if not (constructed and tag == 16):
            return False
        _, inner_constructed, inner_tag, _, _, _ = parser.parse(contents)
    except _UNREADABLE:
        return False
    return bool(inner_constructed) and inner_tag == 16


def check_cost(algorithm: algos.EncryptionAlgorithm, what: str) -> None:
    """Refuses an encryption AlgorithmIdentifier whose key derivation exceeds the caps or is unknown."""
    try:
        name = algorithm["algorithm"].native
        if name == "pbes2":
            _check_pbes2(algorithm["parameters"], what)
        elif name in PKCS12_SCHEMES:
            _check_iterations(
                algorithm["parameters"]["iterations"].native,
                MAX_PKCS12_ITERATIONS,
                what,
                "PKCS#12 key-derivation",
            )
        elif name in _PBES1_SCHEMES:
            _check_iterations(
                algorithm["parameters"]["iterations"].native, MAX_PBKDF2_ITERATIONS, what, "PBKDF1"
            )
        else:
            raise _not_accepted(f"{what} is encrypted with a scheme", algorithm["algorithm"].dotted)
    except EncryptionRefused:
        raise
    except _UNREADABLE:
        raise EncryptionRefused(f"{what} is damaged: its encryption parameters cannot be read") from None


def _check_pbes2(params: algos.Pbes2Params, what: str) -> None:
    kdf = params["key_derivation_func"]
    oid = kdf["algorithm"].dotted
    if oid == _PBKDF2_OID:
        _check_pbkdf2(kdf["parameters"], what)
    elif oid == SCRYPT_OID:
        _check_scrypt(kdf, what)
    else:
        raise _not_accepted(f"{what} is encrypted with a key derivation", oid)
    cipher = params["encryption_scheme"]["algorithm"]
    if cipher.native not in PBES2_CIPHERS:
        raise _not_accepted(f"{what} is encrypted with a cipher", cipher.dotted)


def _check_pbkdf2(params: algos.Pbkdf2Params, what: str) -> None:
    if params["salt"].name != "specified":
        raise EncryptionRefused(
            f"{what} is encrypted with PBKDF2 with a salt from elsewhere, which is not accepted"
        )
    prf = params["prf"]["algorithm"]
    if prf.native not in PBKDF2_HASHES:
        raise _not_accepted(f"{what} is encrypted with PBKDF2 over a hash", prf.dotted)
    _check_iterations(params["iteration_count"].native, MAX_PBKDF2_ITERATIONS, what, "PBKDF2")


def _check_scrypt(kdf: algos.KdfAlgorithm, what: str) -> None:
    _, n, r, p = scrypt_parameters(kdf)
    if n < 2 or n & (n - 1):
        raise EncryptionRefused(f"{what} is damaged: its scrypt cost N={n:,} is not a power of two above 1")
    if r < 1 or p < 1:
        raise EncryptionRefused(
            f"{what} is damaged: its scrypt parameters r={r:,} and p={p:,} must be positive"
        )
    memory = 128 * n * r
    if memory > MAX_SCRYPT_MEMORY:
        raise EncryptionRefused(
            f"{what} is encrypted with scrypt parameters that need {memory // 2**20:,} MiB of memory "
            f"(N={n:,}, r={r:,}); at most {MAX_SCRYPT_MEMORY // 2**20} MiB are accepted: export it again "
            "with smaller ones (OpenSSL's default is N=16,384, r=8, p=1)"
        )
    if p > MAX_SCRYPT_PARALLELISM:
        raise EncryptionRefused(
            f"{what} is encrypted with scrypt parallelization p={p:,}; at most {MAX_SCRYPT_PARALLELISM} is "
            "accepted: export it again with p=1 (OpenSSL's default)"
        )


def _check_iterations(count: int, cap: int, what: str, kind: str) -> None:
    if count < 1:
        raise EncryptionRefused(f"{what} is damaged: its {kind} iteration count is {count:,}")
    if count > cap:
        raise EncryptionRefused(
            f"{what} is encrypted with {count:,} {kind} iterations; at most {cap:,} are accepted: {_FEWER}"
        )


def _check_mac(mac_data: pkcs12.MacData) -> None:
    if isinstance(mac_data, Void) or not mac_data.contents:
        return  # no MAC: nothing derived for it
    what = "the PKCS#12 file's integrity check (MAC)"
    iterations = mac_data["iterations"].native
    if iterations > MAX_PKCS12_ITERATIONS:
        raise EncryptionRefused(
            f"{what} uses {iterations:,} iterations; at most {MAX_PKCS12_ITERATIONS:,} are accepted: {_FEWER}"
        )
    algorithm = mac_data["mac"]["digest_algorithm"]
    oid = algorithm["algorithm"].dotted
    if oid == _PBMAC1_OID:
        # RFC 9579: the MAC key comes from PBKDF2, whose own count is what OpenSSL spends.
        params = algos.Pbmac1Params.load(algorithm["parameters"].dump(), strict=True)
        kdf = params["key_derivation_func"]
        if kdf["algorithm"].dotted != _PBKDF2_OID:
            raise _not_accepted(f"{what} uses a key derivation", kdf["algorithm"].dotted)
        _check_pbkdf2(kdf["parameters"], what)
    elif algorithm["algorithm"].native not in _MAC_DIGESTS:
        raise _not_accepted(f"{what} uses a hash", oid)


def _not_accepted(refused: str, oid: str) -> EncryptionRefused:
    return EncryptionRefused(f"{refused} that is not accepted ({oid}): {_USE_AES}")


def _encrypted_part(data: cms.EncryptedData) -> tuple[algos.EncryptionAlgorithm, bytes]:
    info = data["encrypted_content_info"]
    algorithm = info["content_encryption_algorithm"]
    what = "the PKCS#12 file's certificate section"
    check_cost(algorithm, what)
    name = algorithm["algorithm"].native
    if name not in PKCS12_SCHEMES and name != "pbes2":
        raise EncryptionRefused(f"{what} is encrypted with a scheme that is not supported: {_USE_AES}")
    return algorithm, info["encrypted_content"].native or b""


def _open_all(
    parts: list[tuple[algos.EncryptionAlgorithm, bytes]], password: bytes | None
) -> list[bytes] | None:
    """Every plaintext of every part under `password` (all of its PKCS#12 forms), or None when one part
    opens under none of them."""
    opened: list[bytes] = []
    for algorithm, ciphertext in parts:
        plaintexts = [text for text in decrypt(algorithm, password, ciphertext) if _is_safe_contents(text)]
        if not plaintexts:
            return None
        opened += plaintexts
    return opened


def _is_safe_contents(plaintext: bytes) -> bool:
    # A wrong password still passes the padding check once in 256 tries (and RC4 has none): the
    # plaintext must also read as a SafeContents.
    try:
        list(_bags(pkcs12.SafeContents.load(plaintext, strict=True)))
    except _UNREADABLE:
        return False
    return True


def _bags(contents: pkcs12.SafeContents) -> Iterator[tuple[str, object]]:
    for bag in contents:
        yield bag["bag_id"].native, bag["bag_value"]


def _check_bags(contents: pkcs12.SafeContents, depth: int) -> None:
    """Checks every shrouded key bag, nested SafeContents included (OpenSSL decrypts the first)."""
    for kind, value in _bags(contents):
        if kind == "pkcs8_shrouded_key_bag":
            check_cost(value["encryption_algorithm"], "the PKCS#12 file's private key")
        elif kind == "safe_contents":
            if depth + 1 >= MAX_BAG_NESTING:
                raise EncryptionRefused(
                    f"the PKCS#12 file nests its contents more than {MAX_BAG_NESTING} deep, "
                    "which no exporter does"
                )
            _check_bags(value, depth + 1)
