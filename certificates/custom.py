"""Customer-uploaded certificates: parse whatever the customer has (PEM, DER, PKCS#7, PKCS#12, keys in any
common encoding, encrypted or not), check that it can serve one domain, and return what is stored.

Pure: no database, no network. Every rejection is an `UploadRejected` whose message is shown to the
customer as is, so it names the problem and the certificate concerned in plain words."""

from __future__ import annotations

import dataclasses
import datetime
import logging

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import SignatureAlgorithmOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from certfiles.formats import der_certificates, looks_like_pkcs12, open_pkcs12, pem_blocks
from certfiles.kdf import EncryptionRefused, check_private_key
from certificates.facts import CertificateFacts, certificate_facts, dns_names
from certificates.verify import ChainRejected, trusted_roots

logger = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 64 * 1024
# Most certificates stored, leaf included. Real chains have 2 to 4; the bound keeps a crafted upload's walk
# short (a certificate never appears twice on the path, so it cannot loop either).
MAX_CHAIN_DEPTH = 8
# The first label of the name checked by the final verification when the domain itself is a wildcard.
WILDCARD_PROBE_LABEL = "certwright-check"

_DATE_FORMAT = "%Y-%m-%d %H:%M:%S UTC"
_SIZE_LIMIT = f"at most {MAX_UPLOAD_BYTES:,} bytes ({MAX_UPLOAD_BYTES // 1024} KiB) are accepted"
_NOT_A_CERTIFICATE = "is not a certificate: expected PEM, DER, PKCS#7 (.p7b) or PKCS#12 (.pfx)"
_NOT_A_KEY = "the key file is not a private key: expected PEM or DER (PKCS#1, PKCS#8 or SEC1)"
_KEY_IS_ENCRYPTED = "the private key is encrypted: give its passphrase"
_GOOD_KEYS = "use an RSA key of 2048 bits or more or an ECDSA key on P-256 or P-384"

_PEM_KEY_LABELS = {
    b"PRIVATE KEY",
    b"ENCRYPTED PRIVATE KEY",
    b"RSA PRIVATE KEY",
    b"EC PRIVATE KEY",
    b"DSA PRIVATE KEY",
}
_ACCEPTED_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
_WEAK_SIGNATURES = {
    SignatureAlgorithmOID.RSA_WITH_SHA1: "SHA-1",
    SignatureAlgorithmOID._RSA_WITH_SHA1: "SHA-1",
    SignatureAlgorithmOID.ECDSA_WITH_SHA1: "SHA-1",
    SignatureAlgorithmOID.DSA_WITH_SHA1: "SHA-1",
    SignatureAlgorithmOID.RSA_WITH_MD5: "MD5",
}
_WEAK_HASHES = {"sha1": "SHA-1", "md5": "MD5"}


