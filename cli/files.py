"""Certificate and key files as customers have them (PEM, DER, PKCS#7, PKCS#12), recognised from their
bytes rather than their names, and turned into the PEM the API takes.

A DER key or a PKCS#12 file is decrypted here (the API takes text), and sent as unencrypted PEM: the
API is the trust boundary and stores keys encrypted. An encrypted PEM key is sent as it is, with its
passphrase, so that the API reports a wrong passphrase in its own words.
"""

from __future__ import annotations

import base64
import binascii
import getpass
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs7

from certfiles.formats import der_certificates, looks_like_pkcs12, open_pkcs12, pem_blocks
from certfiles.kdf import EncryptionRefused, check_private_key
from cli.errors import UserError

# A certificate bundle is a few kilobytes; anything this large is the wrong file (the API takes 64 KiB).
MAX_FILE_BYTES = 1024 * 1024
_CERTIFICATE_LABELS = {b"CERTIFICATE", b"X509 CERTIFICATE"}
_PKCS7_LABELS = {b"PKCS7", b"PKCS #7 SIGNED DATA", b"CMS"}
_CSR_LABELS = {b"CERTIFICATE REQUEST", b"NEW CERTIFICATE REQUEST"}
FORMATS = "PEM, DER, PKCS#7 (.p7b) or PKCS#12 (.pfx)"


class Passphrase:
    """The passphrase of an encrypted file: the first line of `file` when given, else asked on the
    terminal (once per file), else a user error saying how to give it."""

    def __init__(
        self,
        file: str | None = None,
        *,
        interactive: bool | None = None,
        prompt: Callable[[str], str] = getpass.getpass,
    ):
        self.file = file
        self.interactive = sys.stdin.isatty() if interactive is None else interactive
        self.prompt = prompt
        self._asked: dict[str, str] = {}

    def __call__(self, path: str) -> str:
        if self.file is not None:
            try:
                lines = read_file(self.file).decode("utf-8").splitlines()
            except UnicodeDecodeError:
                raise UserError(f"{self.file}: the passphrase file is not UTF-8 text") from None
            if not lines or not lines[0]:
                raise UserError(f"{self.file}: the passphrase file's first line is empty")
            return lines[0]
        if not self.interactive:
            raise UserError(
                f"{path} is encrypted: give its passphrase with --passphrase-file (no terminal to ask it on)"
            )
        if path not in self._asked:
            self._asked[path] = self.prompt(f"Passphrase for {path}: ")
        return self._asked[path]


@dataclass(frozen=True)
class KeyPem:
    pem: str
    passphrase: str | None = None


@dataclass(frozen=True)
class Upload:
    """A custom certificate as the API takes it: the certificates as PEM (the leaf first), the key."""

    tlscert: str
    tlskey: str
    tlskey_passphrase: str | None = None

    def fields(self) -> dict[str, str]:
        fields = {"tlscert": self.tlscert, "tlskey": self.tlskey}
        if self.tlskey_passphrase is not None:
            fields["tlskey_passphrase"] = self.tlskey_passphrase
        return fields


