"""Customer-uploaded certificates: every accepted format, and one test per reason to refuse an upload."""

from __future__ import annotations

import datetime
import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from certificates.custom import MAX_UPLOAD_BYTES, CheckedUpload, UploadRejected, check_upload, covers
from tests.pki import Pki, der, key_der, key_pem, new_key, p7b, pem, pfx

DOMAIN = "www.example.com"
PASSPHRASE = "correct horse battery staple"
UTC = datetime.UTC
# Weak on purpose: the tests below pin that such signatures are refused.
SHA1 = hashes.SHA1()  # noqa: S303
MD5 = hashes.MD5()  # noqa: S303


def fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(der(cert)).hexdigest()


def stored_fingerprints(checked: CheckedUpload) -> list[str]:
    return [fingerprint(cert) for cert in x509.load_pem_x509_certificates(checked.fullchain_pem.encode())]


def rejection(*args, **kwargs) -> UploadRejected:
    with pytest.raises(UploadRejected) as caught:
        check_upload(*args, **kwargs)
    return caught.value


def same_key(stored_pem: bytes, key) -> bool:
    stored = serialization.load_pem_private_key(stored_pem, password=None)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    return stored.public_key().public_bytes(
        serialization.Encoding.DER, spki
    ) == key.public_key().public_bytes(serialization.Encoding.DER, spki)


# --- accepted formats ------------------------------------------------------------------------------------


def test_pem_bundle_leaf_first_is_stored_with_the_leaf_facts(trusted):
    leaf, key = trusted.leaf([DOMAIN, "example.com"])
    checked = check_upload(DOMAIN, trusted.chain_pem(leaf), key_pem(key))
    assert stored_fingerprints(checked) == [fingerprint(leaf), fingerprint(trusted.intermediate)]
    assert checked.sans == [DOMAIN, "example.com"]
    assert checked.not_before == leaf.not_valid_before_utc
    assert checked.not_after == leaf.not_valid_after_utc
    assert checked.not_after.tzinfo is not None
    assert checked.issuer == trusted.intermediate.subject.rfc4514_string()
    assert checked.serial == format(leaf.serial_number, "x")
    assert checked.fingerprint_sha256 == fingerprint(leaf)
    assert checked.private_key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert same_key(checked.private_key_pem, key)


def test_pem_bundle_in_any_order_is_stored_leaf_first_without_the_root(trusted):
    leaf, key = trusted.leaf([DOMAIN])
    bundle = pem(trusted.root, trusted.intermediate, leaf)
    checked = check_upload(DOMAIN, bundle, key_pem(key))
    assert stored_fingerprints(checked) == [fingerprint(leaf), fingerprint(trusted.intermediate)]


def test_intermediates_are_stored_in_path_order_and_unrelated_certificates_dropped(trusted):
    upper, upper_key = trusted.make_intermediate("Certwright Test Upper CA", path_length=1)
    lower, lower_key = trusted.leaf(
        [], common_name="Certwright Test Lower CA", ca=True, issuer=(upper, upper_key)
    )
    leaf, key = trusted.leaf([DOMAIN], issuer=(lower, lower_key))
    bundle = pem(upper, trusted.intermediate, leaf, lower)
    checked = check_upload(DOMAIN, bundle, key_pem(key))
    assert stored_fingerprints(checked) == [fingerprint(leaf), fingerprint(lower), fingerprint(upper)]


def test_the_same_intermediate_in_cert_and_chain_files_is_stored_once(trusted):
    leaf, key = trusted.leaf([DOMAIN])
    checked = check_upload(DOMAIN, trusted.chain_pem(leaf), key_pem(key), chain=pem(trusted.intermediate))
    assert stored_fingerprints(checked) == [fingerprint(leaf), fingerprint(trusted.intermediate)]


def test_der_certificate_with_pem_intermediates_is_accepted(trusted):
    leaf, key = trusted.leaf([DOMAIN])
    checked = check_upload(DOMAIN, der(leaf), key_pem(key), chain=pem(trusted.intermediate, trusted.root))
    assert stored_fingerprints(checked) == [fingerprint(leaf), fingerprint(trusted.intermediate)]