class UploadRejected(Exception):
    """The upload is unusable; str(exc) is a message for the customer naming what is wrong.
    `field` says which input is at fault: "cert", "key", "chain", "passphrase", or None."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


@dataclasses.dataclass(frozen=True)
class CheckedUpload(CertificateFacts):
    """What is stored about an accepted upload: its facts and its key."""

    # Unencrypted PKCS#8 PEM: the caller seals it before storing.
    private_key_pem: bytes = dataclasses.field(default=b"", repr=False)


def covers(pattern: str, name: str) -> bool:
    """RFC 6125 matching of one DNS SAN against a domain name (both lowercase ascii): exact match, or a
    wildcard `*.example.com` covering exactly one extra leftmost label (`www.example.com`, not `example.com`,
    not `a.b.example.com`); partial wildcards (`w*.example.com`) cover nothing. A domain name that is itself a
    wildcard (`*.example.com`) is covered only by the identical wildcard SAN."""
    if "*" in pattern and not (pattern.startswith("*.") and "*" not in pattern[1:]):
        return False
    if pattern == name:
        return True
    if not pattern.startswith("*.") or name.startswith("*."):
        return False
    base = pattern[2:]
    first, dot, rest = name.partition(".")
    # Browsers refuse a wildcard directly under a top-level domain (`*.com`), so it covers nothing here.
    return bool(first) and bool(dot) and rest == base and "." in base


def check_upload(
    domain_name: str,
    cert: bytes,
    key: bytes | None = None,
    chain: bytes | None = None,
    passphrase: str | bytes | None = None,
    now: datetime.datetime | None = None,
) -> CheckedUpload:
    """Parses and checks an upload for `domain_name`; raises UploadRejected naming the problem."""
    try:
        return _check_upload(domain_name, cert, key, chain, passphrase, now)
    except (ValueError, UnsupportedAlgorithm, x509.InvalidVersion) as exc:
        # cryptography reads a certificate's fields lazily: a damaged field (an issuer, a public
        # key) that parsed as a whole only fails when it is read.
        raise UploadRejected(
            f"a certificate or key in the upload is damaged: one of its fields cannot be read ({exc})"
        ) from None


def _check_upload(
    domain_name: str,
    cert: bytes,
    key: bytes | None,
    chain: bytes | None,
    passphrase: str | bytes | None,
    now: datetime.datetime | None,
) -> CheckedUpload:
    now = _aware(now or datetime.datetime.now(datetime.UTC))
    domain_name = domain_name.strip().lower().rstrip(".")
    password = _password(passphrase)
    _check_sizes(cert=cert, key=key, chain=chain)

    certs, embedded_key = _parse_certificates(cert, field="cert", password=password, allow_pkcs12=True)
    if chain:
        certs += _parse_certificates(chain, field="chain", password=None, allow_pkcs12=False)[0]
    uploaded = list(dict.fromkeys(certs))  # the same certificate in both files is one certificate

    if key:
        private_key = _load_private_key(key, password)
    elif isinstance(embedded_key, bytes):
        private_key = _load_private_key(embedded_key, password)
    elif embedded_key is not None:
        private_key = embedded_key
    else:
        raise UploadRejected(
            "a private key is needed: upload the key file of the certificate, "
            "or a PKCS#12 (.pfx) file that contains it",
            "key",
        )

    leaf = _find_leaf(uploaded)
    if _spki(leaf.public_key()) != _spki(private_key.public_key()):
        raise UploadRejected(f"the private key does not match the certificate ({_describe(leaf)})", "key")
    _check_key_strength(leaf.public_key())
    _check_signature_algorithm(leaf, field="cert")
    sans = _dns_names(leaf)
    _check_coverage(domain_name, sans)
    _check_validity(leaf, now, what="the certificate", field="cert")

    try:
        roots = trusted_roots()
    except ChainRejected as exc:
        # The operator's configuration, not the customer's upload: say so, and log it loudly.
        logger.error("custom certificate upload: the trust store cannot be read: %s", exc)
        raise UploadRejected(f"the platform cannot check certificate chains at the moment ({exc})") from None
    path = _build_path(leaf, uploaded, roots, now)
    _verify_with_policy(domain_name, path, roots, now)

    return CheckedUpload(
        **vars(certificate_facts(path)),
        private_key_pem=private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )


def _aware(moment: datetime.datetime) -> datetime.datetime:
    # A naive `now` is taken as UTC, like the settings' TIME_ZONE, rather than refused.
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


def _password(passphrase: str | bytes | None) -> bytes | None:
    # An empty form field means "no passphrase", not the empty passphrase.
    if not passphrase:
        return None
    return passphrase.encode("utf-8") if isinstance(passphrase, str) else passphrase


def _check_sizes(**inputs: bytes | None) -> None:
    """Refuses oversized input before any parser sees it."""
    labels = {"cert": "the certificate file", "key": "the key file", "chain": "the chain file"}
    for field, data in inputs.items():
        if data and len(data) > MAX_UPLOAD_BYTES:
            raise UploadRejected(f"{labels[field]} is {len(data):,} bytes; {_SIZE_LIMIT}", field)
    total = sum(len(data) for data in inputs.values() if data)
    if total > MAX_UPLOAD_BYTES:
        raise UploadRejected(f"the upload is {total:,} bytes; {_SIZE_LIMIT}")


def _parse_certificates(
    data: bytes, *, field: str, password: bytes | None, allow_pkcs12: bool
) -> tuple[list[x509.Certificate], PrivateKeyTypes | bytes | None]:
    """The certificates of a file, and the key it carries: a PEM key block (still to decrypt), a key
    from a PKCS#12 file, or None."""
    label = "the certificate file" if field == "cert" else "the chain file"
    not_certificate = UploadRejected(f"{label} {_NOT_A_CERTIFICATE}", field)
    if b"-----BEGIN " in data:
        certs: list[x509.Certificate] = []
        key_block = None
        for number, (block_label, block) in enumerate(pem_blocks(data), start=1):
            try:
                if block_label == b"CERTIFICATE":
                    certs.append(x509.load_pem_x509_certificate(block))
                elif block_label == b"PKCS7":
                    certs += pkcs7.load_pem_pkcs7_certificates(block)
            except (ValueError, UnsupportedAlgorithm):
                raise UploadRejected(
                    f"{label} is damaged: its PEM block number {number} ({block_label.decode()}) "
                    "cannot be read",
                    field,
                ) from None
            if key_block is None and block_label in _PEM_KEY_LABELS:
                key_block = block
        if not certs:
            raise not_certificate
        return certs, key_block
    certs = der_certificates(data)
    if certs:
        return certs, None
    if allow_pkcs12 and looks_like_pkcs12(data):
        return _load_pkcs12(data, password)
    raise not_certificate


