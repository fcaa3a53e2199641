"""Password-based decryption of a PKCS#12 file's encrypted parts (RFC 7292 and PKCS#5 PBES2), so that
certfiles/kdf.py can look inside them before OpenSSL does. Costs are checked by the caller first.

Django-free: the CLI imports it. OpenSSL's PKCS#12 key derivation is not exposed by `cryptography`, and
its RC2 takes 128-bit keys only, so both are written out here (legacy files encrypt with 40-bit RC2)."""

from __future__ import annotations

import hashlib
import struct

from asn1crypto import algos
from asn1crypto.core import Integer, OctetString, Sequence
from cryptography.hazmat.decrepit.ciphers.algorithms import ARC4, TripleDES
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

SCRYPT_OID = "1.3.6.1.4.1.11591.4.11"
# PBKDF2's pseudo-random functions, by asn1crypto's name of the HMAC.
PBKDF2_HASHES = {
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
    "sha512_224": hashes.SHA512_224,
    "sha512_256": hashes.SHA512_256,
}
# PBES2 ciphers: key length in bytes.
PBES2_CIPHERS = {"aes128_cbc": 16, "aes192_cbc": 24, "aes256_cbc": 32, "tripledes_3key": 24, "des": 8}
# The PKCS#12 schemes (all SHA-1): cipher and key length in bytes.
PKCS12_SCHEMES = {
    "pkcs12_sha1_tripledes_3key": ("3des", 24),
    "pkcs12_sha1_tripledes_2key": ("3des", 16),
    "pkcs12_sha1_rc2_128": ("rc2", 16),
    "pkcs12_sha1_rc2_40": ("rc2", 5),
    "pkcs12_sha1_rc4_128": ("rc4", 16),
    "pkcs12_sha1_rc4_40": ("rc4", 5),
}
_KEY_ID, _IV_ID = 1, 2

# RFC 2268's PITABLE, a permutation of 0..255 from the digits of pi.
_PITABLE = bytes.fromhex(
    "d978f9c419ddb5ed28e9fd794aa0d89dc67e37832b76538e624c6488448bfba2"
    "179a59f587b34f1361456d8d09817d32bd8f40eb86b77b0bf09521225c6b4e82"
    "54d66593ce60b21c7356c014a78cf1dc1275ca1f3bbee4d1423dd430a33cb626"
    "6fbf0eda4669075727f21d9bbc944303f811c7f690ef3ee706c3d52fc8661ed7"
    "08e8eade8052eef784aa72ac354d6a2a961ad2715a1549744b9fd05e0418a4ec"
    "c2e0416e0f51cbcc2491af50a1f47039997c3a8523b8b47afc02365b25559731"
    "2d5dfa98e38a92ae05df2910676cbac9d300e6cfe19ea82c6316013f58e289a9"
    "0d38341bab33ffb0bb480c5fb9b1cd2ec5f3db47e5a59c770aa62068fe7fc1ad"
)
_RC2_ROTATIONS = (1, 2, 3, 5)


class ScryptParams(Sequence):
    """RFC 7914 section 7: asn1crypto does not know scrypt."""

    _fields = [
        ("salt", OctetString),
        ("cost_parameter", Integer),
        ("block_size", Integer),
        ("parallelization_parameter", Integer),
        ("key_length", Integer, {"optional": True}),
    ]


def scrypt_parameters(kdf: algos.KdfAlgorithm) -> tuple[bytes, int, int, int]:
    """(salt, N, r, p) of a scrypt KDF AlgorithmIdentifier; ValueError when they cannot be read."""
    params = ScryptParams.load(kdf["parameters"].dump(), strict=True)
    return (
        params["salt"].native,
        params["cost_parameter"].native,
        params["block_size"].native,
        params["parallelization_parameter"].native,
    )


class DecryptionFailed(Exception):
    """The password does not open this part (bad padding): a wrong password, or a damaged part."""


def pkcs12_password_forms(password: bytes | None) -> list[bytes]:
    """The byte strings OpenSSL may derive PKCS#12 keys from for `password`: its BMPString with a
    terminator; for no password, both "absent" (empty) and "empty" (a lone terminator), which OpenSSL
    tells apart by the MAC (cryptography passes "" for both)."""
    if not password:
        return [b"", b"\x00\x00"]
    return [password.decode("utf-8").encode("utf-16-be") + b"\x00\x00"]


