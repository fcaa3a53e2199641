"""The roots file of `make run` across restarts: Pebble makes a new root at every start, and the
certificates earlier Pebbles issued must keep verifying while they can still be valid."""

from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from devstack.pebble import trust_root

NOW = datetime.datetime(2026, 6, 1, tzinfo=datetime.UTC)
VALIDITY = datetime.timedelta(days=90)


def root_made(days_ago: float, name: str) -> bytes:
    """A self-signed root made `days_ago` days before NOW, as Pebble makes one when it starts."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    made = NOW - datetime.timedelta(days=days_ago)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(made)
        .not_valid_after(made + datetime.timedelta(days=365 * 30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


def names_in(path) -> list[str]:
    return [
        root.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        for root in x509.load_pem_x509_certificates(path.read_bytes())
    ]


def test_each_start_adds_its_root_after_the_earlier_ones_once(tmp_path):
    path = tmp_path / "pebble" / "roots.pem"
    first, second = root_made(2, "first"), root_made(1, "second")
    assert trust_root(path, first, VALIDITY, NOW) == 1
    assert trust_root(path, second, VALIDITY, NOW) == 2
    assert trust_root(path, second, VALIDITY, NOW) == 2
    assert names_in(path) == ["first", "second"]


def test_a_root_goes_once_nothing_it_issued_can_still_be_valid(tmp_path):
    path = tmp_path / "roots.pem"
    # The first Pebble stopped before the second started 91 days ago: all it issued has ended.
    for days_ago, name in ((200, "first"), (91, "second"), (89, "third")):
        trust_root(path, root_made(days_ago, name), VALIDITY, NOW - datetime.timedelta(days=days_ago))
    assert names_in(path) == ["first", "second", "third"]
    assert trust_root(path, root_made(0, "fourth"), VALIDITY, NOW) == 3
    # The second's certificates may last until 90 days after the third started: one more day.
    assert names_in(path) == ["second", "third", "fourth"]


def test_an_unreadable_roots_file_starts_afresh(tmp_path):
    path = tmp_path / "roots.pem"
    path.write_text("not a certificate\n")
    assert trust_root(path, root_made(0, "only"), VALIDITY, NOW) == 1
    assert names_in(path) == ["only"]