def _load_pkcs12(
    data: bytes, password: bytes | None
) -> tuple[list[x509.Certificate], PrivateKeyTypes | None]:
    # An unprotected file is tried after the customer's passphrase, which it does not need.
    try:
        opened = open_pkcs12(data, [None] if password is None else [password, None])
    except EncryptionRefused as exc:
        raise UploadRejected(str(exc), "cert") from None
    except UnsupportedAlgorithm:
        raise UploadRejected(
            "the PKCS#12 file is encrypted with an algorithm that is no longer supported: "
            "export it again with AES encryption",
            "cert",
        ) from None
    if opened is None:
        if password is None:
            raise UploadRejected(_KEY_IS_ENCRYPTED, "passphrase")
        raise UploadRejected("wrong passphrase for the PKCS#12 file", "passphrase")
    certs, private_key = opened
    if not certs:
        raise UploadRejected("the PKCS#12 file contains no certificate", "cert")
    return certs, private_key


def _load_private_key(data: bytes, password: bytes | None) -> PrivateKeyTypes:
    """Loads a PEM or DER key, decrypting it when it is encrypted."""
    if b"-----BEGIN " in data:
        blocks = [block for label, block in pem_blocks(data) if label in _PEM_KEY_LABELS]
        if not blocks:
            raise UploadRejected(_NOT_A_KEY, "key")
        # Only the key block: files from `openssl ecparam -genkey` put an EC PARAMETERS block first.
        data, loader = blocks[0], serialization.load_pem_private_key
    else:
        loader = serialization.load_der_private_key
    try:
        # Before any loader: cryptography derives the key without showing what it will cost.
        check_private_key(data)
    except EncryptionRefused as exc:
        raise UploadRejected(str(exc), "key") from None
    try:
        return loader(data, None)
    except TypeError:
        pass  # encrypted: cryptography says so with a TypeError when no password is given
    except (ValueError, UnsupportedAlgorithm):
        raise UploadRejected(_NOT_A_KEY, "key") from None
    if password is None:
        raise UploadRejected(_KEY_IS_ENCRYPTED, "passphrase")
    try:
        return loader(data, password)
    except ValueError:
        raise UploadRejected("wrong passphrase for the private key", "passphrase") from None
    except UnsupportedAlgorithm:
        raise UploadRejected(
            "the private key is encrypted with an algorithm that is not supported: export it again with AES "
            "encryption, or without encryption",
            "key",
        ) from None


def _describe(cert: x509.Certificate) -> str:
    """The certificate's subject as an RFC 4514 string, or its serial when the subject is empty."""
    return cert.subject.rfc4514_string() or f"(empty subject, serial {format(cert.serial_number, 'x')})"