def test_der_certificate_with_der_intermediate_is_accepted(trusted):
    leaf, key = trusted.leaf([DOMAIN])
    checked = check_upload(DOMAIN, der(leaf), key_pem(key), chain=der(trusted.intermediate))
    assert stored_fingerprints(checked) == [fingerprint(leaf), fingerprint(trusted.intermediate)]


def test_der_pkcs7_bundle_is_accepted(trusted):
    leaf, key = trusted.leaf([DOMAIN])
    checked = check_upload(DOMAIN, p7b([trusted.intermediate, leaf], der=True), key_pem(key))
    assert stored_fingerprints(checked) == [fingerprint(leaf), fingerprint(trusted.intermediate)]


def test_pem_pkcs7_bundle_is_accepted(trusted):
    leaf, key = trusted.leaf([DOMAIN])
    bundle = p7b([leaf, trusted.intermediate], der=False)
    assert bundle.startswith(b"-----BEGIN PKCS7-----")
    checked = check_upload(DOMAIN, bundle, key_pem(key))
    assert stored_fingerprints(checked) == [fingerprint(leaf), fingerprint(trusted.intermediate)]


def test_pkcs7_chain_file_is_accepted(trusted):
    leaf, key = trusted.leaf([DOMAIN])
    checked = check_upload(DOMAIN, pem(leaf), key_pem(key), chain=p7b([trusted.intermediate]))
    assert stored_fingerprints(checked) == [fingerprint(leaf), fingerprint(trusted.intermediate)]


def test_pkcs12_with_passphrase_brings_its_key_and_intermediates(trusted):
    leaf, key = trusted.leaf([DOMAIN])
    bundle = pfx(key, leaf, [trusted.intermediate], passphrase=PASSPHRASE)
    checked = check_upload(DOMAIN, bundle, passphrase=PASSPHRASE)
    assert stored_fingerprints(checked) == [fingerprint(leaf), fingerprint(trusted.intermediate)]
    assert same_key(checked.private_key_pem, key)


def test_unprotected_pkcs12_needs_no_passphrase(trusted):
    leaf, key = trusted.leaf([DOMAIN])
    checked = check_upload(DOMAIN, pfx(key, leaf, [trusted.intermediate]))
    assert same_key(checked.private_key_pem, key)
    # A passphrase given anyway is not needed, and not a reason to refuse the file.
    checked = check_upload(DOMAIN, pfx(key, leaf, [trusted.intermediate]), passphrase=PASSPHRASE)
    assert same_key(checked.private_key_pem, key)


def test_pem_certificate_file_holding_the_key_needs_no_key_file(trusted):
    leaf, key = trusted.leaf([DOMAIN])
    checked = check_upload(DOMAIN, trusted.chain_pem(leaf) + key_pem(key, "sec1"))
    assert stored_fingerprints(checked)[0] == fingerprint(leaf)
    assert same_key(checked.private_key_pem, key)


KEY_FORMATS = {
    "pkcs1-pem": ("rsa2048", lambda key: key_pem(key, "pkcs1"), False),
    "pkcs8-pem": ("ec", lambda key: key_pem(key, "pkcs8"), False),
    "sec1-pem": ("ec", lambda key: key_pem(key, "sec1"), False),
    "pkcs8-der": ("ec", lambda key: key_der(key, "pkcs8"), False),
    "pkcs1-der": ("rsa2048", lambda key: key_der(key, "pkcs1"), False),
    "sec1-der": ("ec", lambda key: key_der(key, "sec1"), False),
    "encrypted-pkcs8-pem": ("ec", lambda key: key_pem(key, "pkcs8", PASSPHRASE), True),
    "encrypted-traditional-pem-rsa": ("rsa2048", lambda key: key_pem(key, "pkcs1", PASSPHRASE), True),
    "encrypted-traditional-pem-ec": ("ec", lambda key: key_pem(key, "sec1", PASSPHRASE), True),
    "encrypted-pkcs8-der": ("ec", lambda key: key_der(key, "pkcs8", PASSPHRASE), True),
}


