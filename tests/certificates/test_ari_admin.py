"""What operators see of ACME Renewal Information in the admin's certificate pages, and its action."""

from __future__ import annotations

import datetime

import pytest
from django.utils import timezone

from certificates.models import Certificate, CertificateSource
from tests.factories import CertificateFactory

pytestmark = pytest.mark.django_db

DAY = datetime.timedelta(days=1)


def test_a_certificates_page_shows_its_window_explanation_last_and_next_check_and_error(admin_client):
    start = datetime.datetime(2031, 3, 1, tzinfo=datetime.UTC)
    cert = CertificateFactory(
        ari_cert_id="aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE",
        ari_window_start=start,
        ari_window_end=start + 2 * DAY,
        ari_explanation_url="https://ca.example/incident?id=1&x=<b>",
        ari_checked_at=start - DAY,
        ari_next_check=start - DAY / 2,
        ari_error="The CA answered HTTP 500. Next check at 2031-02-28 12:00:00 UTC.",
    )
    body = admin_client.get(f"/admin/certificates/certificate/{cert.pk}/change/").content.decode()
    assert "2031-03-01 00:00:00 to 2031-03-03 00:00:00 UTC" in body
    # A link, escaped: the CA's URL cannot inject markup into the admin.
    assert 'href="https://ca.example/incident?id=1&amp;x=&lt;b&gt;"' in body
    assert "<b>" not in body.split("ARI explanation", 1)[1][:400]
    assert "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE" in body
    assert "The CA answered HTTP 500." in body
    assert "Next ARI check" in body
    assert "2031-02-28 12:00:00 UTC" in body
    assert "2031-02-28 00:00:00 UTC" in body


def test_the_admin_action_makes_checkable_certificates_due_and_says_which_were_not(admin_client):
    later = timezone.now() + 5 * DAY
    served = CertificateFactory(ari_cert_id="a.b", ari_next_check=later, renew_at=later)
    custom = CertificateFactory(source=CertificateSource.CUSTOM, renew_at=None, ari_next_check=None)
    response = admin_client.post(
        "/admin/certificates/certificate/",
        {"action": "check_renewal_information_now", "_selected_action": [served.pk, custom.pk]},
        follow=True,
    )
    body = response.content.decode()
    assert "1 certificate(s) will have their renewal information checked within a minute" in body
    assert "1 not checked (custom, replaced, expired, revoked or without an ARI identifier)" in body
    served.refresh_from_db()
    assert served.ari_next_check <= timezone.now()
    assert Certificate.objects.get(pk=custom.pk).ari_next_check is None