def pkcs12_kdf(password: bytes, salt: bytes, purpose: int, iterations: int, size: int) -> bytes:
    """RFC 7292 appendix B.2 with SHA-1 (the only hash of the PKCS#12 encryption schemes); `password` is
    already in BMPString form."""
    u, v = 20, 64
    diversifier = bytes([purpose]) * v

    def stretch(data: bytes) -> bytes:
        # Repeated to fill whole v-byte blocks; nothing when empty.
        length = -(-len(data) // v) * v
        return (data * (length // len(data) + 1))[:length] if data else b""

    block = bytearray(stretch(salt) + stretch(password))
    out = b""
    while len(out) < size:
        digest = hashlib.sha1(diversifier + bytes(block)).digest()  # noqa: S324 (the scheme's own hash)
        for _ in range(iterations - 1):
            digest = hashlib.sha1(digest).digest()  # noqa: S324
        out += digest
        addend = int.from_bytes((digest * (v // u + 1))[:v], "big") + 1
        for offset in range(0, len(block), v):
            chunk = int.from_bytes(block[offset : offset + v], "big")
            block[offset : offset + v] = ((chunk + addend) % (1 << (8 * v))).to_bytes(v, "big")
    return out[:size]


def decrypt(algorithm: algos.EncryptionAlgorithm, password: bytes | None, data: bytes) -> list[bytes]:
    """The plaintexts of `data` under each form of `password` that opens it (empty when none does).
    The algorithm must be one kdf.py accepted: a PKCS#12 scheme or PBES2 with a cipher above."""
    name = algorithm["algorithm"].native
    if name in PKCS12_SCHEMES:
        opened = []
        for form in pkcs12_password_forms(password):
            try:
                opened.append(_decrypt_pkcs12(name, algorithm["parameters"], form, data))
            except DecryptionFailed:
                continue
        return opened
    try:
        return [_decrypt_pbes2(algorithm["parameters"], password or b"", data)]
    except DecryptionFailed:
        return []


def _decrypt_pkcs12(name: str, params: algos.Pbes1Params, password: bytes, data: bytes) -> bytes:
    cipher, key_size = PKCS12_SCHEMES[name]
    salt, iterations = params["salt"].native, params["iterations"].native
    key = pkcs12_kdf(password, salt, _KEY_ID, iterations, key_size)
    if cipher == "rc4":
        decryptor = Cipher(ARC4(key), mode=None).decryptor()
        return decryptor.update(data) + decryptor.finalize()
    iv = pkcs12_kdf(password, salt, _IV_ID, iterations, 8)
    if cipher == "rc2":
        return _unpad(_rc2_cbc_decrypt(key, len(key) * 8, iv, data), 8)
    return _unpad(_cbc_decrypt(TripleDES(key), iv, data), 8)


def _decrypt_pbes2(params: algos.Pbes2Params, password: bytes, data: bytes) -> bytes:
    kdf, scheme = params["key_derivation_func"], params["encryption_scheme"]
    cipher_name = scheme["algorithm"].native
    key_size, iv = PBES2_CIPHERS[cipher_name], scheme["parameters"].native
    if kdf["algorithm"].dotted == SCRYPT_OID:
        salt, n, r, p = scrypt_parameters(kdf)
        key = Scrypt(salt=salt, length=key_size, n=n, r=r, p=p).derive(password)
    else:
        pbkdf2 = kdf["parameters"]
        key = PBKDF2HMAC(
            PBKDF2_HASHES[pbkdf2["prf"]["algorithm"].native](),
            length=key_size,
            salt=pbkdf2["salt"].chosen.native,
            iterations=pbkdf2["iteration_count"].native,
        ).derive(password)
    if cipher_name.startswith("aes"):
        return _unpad(_cbc_decrypt(algorithms.AES(key), iv, data), 16)
    return _unpad(_cbc_decrypt(TripleDES(key), iv, data), 8)


def _cbc_decrypt(algorithm, iv: bytes, data: bytes) -> bytes:
    block = algorithm.block_size // 8
    if not data or len(data) % block or len(iv) != block:
        raise DecryptionFailed
    decryptor = Cipher(algorithm, modes.CBC(iv)).decryptor()
    return decryptor.update(data) + decryptor.finalize()


def _unpad(data: bytes, block: int) -> bytes:
    pad = data[-1] if data else 0
    if not 1 <= pad <= block or data[-pad:] != bytes([pad]) * pad:
        raise DecryptionFailed
    return data[:-pad]


def rc2_key_schedule(key: bytes, effective_bits: int) -> list[int]:
    """RC2's 64 round keys for `key` with `effective_bits` (RFC 2268 section 2)."""
    t8 = (effective_bits + 7) // 8
    mask = 0xFF >> (8 * t8 - effective_bits)
    expanded = bytearray(128)
    expanded[: len(key)] = key
    for i in range(len(key), 128):
        expanded[i] = _PITABLE[(expanded[i - 1] + expanded[i - len(key)]) & 0xFF]
    expanded[128 - t8] = _PITABLE[expanded[128 - t8] & mask]
    for i in range(127 - t8, -1, -1):
        expanded[i] = _PITABLE[expanded[i + 1] ^ expanded[i + t8]]
    return list(struct.unpack("<64H", bytes(expanded)))


def rc2_decrypt_block(schedule: list[int], block: bytes) -> bytes:
    """One RC2 block decrypted (RFC 2268 section 4): five r-mixing rounds, an r-mashing, six r-mixing,
    an r-mashing, five r-mixing."""
    r = list(struct.unpack("<4H", block))
    j = 63
    for rounds in (5, 0, 6, 0, 5):
        if not rounds:
            for i in (3, 2, 1, 0):
                r[i] = (r[i] - schedule[r[i - 1] & 63]) & 0xFFFF
            continue
        for _ in range(rounds):
            for i in (3, 2, 1, 0):
                shift = _RC2_ROTATIONS[i]
                r[i] = ((r[i] >> shift) | (r[i] << (16 - shift))) & 0xFFFF
                r[i] = (r[i] - schedule[j] - (r[i - 1] & r[i - 2]) - (~r[i - 1] & r[i - 3])) & 0xFFFF
                j -= 1
    return struct.pack("<4H", *r)


def _rc2_cbc_decrypt(key: bytes, effective_bits: int, iv: bytes, data: bytes) -> bytes:
    if not data or len(data) % 8:
        raise DecryptionFailed
    schedule = rc2_key_schedule(key, effective_bits)
    out = bytearray()
    previous = iv
    for offset in range(0, len(data), 8):
        block = data[offset : offset + 8]
        plain = rc2_decrypt_block(schedule, block)
        out += bytes(a ^ b for a, b in zip(plain, previous, strict=True))
        previous = block
    return bytes(out)