@pytest.mark.parametrize("key_format", list(KEY_FORMATS))
def test_key_in_each_format_is_accepted_and_stored_as_plain_pkcs8(trusted, key_format):
    key_type, encode, encrypted = KEY_FORMATS[key_format]
    leaf, key = trusted.leaf([DOMAIN], key_type=key_type)
    key_file = encode(key)
    if encrypted:
        # The key really is encrypted: without the passphrase it is refused.
        assert rejection(DOMAIN, trusted.chain_pem(leaf), key_file).field == "passphrase"
    checked = check_upload(
        DOMAIN, trusted.chain_pem(leaf), key_file, passphrase=PASSPHRASE if encrypted else None
    )
    assert checked.private_key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert same_key(checked.private_key_pem, key)


def test_traditional_encrypted_pem_key_has_the_proc_type_header(trusted):
    """Pins that the fixture above really produces the "Proc-Type: 4,ENCRYPTED" kind."""
    assert b"Proc-Type: 4,ENCRYPTED" in key_pem(new_key("ec"), "sec1", PASSPHRASE)


def test_passphrase_as_bytes_decrypts_the_key(trusted):
    leaf, key = trusted.leaf([DOMAIN])
    encrypted = key_pem(key, passphrase=PASSPHRASE)
    checked = check_upload(DOMAIN, trusted.chain_pem(leaf), encrypted, passphrase=PASSPHRASE.encode())
    assert same_key(checked.private_key_pem, key)


def test_key_file_with_an_ec_parameters_block_first_is_accepted(trusted):
    leaf, key = trusted.leaf([DOMAIN])
    parameters = b"-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"
    checked = check_upload(DOMAIN, trusted.chain_pem(leaf), parameters + key_pem(key, "sec1"))
    assert same_key(checked.private_key_pem, key)


def test_wildcard_certificate_is_accepted_for_a_subdomain(trusted):
    leaf, key = trusted.leaf(["*.example.com"])
    checked = check_upload("shop.example.com", trusted.chain_pem(leaf), key_pem(key))
    assert checked.sans == ["*.example.com"]


def test_wildcard_domain_is_accepted_with_the_identical_wildcard_san(trusted):
    leaf, key = trusted.leaf(["*.example.com", "example.com"])
    checked = check_upload("*.example.com", trusted.chain_pem(leaf), key_pem(key))
    assert checked.fingerprint_sha256 == fingerprint(leaf)


def test_root_self_signed_with_sha1_does_not_matter(settings, tmp_path):
    legacy = Pki("Certwright Legacy", key_type="rsa2048", root_hash_algorithm=SHA1)
    assert legacy.root.signature_algorithm_oid == x509.oid.SignatureAlgorithmOID.RSA_WITH_SHA1
    settings.EXTRA_TRUSTED_ROOTS = legacy.write_root(tmp_path / "legacy.pem")
    leaf, key = legacy.leaf([DOMAIN])
    checked = check_upload(DOMAIN, pem(leaf, legacy.intermediate, legacy.root), key_pem(key))
    assert stored_fingerprints(checked) == [fingerprint(leaf), fingerprint(legacy.intermediate)]


# --- rejections ------------------------------------------------------------------------------------------


def test_oversized_file_is_rejected_before_parsing(trusted):
    error = rejection(DOMAIN, b"x" * 70_000)
    assert str(error) == "the certificate file is 70,000 bytes; at most 65,536 bytes (64 KiB) are accepted"
    assert error.field == "cert"


def test_oversized_upload_in_total_is_rejected_before_parsing(trusted):
    half = MAX_UPLOAD_BYTES // 2
    error = rejection(DOMAIN, b"x" * half, key=b"y" * half, chain=b"z" * 4_464)
    assert str(error) == "the upload is 70,000 bytes; at most 65,536 bytes (64 KiB) are accepted"
    assert error.field is None