def _extension(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.ExtensionType | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None
    except ValueError:  # duplicate or malformed extensions surface on first access
        raise UploadRejected(f"the certificate {_describe(cert)} has malformed extensions", "cert") from None


def _is_ca(cert: x509.Certificate) -> bool:
    constraints = _extension(cert, x509.BasicConstraints)
    return constraints is not None and constraints.ca


def _find_leaf(certs: list[x509.Certificate]) -> x509.Certificate:
    leaves = [cert for cert in certs if not _is_ca(cert)]
    if len(leaves) > 1:
        names = ", ".join(_describe(cert) for cert in leaves)
        raise UploadRejected(
            f"the upload has more than one leaf certificate ({names}): "
            "upload one certificate with its intermediates",
            "cert",
        )
    if not leaves and len(certs) == 1 and _is_self_signed(certs[0]):
        # `openssl req -x509` makes CA certificates: the usual self-made certificate lands here.
        raise UploadRejected(_self_signed(certs[0]), "cert")
    if not leaves:
        raise UploadRejected(
            "the upload has no leaf certificate: every certificate in it is a CA certificate", "cert"
        )
    return leaves[0]


def _self_signed(cert: x509.Certificate) -> str:
    return (
        f"the certificate {_describe(cert)} is self-signed: browsers trust only certificates issued by a "
        "public certificate authority (upload that one, with its intermediates)"
    )


def _untrusted_root(name: str) -> str:
    return (
        f"the chain ends at {name}, a root that browsers do not trust (a private or self-signed CA): "
        "use a certificate from a public CA"
    )


def _spki(public_key: PublicKeyTypes) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _check_key_strength(public_key: PublicKeyTypes) -> None:
    """Refuses the key types and sizes browsers refuse (the private key is the same key, already matched)."""
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < 2048:
            raise UploadRejected(
                f"the certificate's RSA key has {public_key.key_size} bits; at least 2048 are required",
                "cert",
            )
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        if public_key.curve.name not in _ACCEPTED_CURVES:
            raise UploadRejected(
                f"the certificate's EC key is on the curve {public_key.curve.name}, which browsers do not "
                "support: only P-256, P-384 and P-521 are accepted",
                "cert",
            )
    elif isinstance(public_key, dsa.DSAPublicKey):
        raise UploadRejected(f"the certificate has a DSA key, which browsers reject: {_GOOD_KEYS}", "cert")
    elif isinstance(public_key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        kind = "Ed25519" if isinstance(public_key, ed25519.Ed25519PublicKey) else "Ed448"
        raise UploadRejected(
            f"the certificate has an {kind} key, which browsers do not support for HTTPS: {_GOOD_KEYS}",
            "cert",
        )
    else:
        raise UploadRejected(f"the certificate's key type is not supported: {_GOOD_KEYS}", "cert")


def _weak_hash(cert: x509.Certificate) -> str | None:
    """The weak hash ("SHA-1", "MD5") the certificate is signed with, or None."""
    weak = _WEAK_SIGNATURES.get(cert.signature_algorithm_oid)
    if weak:
        return weak
    try:
        # RSASSA-PSS carries its hash in parameters; cryptography raises for algorithms it does not know.
        algorithm = cert.signature_hash_algorithm
    except (UnsupportedAlgorithm, ValueError):
        return None
    return _WEAK_HASHES.get(algorithm.name) if isinstance(algorithm, hashes.HashAlgorithm) else None


def _check_signature_algorithm(cert: x509.Certificate, *, field: str) -> None:
    weak = _weak_hash(cert)
    if weak:
        raise UploadRejected(
            f"the certificate {_describe(cert)} is signed with {weak}, which browsers reject", field
        )


def _dns_names(leaf: x509.Certificate) -> list[str]:
    try:
        return dns_names(leaf)
    except ValueError:  # duplicate or malformed extensions surface on first access
        raise UploadRejected(f"the certificate {_describe(leaf)} has malformed extensions", "cert") from None


def _check_coverage(domain_name: str, sans: list[str]) -> None:
    # The Common Name is ignored, as browsers have done since 2017.
    if any(covers(san, domain_name) for san in sans):
        return
    holds = f"it is for {', '.join(sans)}" if sans else "it has no DNS names"
    raise UploadRejected(f"the certificate does not cover {domain_name}: {holds}", "cert")


def _check_validity(cert: x509.Certificate, now: datetime.datetime, *, what: str, field: str) -> None:
    if now < cert.not_valid_before_utc:
        starts = cert.not_valid_before_utc.strftime(_DATE_FORMAT)
        raise UploadRejected(f"{what} is not valid yet: it starts on {starts}", field)
    if now > cert.not_valid_after_utc:
        raise UploadRejected(f"{what} expired on {cert.not_valid_after_utc.strftime(_DATE_FORMAT)}", field)


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _is_self_signed(cert: x509.Certificate) -> bool:
    # cryptography cannot verify a SHA-1 signature, and old roots sign themselves with SHA-1: such a
    # certificate with its own name as issuer is taken as self-signed (its own signature never matters).
    return cert.subject == cert.issuer and (_issued_by(cert, cert) or _weak_hash(cert) is not None)


def _build_path(
    leaf: x509.Certificate,
    uploaded: list[x509.Certificate],
    roots: list[x509.Certificate],
    now: datetime.datetime,
) -> list[x509.Certificate]:
    """The leaf and the uploaded intermediates up to a trusted root (excluded), checking each link; extra
    uploaded certificates that are not on the path are left out."""
    path = [leaf]
    current = leaf
    while True:
        if current is not leaf:
            _check_validity(
                current, now, what=f"the intermediate certificate {_describe(current)}", field="chain"
            )
        # A trusted root is always found as an issuer below, before it could become `current`: a self-signed
        # certificate reached here (or a self-signed leaf) is one the customer uploaded and nobody trusts.
        if _is_self_signed(current):
            if current is leaf:
                raise UploadRejected(_self_signed(leaf), "cert")
            raise UploadRejected(_untrusted_root(_describe(current)), "chain")
        if current is not leaf:
            _check_signature_algorithm(current, field="chain")
        # Trusted roots first: when a cross-signed intermediate and a root share a name, the shorter path
        # through the root is the one browsers take.
        named = [
            candidate
            for candidate in [*roots, *uploaded]
            if candidate.subject == current.issuer and candidate not in path
        ]
        issuer = next((candidate for candidate in named if _issued_by(current, candidate)), None)
        if issuer is None and named:
            raise UploadRejected(
                f"the signature of {_describe(current)} does not verify with the key of its issuer "
                f"{_describe(named[0])}",
                "chain",
            )
        missing = current.issuer.rfc4514_string()
        if issuer is None and current is not leaf:
            # The customer sent the CA certificates up to one whose issuer nobody trusts: a private CA's root
            # far more often than a second missing intermediate, so that is said first.
            raise UploadRejected(
                f"{_untrusted_root(missing)} (if {missing} is an intermediate, add its certificate)", "chain"
            )
        if issuer is None:
            raise UploadRejected(
                f"an intermediate certificate is missing: add the certificate of {missing} "
                f"(the issuer of {_describe(current)})",
                "chain",
            )
        if issuer in roots:
            _check_validity(issuer, now, what=f"the root certificate {_describe(issuer)}", field="chain")
            return path
        if len(path) >= MAX_CHAIN_DEPTH:
            raise UploadRejected(
                f"the chain is longer than {MAX_CHAIN_DEPTH} certificates before a trusted root: upload the "
                "certificate with only the intermediates between it and the root",
                "chain",
            )
        path.append(issuer)
        current = issuer


def _verify_with_policy(
    domain_name: str, path: list[x509.Certificate], roots: list[x509.Certificate], now: datetime.datetime
) -> None:
    """cryptography's web PKI verifier as a backstop for what the checks above do not cover (key usage,
    extended key usage, name constraints, path length...)."""
    name = domain_name
    if name.startswith("*."):
        name = f"{WILDCARD_PROBE_LABEL}.{name[2:]}"
    verifier = PolicyBuilder().store(Store(roots)).time(now).build_server_verifier(x509.DNSName(name))
    try:
        verifier.verify(path[0], path[1:])
    except VerificationError as exc:
        raise UploadRejected(f"the chain does not validate: {exc}") from None
