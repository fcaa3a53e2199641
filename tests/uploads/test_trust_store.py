"""The trust store: certifi's roots plus EXTRA_TRUSTED_ROOTS, robust to a root it cannot parse."""

import certifi
import pytest

from certificates.verify import _load_roots, trusted_roots

pytestmark = pytest.mark.django_db


def test_certifi_roots_load_with_the_extra_roots(settings, tmp_path):
    from devstack.tls import write_localhost_tls

    ca, _, _ = write_localhost_tls(tmp_path)
    settings.EXTRA_TRUSTED_ROOTS = str(ca)
    roots = trusted_roots()
    assert len(roots) == len(_load_roots(certifi.where(), 0)) + 1


def test_an_unparsable_certificate_in_a_bundle_is_skipped_not_fatal(tmp_path):
    from devstack.tls import write_localhost_tls

    ca, cert, _ = write_localhost_tls(tmp_path)
    broken = b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(ca.read_bytes() + broken + cert.read_bytes())
    assert len(_load_roots(str(bundle), 1.0)) == 2