def test_certificate_file_that_is_not_a_certificate_is_rejected(trusted):
    error = rejection(DOMAIN, b"hello, this is not a certificate", key_pem(new_key()))
    assert str(error) == (
        "the certificate file is not a certificate: expected PEM, DER, PKCS#7 (.p7b) or PKCS#12 (.pfx)"
    )
    assert error.field == "cert"


def test_pem_file_without_certificate_block_is_not_a_certificate(trusted):
    key = new_key()
    error = rejection(DOMAIN, key_pem(key), key_pem(key))
    assert str(error).startswith("the certificate file is not a certificate")


def test_chain_file_that_is_not_a_certificate_is_rejected(trusted):
    leaf, key = trusted.leaf([DOMAIN])
    error = rejection(DOMAIN, pem(leaf), key_pem(key), chain=b"\x30\x03\x02\x01\x00")
    assert str(error) == (
        "the chain file is not a certificate: expected PEM, DER, PKCS#7 (.p7b) or PKCS#12 (.pfx)"
    )
    assert error.field == "chain"


def test_key_file_that_is_not_a_key_is_rejected(trusted):
    leaf, _ = trusted.leaf([DOMAIN])
    error = rejection(DOMAIN, trusted.chain_pem(leaf), pem(leaf))
    assert str(error) == "the key file is not a private key: expected PEM or DER (PKCS#1, PKCS#8 or SEC1)"
    assert error.field == "key"


def test_upload_without_any_private_key_is_rejected(trusted):
    leaf, _ = trusted.leaf([DOMAIN])
    error = rejection(DOMAIN, trusted.chain_pem(leaf))
    assert str(error).startswith("a private key is needed")
    assert error.field == "key"


def test_encrypted_key_without_passphrase_is_rejected(trusted):
    leaf, key = trusted.leaf([DOMAIN])
    error = rejection(DOMAIN, trusted.chain_pem(leaf), key_pem(key, passphrase=PASSPHRASE))
    assert str(error) == "the private key is encrypted: give its passphrase"
    assert error.field == "passphrase"


def test_encrypted_pkcs12_without_passphrase_is_rejected(trusted):
    leaf, key = trusted.leaf([DOMAIN])
    error = rejection(DOMAIN, pfx(key, leaf, [trusted.intermediate], passphrase=PASSPHRASE))
    assert str(error) == "the private key is encrypted: give its passphrase"
    assert error.field == "passphrase"


def test_wrong_key_passphrase_is_rejected_without_echoing_it(trusted):
    leaf, key = trusted.leaf([DOMAIN])
    wrong = "Tr0ub4dor&3"
    error = rejection(DOMAIN, trusted.chain_pem(leaf), key_der(key, passphrase=PASSPHRASE), passphrase=wrong)
    assert str(error) == "wrong passphrase for the private key"
    assert error.field == "passphrase"
    assert wrong not in str(error)


def test_wrong_pkcs12_passphrase_is_rejected_without_echoing_it(trusted):
    leaf, key = trusted.leaf([DOMAIN])
    wrong = "Tr0ub4dor&3"
    error = rejection(DOMAIN, pfx(key, leaf, [trusted.intermediate], passphrase=PASSPHRASE), passphrase=wrong)
    assert str(error) == "wrong passphrase for the PKCS#12 file"
    assert error.field == "passphrase"
    assert wrong not in str(error)


def test_two_leaf_certificates_are_rejected_naming_both(trusted):
    first, key = trusted.leaf([DOMAIN])
    second, _ = trusted.leaf(["api.example.com"])
    error = rejection(DOMAIN, pem(first, second, trusted.intermediate), key_pem(key))
    assert str(error) == (
        "the upload has more than one leaf certificate (CN=www.example.com,O=Certwright Tests, "
        "CN=api.example.com,O=Certwright Tests): upload one certificate with its intermediates"
    )


