"""certfiles/kdf.py: every key-derivation cost is read and capped before anything derives, and what is
within the caps (or cheap, like legacy PEM encryption) still passes. Keys are built with a small cost and
the DER integer then edited to a huge one, as the attacker did."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from certfiles.kdf import (
    MAX_PBKDF2_ITERATIONS,
    EncryptionRefused,
    Pkcs12Locked,
    check_pkcs12,
    check_private_key,
)
from certfiles.pbe import rc2_decrypt_block, rc2_key_schedule
from tests.pki import (
    Pki,
    der_to_pem,
    key_pem,
    new_key,
    pbkdf2_key,
    pem_to_der,
    pfx,
    pfx_hiding_key,
    pfx_with_rounds,
    scrypt_key,
    with_integer,
)

PASSPHRASE = "correct horse battery staple"
HUGE = 2**31 - 1
PBKDF2_OVER_CAP = (
    "is encrypted with 2,147,483,647 PBKDF2 iterations; at most 2,000,000 are accepted: "
    "export it again with fewer (OpenSSL's default is 2,048)"
)


@pytest.fixture(scope="module")
def issued():
    pki = Pki("KDF Test")
    leaf, key = pki.leaf(["www.example.com"])
    return pki, leaf, key


def refusal(check, *args) -> str:
    with pytest.raises(EncryptionRefused) as caught:
        check(*args)
    return str(caught.value)


# --- PKCS#8 keys: PBKDF2 ---------------------------------------------------------------------------------


def test_pbkdf2_key_with_an_edited_iteration_count_is_refused_naming_the_cap_in_pem_and_der():
    edited = with_integer(pem_to_der(key_pem(new_key(), passphrase=PASSPHRASE)), 2048, HUGE)
    assert refusal(check_private_key, der_to_pem(edited, "ENCRYPTED PRIVATE KEY")) == (
        f"the private key {PBKDF2_OVER_CAP}"
    )
    assert refusal(check_private_key, edited) == f"the private key {PBKDF2_OVER_CAP}"


def test_pbkdf2_key_at_the_cap_passes_and_one_over_is_refused():
    key = new_key()
    at_cap = pem_to_der(pbkdf2_key(key, PASSPHRASE, rounds=1234))
    check_private_key(with_integer(at_cap, 1234, MAX_PBKDF2_ITERATIONS))
    message = refusal(check_private_key, with_integer(at_cap, 1234, MAX_PBKDF2_ITERATIONS + 1))
    assert "2,000,001 PBKDF2 iterations; at most 2,000,000 are accepted" in message


def test_encrypted_key_with_an_ordinary_cost_passes_and_still_loads():
    key = new_key()
    for encrypted in (pbkdf2_key(key, PASSPHRASE, rounds=100_000), scrypt_key(key, PASSPHRASE)):
        check_private_key(encrypted)
        assert serialization.load_pem_private_key(encrypted, PASSPHRASE.encode()) is not None


def test_pkcs8_label_with_legacy_headers_is_still_read_for_its_pbkdf2_cost():
    # The headers would not stop OpenSSL from reading the PKCS#8 body and deriving.
    edited = der_to_pem(with_integer(pem_to_der(key_pem(new_key(), passphrase=PASSPHRASE)), 2048, HUGE), "X")
    body = edited.split(b"\n", 1)[1].rsplit(b"-----END", 1)[0]
    disguised = (
        b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,00\n\n"
        + body
        + b"-----END ENCRYPTED PRIVATE KEY-----\n"
    )
    assert PBKDF2_OVER_CAP in refusal(check_private_key, disguised)


def test_legacy_pem_encryption_and_unencrypted_keys_pass():
    key = new_key("rsa2048")
    check_private_key(key_pem(key, "pkcs1", passphrase=PASSPHRASE))  # Proc-Type/DEK-Info: one MD5 round
    check_private_key(key_pem(key))
    check_private_key(
        key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


# --- PKCS#8 keys: scrypt ---------------------------------------------------------------------------------


def test_scrypt_key_needing_more_than_64_mib_is_refused_naming_the_memory():
    edited = with_integer(pem_to_der(scrypt_key(new_key(), PASSPHRASE, n=16, r=8, p=1)), 16, 2**20)
    assert refusal(check_private_key, edited) == (
        "the private key is encrypted with scrypt parameters that need 1,024 MiB of memory "
        "(N=1,048,576, r=8); at most 64 MiB are accepted: export it again with smaller ones "
        "(OpenSSL's default is N=16,384, r=8, p=1)"
    )


def test_scrypt_key_at_64_mib_passes():
    check_private_key(with_integer(pem_to_der(scrypt_key(new_key(), PASSPHRASE, n=16, r=8)), 16, 2**16))


def test_scrypt_key_with_a_large_parallelization_is_refused():
    edited = with_integer(pem_to_der(scrypt_key(new_key(), PASSPHRASE, n=16, r=8, p=3)), 3, 1000)
    assert refusal(check_private_key, edited) == (
        "the private key is encrypted with scrypt parallelization p=1,000; at most 4 is accepted: "
        "export it again with p=1 (OpenSSL's default)"
    )


@pytest.mark.parametrize("n", [1, 3000, 0])
def test_scrypt_cost_that_is_not_a_power_of_two_above_one_is_damaged(n):
    edited = with_integer(pem_to_der(scrypt_key(new_key(), PASSPHRASE, n=16, r=8)), 16, n)
    assert refusal(check_private_key, edited) == (
        f"the private key is damaged: its scrypt cost N={n:,} is not a power of two above 1"
    )


# --- unknown schemes and damaged ASN.1 ---------------------------------------------------------------------


def test_unknown_key_derivation_is_refused_rather_than_handed_to_openssl():
    der = pem_to_der(key_pem(new_key(), passphrase=PASSPHRASE))
    pbkdf2_oid = bytes.fromhex("06092a864886f70d01050c")
    unknown = der.replace(pbkdf2_oid, bytes.fromhex("06092a864886f70d01057f"))
    assert refusal(check_private_key, unknown) == (
        "the private key is encrypted with a key derivation that is not accepted (1.2.840.113549.1.5.127): "
        "export it again with AES encryption (PBES2 with PBKDF2)"
    )


def test_unknown_cipher_is_refused():
    der = pem_to_der(key_pem(new_key(), passphrase=PASSPHRASE))
    aes256 = bytes.fromhex("060960864801650304012a")
    unknown = der.replace(aes256, bytes.fromhex("060960864801650304012e"))  # AES-256-GCM
    assert "is encrypted with a cipher that is not accepted (2.16.840.1.101.3.4.1.46)" in refusal(
        check_private_key, unknown
    )


def test_malformed_encrypted_key_is_damaged():
    der = pem_to_der(key_pem(new_key(), passphrase=PASSPHRASE))
    assert refusal(check_private_key, der_to_pem(der[:-20], "ENCRYPTED PRIVATE KEY")).startswith(
        "the private key is damaged"
    )
    assert refusal(
        check_private_key, b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAA\n-----END ENCRYPTED PRIVATE KEY-----"
    ) == ("the private key is damaged: its PEM block cannot be decoded")
    assert refusal(
        check_private_key, b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMAA=\n-----END ENCRYPTED PRIVATE KEY-----"
    ) == ("the private key is damaged: it is not an encrypted PKCS#8 key")


# --- PKCS#12 ---------------------------------------------------------------------------------------------


def test_pkcs12_mac_iterations_over_the_cap_are_refused(issued):
    pki, leaf, key = issued
    edited = with_integer(pfx_with_rounds(key, leaf, [pki.intermediate], PASSPHRASE, rounds=1234), 2048, HUGE)
    assert refusal(check_pkcs12, edited, [PASSPHRASE.encode()]) == (
        "the PKCS#12 file's integrity check (MAC) uses 2,147,483,647 iterations; at most 2,000,000 are "
        "accepted: export it again with fewer (OpenSSL's default is 2,048)"
    )


def test_pkcs12_encrypted_certificates_with_pbes2_over_the_cap_are_refused(issued):
    pki, leaf, _ = issued
    edited = with_integer(
        pfx_with_rounds(None, leaf, [pki.intermediate], PASSPHRASE, rounds=1234), 1234, HUGE
    )
    assert refusal(check_pkcs12, edited, [PASSPHRASE.encode()]) == (
        f"the PKCS#12 file's certificate section {PBKDF2_OVER_CAP}"
    )


def test_pkcs12_shrouded_key_with_the_legacy_pkcs12_scheme_over_the_cap_is_refused(issued):
    _, _, key = issued
    edited = with_integer(pfx_with_rounds(key, None, [], PASSPHRASE, rounds=1234, legacy=True), 1234, HUGE)
    assert refusal(check_pkcs12, edited, [PASSPHRASE.encode()]) == (
        "the PKCS#12 file's private key is encrypted with 2,147,483,647 PKCS#12 key-derivation iterations; "
        "at most 2,000,000 are accepted: export it again with fewer (OpenSSL's default is 2,048)"
    )


def test_pkcs12_legacy_encrypted_certificates_over_the_cap_are_refused(issued):
    pki, leaf, _ = issued
    built = pfx_with_rounds(None, leaf, [pki.intermediate], PASSPHRASE, rounds=1234, legacy=True)
    assert "certificate section is encrypted with 2,147,483,647 PKCS#12 key-derivation" in refusal(
        check_pkcs12, with_integer(built, 1234, HUGE), [PASSPHRASE.encode()]
    )


def test_pkcs12_key_hidden_inside_the_encrypted_part_is_checked_after_opening_it(issued):
    _, leaf, key = issued
    shrouded = with_integer(pem_to_der(key_pem(key, passphrase=PASSPHRASE)), 2048, HUGE)
    hidden = pfx_hiding_key(leaf, shrouded, PASSPHRASE)
    assert refusal(check_pkcs12, hidden, [PASSPHRASE.encode(), None]) == (
        f"the PKCS#12 file's private key {PBKDF2_OVER_CAP}"
    )


def test_pkcs12_within_the_caps_passes_and_returns_the_password_that_opens_it(issued):
    pki, leaf, key = issued
    for built in (
        pfx(key, leaf, [pki.intermediate], passphrase=PASSPHRASE),
        pfx_with_rounds(key, leaf, [pki.intermediate], PASSPHRASE, rounds=50_000, legacy=True),
        pfx_hiding_key(leaf, pem_to_der(key_pem(key, passphrase=PASSPHRASE)), PASSPHRASE),
    ):
        assert check_pkcs12(built, [b"wrong", PASSPHRASE.encode(), None]) == [PASSPHRASE.encode()]
        assert pkcs12.load_key_and_certificates(built, PASSPHRASE.encode())[1] == leaf


def test_unprotected_pkcs12_passes_with_every_password_left_to_try(issued):
    pki, leaf, key = issued
    assert check_pkcs12(pfx(key, leaf, [pki.intermediate]), [b"typed anyway", None]) == [
        b"typed anyway",
        None,
    ]


def test_pkcs12_whose_encrypted_part_no_password_opens_is_locked(issued):
    pki, leaf, key = issued
    with pytest.raises(Pkcs12Locked):
        check_pkcs12(pfx(key, leaf, [pki.intermediate], passphrase=PASSPHRASE), [b"wrong", None])


def test_malformed_pkcs12_is_damaged(issued):
    pki, leaf, key = issued
    built = pfx(key, leaf, [pki.intermediate], passphrase=PASSPHRASE)
    assert (
        refusal(check_pkcs12, built[:-40], [None])
        == "the PKCS#12 file is damaged: its structure cannot be read"
    )


def test_rc2_decrypts_the_rfc_2268_test_vectors():
    # (key, effective bits, plaintext, ciphertext), RFC 2268 section 5: legacy files encrypt with RC2-40.
    vectors = [
        ("0000000000000000", 63, "0000000000000000", "ebb773f993278eff"),
        ("ffffffffffffffff", 64, "ffffffffffffffff", "278b27e42e2f0d49"),
        ("3000000000000000", 64, "1000000000000001", "30649edf9be7d2c2"),
        ("88", 64, "0000000000000000", "61a8a244adacccf0"),
        ("88bca90e90875a7f0f79c384627bafb2", 128, "0000000000000000", "2269552ab0f85ca6"),
    ]
    for key, bits, plain, cipher in vectors:
        schedule = rc2_key_schedule(bytes.fromhex(key), bits)
        assert rc2_decrypt_block(schedule, bytes.fromhex(cipher)).hex() == plain