def read_file(path: str) -> bytes:
    """The bytes of `path`; a user error naming it when it cannot be read or is far too large."""
    try:
        with Path(path).open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise UserError(f"{path}: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise UserError(f"{path}: larger than {MAX_FILE_BYTES:,} bytes, which no certificate or key file is")
    return data


def _pem_body(block: bytes) -> bytes:
    """The DER inside an unencrypted PEM block (its header lines, if any, skipped)."""
    lines = block.splitlines()[1:-1]
    return base64.b64decode(b"".join(line for line in lines if b":" not in line), validate=True)


def _load_pkcs12(
    path: str, data: bytes, passphrase: Callable[[str], str]
) -> tuple[list[x509.Certificate], PrivateKeyTypes | None]:
    # Unencrypted files, and those exported with an empty password, open without asking.
    loaded = _open_pkcs12(path, data, None)
    if loaded is None:
        loaded = _open_pkcs12(path, data, passphrase(path).encode())
    if loaded is None:
        raise UserError(
            f"{path}: cannot open this PKCS#12 file: wrong passphrase, a damaged file, or an old "
            "encryption this system cannot read (export it again with AES)"
        )
    certs, key = loaded
    if not certs:
        raise UserError(f"{path}: the PKCS#12 file holds no certificate")
    return certs, key


def _open_pkcs12(
    path: str, data: bytes, password: bytes | None
) -> tuple[list[x509.Certificate], PrivateKeyTypes | None] | None:
    try:
        return open_pkcs12(data, [password])
    except EncryptionRefused as exc:
        raise UserError(f"{path}: {exc}") from None
    except UnsupportedAlgorithm:
        return None


def _check_key_cost(path: str, data: bytes) -> None:
    """Refuses locally, before anything derives, a key whose encryption costs more than the API accepts."""
    try:
        check_private_key(data)
    except EncryptionRefused as exc:
        raise UserError(f"{path}: {exc}") from None


def _looks_like_der_key(data: bytes) -> bool:
    try:
        serialization.load_der_private_key(data, None)
    except TypeError:
        return True  # an encrypted PKCS#8 key
    except (ValueError, UnsupportedAlgorithm):
        return False
    return True


def _pem_certificates(path: str, data: bytes) -> tuple[list[x509.Certificate], list[bytes]]:
    """The certificates of a PEM file, and its private key blocks (a combined file is common)."""
    certs: list[x509.Certificate] = []
    keys: list[bytes] = []
    for number, (label, block) in enumerate(pem_blocks(data), start=1):
        if label.endswith(b"PRIVATE KEY"):
            keys.append(block)
            continue
        if label in _CSR_LABELS:
            raise UserError(
                f"{path} holds a certificate signing request, not a certificate: "
                "give the certificate the CA issued for it"
            )
        if label not in _CERTIFICATE_LABELS | _PKCS7_LABELS:
            raise UserError(f"{path}: unexpected PEM block '{label.decode()}' (block {number})")
        try:
            body = _pem_body(block)
            if label in _PKCS7_LABELS:
                certs.extend(pkcs7.load_der_pkcs7_certificates(body))
            else:
                certs.append(x509.load_der_x509_certificate(body))
        except (ValueError, binascii.Error):
            raise UserError(f"{path}: PEM block {number} ({label.decode()}) is damaged") from None
    return certs, keys


def load_certificates(
    path: str, passphrase: Callable[[str], str], *, want_key: bool = True
) -> tuple[list[x509.Certificate], KeyPem | None]:
    """The certificates in `path` (PEM bundle, DER, PKCS#7 DER or PEM, PKCS#12) in file order, and, when
    `want_key`, the private key the file holds (PKCS#12, or a PEM file with a key block) if any."""
    data = read_file(path)
    if not data.strip():
        raise UserError(f"{path} is empty")
    if b"-----BEGIN " in data:
        certs, key_blocks = _pem_certificates(path, data)
        if not certs:
            hint = ": it holds a private key, give it with --key" if key_blocks else ""
            raise UserError(f"{path} holds no certificate{hint}")
        key = _pem_key(path, key_blocks, passphrase) if key_blocks and want_key else None
        return certs, key
    if looks_like_pkcs12(data):
        certs, private_key = _load_pkcs12(path, data, passphrase)
        return certs, (_unencrypted_pem(private_key) if private_key is not None and want_key else None)
    certs = der_certificates(data)
    if certs is not None:
        if not certs:
            raise UserError(f"{path}: the PKCS#7 file holds no certificate")
        return certs, None
    if _looks_like_der_key(data):
        raise UserError(f"{path} is a private key, not a certificate: give it with --key")
    raise UserError(f"{path} is not a certificate: expected {FORMATS}")


def _unencrypted_pem(key: PrivateKeyTypes) -> KeyPem:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return KeyPem(pem.decode("ascii"))


def _pem_key(path: str, blocks: list[bytes], passphrase: Callable[[str], str]) -> KeyPem:
    if len(blocks) > 1:
        raise UserError(f"{path} holds {len(blocks)} private keys: give a file with only the certificate's")
    block = blocks[0]
    _check_key_cost(path, block)
    encrypted = block.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY") or b"Proc-Type: 4,ENCRYPTED" in block
    return KeyPem(block.decode("ascii") + "\n", passphrase(path) if encrypted else None)


def load_key(path: str, passphrase: Callable[[str], str]) -> KeyPem:
    """The private key in `path` as PEM: PEM (maybe encrypted: then with its passphrase), DER (PKCS#1,
    PKCS#8, SEC1; decrypted here), or the key of a PKCS#12 file."""
    data = read_file(path)
    if not data.strip():
        raise UserError(f"{path} is empty")
    if b"-----BEGIN " in data:
        blocks = [block for label, block in pem_blocks(data) if label.endswith(b"PRIVATE KEY")]
        if not blocks:
            raise UserError(f"{path} holds no private key (no PEM block '... PRIVATE KEY')")
        return _pem_key(path, blocks, passphrase)
    if looks_like_pkcs12(data):
        _, key = _load_pkcs12(path, data, passphrase)
        if key is None:
            raise UserError(f"{path}: the PKCS#12 file holds no private key")
        return _unencrypted_pem(key)
    _check_key_cost(path, data)
    try:
        return _unencrypted_pem(serialization.load_der_private_key(data, None))
    except TypeError:
        pass  # encrypted: needs the passphrase
    except UnsupportedAlgorithm:
        raise UserError(f"{path}: a private key of a type this system cannot read") from None
    except ValueError:
        raise UserError(
            f"{path} is not a private key: expected PEM or DER (PKCS#1, PKCS#8, SEC1) or PKCS#12"
        ) from None
    try:
        return _unencrypted_pem(serialization.load_der_private_key(data, passphrase(path).encode()))
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise UserError(f"{path}: wrong passphrase for the encrypted key (or a damaged file)") from None


def _unique(certs: Iterable[x509.Certificate]) -> list[x509.Certificate]:
    # The same intermediate in the bundle and in --chain is sent once.
    return list(dict.fromkeys(certs))


def build_upload(
    cert: str,
    passphrase: Callable[[str], str],
    key: str | None = None,
    chain: Iterable[str] = (),
) -> Upload:
    """The API's fields for the certificate file `cert` (plus the `chain` files) and the key file
    `key` (not needed when `cert` holds the key, as a PKCS#12 file does)."""
    certs, embedded_key = load_certificates(cert, passphrase, want_key=key is None)
    for path in chain:
        certs += load_certificates(path, passphrase, want_key=False)[0]
    if key is not None:
        found = load_key(key, passphrase)
    elif embedded_key is not None:
        found = embedded_key
    else:
        raise UserError(f"{cert} holds no private key: give the key file with --key")
    bundle = "".join(c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in _unique(certs))
    return Upload(tlscert=bundle, tlskey=found.pem, tlskey_passphrase=found.passphrase)