def test_upload_of_only_ca_certificates_is_rejected(trusted):
    error = rejection(DOMAIN, pem(trusted.intermediate, trusted.root), key_pem(trusted.intermediate_key))
    assert str(error) == "the upload has no leaf certificate: every certificate in it is a CA certificate"


def test_key_of_another_certificate_is_rejected(trusted):
    leaf, _ = trusted.leaf([DOMAIN])
    error = rejection(DOMAIN, trusted.chain_pem(leaf), key_pem(new_key()))
    assert (
        str(error) == "the private key does not match the certificate (CN=www.example.com,O=Certwright Tests)"
    )
    assert error.field == "key"


def test_rsa_key_under_2048_bits_is_rejected(trusted):
    leaf, key = trusted.leaf([DOMAIN], key_type="rsa1024")
    error = rejection(DOMAIN, trusted.chain_pem(leaf), key_pem(key, "pkcs1"))
    assert str(error) == "the certificate's RSA key has 1024 bits; at least 2048 are required"


@pytest.mark.parametrize("key_type", ["p384", "p521", "rsa3072"])
def test_other_strong_keys_are_accepted(trusted, key_type):
    leaf, key = trusted.leaf([DOMAIN], key_type=key_type)
    assert check_upload(DOMAIN, trusted.chain_pem(leaf), key_pem(key)).fingerprint_sha256 == fingerprint(leaf)


def test_ec_key_on_another_curve_is_rejected_naming_it(trusted):
    leaf, key = trusted.leaf([DOMAIN], key_type="secp256k1")
    error = rejection(DOMAIN, trusted.chain_pem(leaf), key_pem(key))
    assert str(error).startswith("the certificate's EC key is on the curve secp256k1, which browsers do not")


def test_dsa_key_is_rejected(trusted):
    leaf, key = trusted.leaf([DOMAIN], key_type="dsa")
    error = rejection(DOMAIN, trusted.chain_pem(leaf), key_pem(key))
    assert str(error).startswith("the certificate has a DSA key, which browsers reject")


@pytest.mark.parametrize(("key_type", "label"), [("ed25519", "Ed25519"), ("ed448", "Ed448")])
def test_edwards_curve_key_is_rejected(trusted, key_type, label):
    leaf, key = trusted.leaf([DOMAIN], key_type=key_type)
    error = rejection(DOMAIN, trusted.chain_pem(leaf), key_pem(key))
    assert str(error).startswith(
        f"the certificate has an {label} key, which browsers do not support for HTTPS"
    )


def test_leaf_signed_with_sha1_is_rejected(trusted):
    leaf, key = trusted.leaf([DOMAIN], hash_algorithm=SHA1)
    assert leaf.signature_algorithm_oid == x509.oid.SignatureAlgorithmOID.ECDSA_WITH_SHA1
    error = rejection(DOMAIN, trusted.chain_pem(leaf), key_pem(key))
    assert str(error) == (
        "the certificate CN=www.example.com,O=Certwright Tests is signed with SHA-1, which browsers reject"
    )


def test_leaf_signed_with_md5_is_rejected(settings, tmp_path):
    rsa_pki = Pki("Certwright RSA", key_type="rsa2048")
    settings.EXTRA_TRUSTED_ROOTS = rsa_pki.write_root(tmp_path / "rsa.pem")
    leaf, key = rsa_pki.leaf([DOMAIN], hash_algorithm=MD5)
    assert leaf.signature_algorithm_oid == x509.oid.SignatureAlgorithmOID.RSA_WITH_MD5
    error = rejection(DOMAIN, rsa_pki.chain_pem(leaf), key_pem(key))
    assert str(error).endswith("is signed with MD5, which browsers reject")


def test_intermediate_signed_with_sha1_is_rejected(trusted):
    intermediate, intermediate_key = trusted.make_intermediate(
        "Certwright Test SHA-1 CA", hash_algorithm=SHA1
    )
    leaf, key = trusted.leaf([DOMAIN], issuer=(intermediate, intermediate_key))
    error = rejection(DOMAIN, pem(leaf, intermediate), key_pem(key))
    assert str(error) == (
        "the certificate CN=Certwright Test SHA-1 CA,O=Certwright Tests is signed with SHA-1, "
        "which browsers reject"
    )
    assert error.field == "chain"


def test_certificate_for_other_names_is_rejected_listing_them(trusted):
    leaf, key = trusted.leaf(["example.com", "*.other.com"], common_name=DOMAIN)
    error = rejection(DOMAIN, trusted.chain_pem(leaf), key_pem(key))
    # The Common Name says www.example.com, and does not count.
    assert str(error) == "the certificate does not cover www.example.com: it is for example.com, *.other.com"


def test_certificate_without_dns_names_is_rejected(trusted):
    leaf, key = trusted.leaf([], common_name=DOMAIN)
    error = rejection(DOMAIN, trusted.chain_pem(leaf), key_pem(key))
    assert str(error) == "the certificate does not cover www.example.com: it has no DNS names"


def test_wildcard_domain_is_not_covered_by_a_certificate_for_one_subdomain(trusted):
    leaf, key = trusted.leaf(["www.example.com"])
    error = rejection("*.example.com", trusted.chain_pem(leaf), key_pem(key))
    assert str(error) == "the certificate does not cover *.example.com: it is for www.example.com"


def test_expired_certificate_is_rejected_with_its_end_date(trusted):
    leaf, key = trusted.leaf(
        [DOMAIN],
        not_before=datetime.datetime(2023, 10, 4, 3, 4, 5, tzinfo=UTC),
        not_after=datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    error = rejection(DOMAIN, trusted.chain_pem(leaf), key_pem(key))
    assert str(error) == "the certificate expired on 2024-01-02 03:04:05 UTC"


def test_certificate_not_valid_yet_is_rejected_with_its_start_date(trusted):
    leaf, key = trusted.leaf(
        [DOMAIN],
        not_before=datetime.datetime(2100, 1, 1, 0, 0, 0, tzinfo=UTC),
        not_after=datetime.datetime(2100, 4, 1, 0, 0, 0, tzinfo=UTC),
    )
    error = rejection(DOMAIN, trusted.chain_pem(leaf), key_pem(key))
    assert str(error) == "the certificate is not valid yet: it starts on 2100-01-01 00:00:00 UTC"


def test_validity_is_judged_at_the_given_now(trusted):
    leaf, key = trusted.leaf([DOMAIN])
    later = leaf.not_valid_after_utc + datetime.timedelta(seconds=1)
    error = rejection(DOMAIN, trusted.chain_pem(leaf), key_pem(key), now=later)
    assert str(error) == f"the certificate expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC"


def test_expired_intermediate_is_rejected_naming_it(trusted):
    intermediate, intermediate_key = trusted.make_intermediate(
        "Certwright Test Old CA",
        not_before=datetime.datetime(2020, 1, 1, tzinfo=UTC),
        not_after=datetime.datetime(2024, 6, 1, 12, 0, 0, tzinfo=UTC),
    )
    leaf, key = trusted.leaf([DOMAIN], issuer=(intermediate, intermediate_key))
    error = rejection(DOMAIN, pem(leaf, intermediate), key_pem(key))
    assert str(error) == (
        "the intermediate certificate CN=Certwright Test Old CA,O=Certwright Tests "
        "expired on 2024-06-01 12:00:00 UTC"
    )
    assert error.field == "chain"


def test_missing_intermediate_is_rejected_naming_the_issuer_to_add(trusted):
    leaf, key = trusted.leaf([DOMAIN])
    error = rejection(DOMAIN, pem(leaf), key_pem(key))
    assert str(error) == (
        "an intermediate certificate is missing: add the certificate of "
        "CN=Certwright Test Intermediate CA,O=Certwright Tests "
        "(the issuer of CN=www.example.com,O=Certwright Tests)"
    )
    assert error.field == "chain"


def test_issuer_with_the_right_name_but_another_key_is_rejected(trusted):
    impostor = Pki(trusted.name)  # same names, other keys
    leaf, key = impostor.leaf([DOMAIN])
    error = rejection(DOMAIN, pem(leaf, trusted.intermediate), key_pem(key))
    assert str(error) == (
        "the signature of CN=www.example.com,O=Certwright Tests does not verify with the key of its issuer "
        "CN=Certwright Test Intermediate CA,O=Certwright Tests"
    )


UNTRUSTED_ROOT = (
    "the chain ends at CN=Certwright Untrusted Root CA,O=Certwright Tests, a root that browsers do not trust "
    "(a private or self-signed CA): use a certificate from a public CA"
)


def test_chain_ending_at_an_uploaded_untrusted_root_says_browsers_do_not_trust_that_root(trusted):
    other = Pki("Certwright Untrusted")
    leaf, key = other.leaf([DOMAIN])
    error = rejection(DOMAIN, pem(leaf, other.intermediate, other.root), key_pem(key))
    assert (str(error), error.field) == (UNTRUSTED_ROOT, "chain")


def test_chain_whose_intermediate_hangs_from_an_untrusted_root_names_that_root_not_a_missing_intermediate(
    trusted,
):
    other = Pki("Certwright Untrusted")
    leaf, key = other.leaf([DOMAIN])
    error = rejection(DOMAIN, pem(leaf, other.intermediate), key_pem(key))
    assert (str(error), error.field) == (
        f"{UNTRUSTED_ROOT} (if CN=Certwright Untrusted Root CA,O=Certwright Tests is an intermediate, "
        "add its certificate)",
        "chain",
    )


def test_leaf_of_an_untrusted_ca_without_its_intermediate_asks_for_the_intermediate(trusted):
    other = Pki("Certwright Untrusted")
    leaf, key = other.leaf([DOMAIN])
    assert str(rejection(DOMAIN, pem(leaf), key_pem(key))).startswith(
        "an intermediate certificate is missing: add the certificate of "
        "CN=Certwright Untrusted Intermediate CA,O=Certwright Tests"
    )


def test_self_signed_certificate_is_rejected_as_untrusted(trusted):
    leaf, key = trusted.leaf([DOMAIN], issuer="self")
    error = rejection(DOMAIN, pem(leaf), key_pem(key))
    assert (str(error), error.field) == (
        "the certificate CN=www.example.com,O=Certwright Tests is self-signed: browsers trust only "
        "certificates issued by a public certificate authority (upload that one, with its intermediates)",
        "cert",
    )


def deep_chain(pki: Pki, depth: int) -> tuple[list[x509.Certificate], object]:
    """A leaf under `depth` intermediates (the first issued by the root); returns (leaf first, leaf key)."""
    issuer = pki.make_intermediate("Certwright Test Level 1 CA", path_length=None)
    cas = [issuer[0]]
    for level in range(2, depth + 1):
        issuer = pki.leaf([], common_name=f"Certwright Test Level {level} CA", ca=True, issuer=issuer)
        cas.append(issuer[0])
    leaf, key = pki.leaf([DOMAIN], issuer=issuer)
    return [leaf, *reversed(cas)], key


def test_chain_of_eight_certificates_is_accepted(trusted):
    chain, key = deep_chain(trusted, 7)
    checked = check_upload(DOMAIN, pem(*reversed(chain)), key_pem(key))
    assert stored_fingerprints(checked) == [fingerprint(cert) for cert in chain]


def test_chain_longer_than_eight_certificates_is_rejected(trusted):
    chain, key = deep_chain(trusted, 8)
    error = rejection(DOMAIN, pem(*chain), key_pem(key))
    assert str(error).startswith("the chain is longer than 8 certificates before a trusted root")


def test_damaged_certificate_block_is_rejected_naming_it(trusted):
    leaf, key = trusted.leaf([DOMAIN])
    broken = b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"
    error = rejection(DOMAIN, pem(leaf) + broken, key_pem(key))
    assert (
        str(error) == "the certificate file is damaged: its PEM block number 2 (CERTIFICATE) cannot be read"
    )
    assert error.field == "cert"


def test_chain_refused_by_the_web_pki_policy_is_rejected(trusted):
    # Passes every check above; only the final policy verification knows a client-only certificate.
    leaf, key = trusted.leaf([DOMAIN], extended_key_usage=[ExtendedKeyUsageOID.CLIENT_AUTH])
    error = rejection(DOMAIN, trusted.chain_pem(leaf), key_pem(key))
    assert str(error).startswith("the chain does not validate: ")


# --- covers: RFC 6125 name matching ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("www.example.com", "www.example.com", True),
        ("example.com", "www.example.com", False),
        ("*.example.com", "www.example.com", True),
        ("*.example.com", "example.com", False),
        ("*.example.com", "a.b.example.com", False),
        ("*.example.com", "www.example.org", False),
        ("w*.example.com", "www.example.com", False),
        ("*w.example.com", "www.example.com", False),
        ("www.*.com", "www.example.com", False),
        ("*.*.example.com", "a.b.example.com", False),
        ("*.com", "example.com", False),
        ("*.example.com", "*.example.com", True),
        ("www.example.com", "*.example.com", False),
        ("*.example.org", "*.example.com", False),
        ("*.example.com", "*.www.example.com", False),
        ("w*.example.com", "w*.example.com", False),
    ],
)
def test_covers_follows_rfc_6125(pattern, name, expected):
    assert covers(pattern, name) is expected


def test_a_certificate_whose_public_key_is_damaged_is_rejected_naming_the_damage(trusted):
    leaf, key = trusted.leaf(["www.example.com"])
    data = bytearray(der(leaf))
    point = leaf.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    at = bytes(data).index(point)
    data[at] = 0x05  # no EC point encoding starts so (0x06 and 0x07 are hybrid ones); it still parses
    exc = rejection("www.example.com", bytes(data), key=key_pem(key))
    assert str(exc).startswith(
        "a certificate or key in the upload is damaged: one of its fields cannot be read"
    )


def test_damaged_uploads_are_always_rejected_with_a_message_never_an_unexpected_error(trusted):
    import random

    leaf, key = trusted.leaf(["www.example.com"])
    samples = [
        trusted.chain_pem(leaf),
        der(leaf),
        p7b([leaf, trusted.intermediate]),
        pfx(key, leaf, [trusted.intermediate], b"pw"),
        key_pem(key),
        key_der(key),
    ]
    rng = random.Random(20261127)
    for _ in range(400):
        data = bytearray(rng.choice(samples))
        if rng.random() < 0.5:
            data = data[: rng.randrange(len(data))]
        else:
            for _ in range(rng.randrange(1, 6)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            check_upload(
                "www.example.com",
                bytes(data),
                key=rng.choice([None, key_pem(key), bytes(data)]),
                passphrase=rng.choice([None, "pw"]),
            )
        except UploadRejected as exc:
            assert str(exc)


def test_a_trust_store_file_that_is_missing_is_reported_as_the_platforms_problem(pki, settings, tmp_path):
    settings.EXTRA_TRUSTED_ROOTS = str(tmp_path / "missing.pem")
    leaf, key = pki.leaf(["www.example.com"])
    exc = rejection("www.example.com", pki.chain_pem(leaf), key=key_pem(key))
    assert str(exc).startswith("the platform cannot check certificate chains at the moment")


def test_a_self_made_certificate_from_openssl_req_x509_is_rejected_as_self_signed(trusted, tmp_path):
    import subprocess

    key, cert = tmp_path / "k.pem", tmp_path / "c.pem"
    request = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30"]
    subject = ["-subj", "/CN=www.example.com", "-addext", "subjectAltName=DNS:www.example.com"]
    subprocess.run(
        [*request, *subject, "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    exc = rejection("www.example.com", cert.read_bytes(), key=key.read_bytes())
    assert str(exc).startswith("the certificate CN=www.example.com is self-signed: browsers trust only")
