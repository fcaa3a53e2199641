"""The admin's lists read at a glance: statuses as coloured badges, long reasons on one line with
the whole text on hover, bulk retry and renew, and search by name, SAN and fingerprint."""

from __future__ import annotations

import datetime

import pytest
from django.utils import timezone

from certificates.models import OrderState
from domains.models import DomainStatus
from tests.factories import CertificateFactory, DomainFactory, OrderFactory

pytestmark = pytest.mark.django_db

DAY = datetime.timedelta(days=1)


def test_the_domain_list_shows_statuses_as_badges_and_reasons_on_one_line(admin_client):
    reason = "Your DNS answers 192.0.2.1, not the platform:\nset " + "a long explanation " * 10
    DomainFactory(status=DomainStatus.PENDING_DNS, last_error=reason)
    DomainFactory(status=DomainStatus.IN_USE)
    body = admin_client.get("/admin/domains/domain/").content.decode()
    assert '<span class="cw-badge cw-pending_dns">Pending DNS</span>' in body
    assert '<span class="cw-badge cw-in_use">In use</span>' in body
    whole = " ".join(reason.split())
    assert f'title="{whole}"' in body
    assert "Your DNS answers 192.0.2.1, not the platform: set a long" in body
    assert "…</span>" in body
    assert ".cw-badge" in body  # the style travels with the list


def test_domains_are_found_by_a_name_their_certificate_covers_and_by_fingerprint(admin_client):
    covered = DomainFactory(name="shop.example.com")
    CertificateFactory(
        domain=covered,
        sans=["shop.example.com", "www.shop.example.org"],
        fingerprint_sha256="ab12cd34" + "0" * 56,
    )
    other = DomainFactory(name="blog.example.net")

    def found(term: str) -> set[str]:
        body = admin_client.get("/admin/domains/domain/", {"q": term}).content.decode()
        return {name for name in (covered.name, other.name) if f">{name}</a>" in body}

    assert found("www.shop.example.org") == {covered.name}
    assert found("AB:12:CD:34") == {covered.name}
    assert found("ab12cd34") == {covered.name}
    assert found("blog") == {other.name}
    # Too short to be a fingerprint: only names match.
    assert found("ab12") == set()


def test_renew_now_in_bulk_renews_those_it_can_and_names_the_others(admin_client):
    now = timezone.now()
    served = DomainFactory(status=DomainStatus.IN_USE)
    certificate = CertificateFactory(domain=served, renew_at=now + 30 * DAY)
    waiting = DomainFactory(status=DomainStatus.PENDING_DNS)
    response = admin_client.post(
        "/admin/domains/domain/",
        {"action": "renew_now_action", "_selected_action": [served.pk, waiting.pk]},
        follow=True,
    )
    body = response.content.decode()
    assert f"Renewing now: {served.name}" in body
    assert "Not renewed" in body and waiting.name in body
    certificate.refresh_from_db()
    assert certificate.renewal_claim is not None


def test_certificates_and_orders_show_their_state_as_a_badge(admin_client):
    now = timezone.now()
    CertificateFactory(not_before=now - 89 * DAY, not_after=now + DAY)
    CertificateFactory(not_before=now - 10 * DAY, not_after=now + 80 * DAY, revoked_at=now)
    CertificateFactory(not_before=now - 10 * DAY, not_after=now + 80 * DAY)
    certificates = admin_client.get("/admin/certificates/certificate/").content.decode()
    assert '<span class="cw-badge cw-action_required">Expiring</span>' in certificates
    assert '<span class="cw-badge cw-failing">Revoked</span>' in certificates
    assert '<span class="cw-badge cw-in_use">Valid</span>' in certificates
    OrderFactory(state=OrderState.INVALID, problem="urn:ietf:params:acme:error:caa\nCAA forbids it")
    orders = admin_client.get("/admin/certificates/order/").content.decode()
    assert '<span class="cw-badge cw-failing">Invalid</span>' in orders
    assert 'title="urn:ietf:params:acme:error:caa CAA forbids it"' in orders


def test_renew_now_from_the_certificate_list_renews_each_domain_once(admin_client):
    now = timezone.now()
    served = DomainFactory(status=DomainStatus.IN_USE)
    current = CertificateFactory(domain=served, renew_at=now + 30 * DAY)
    older = CertificateFactory(domain=served, not_after=now + 10 * DAY, renew_at=None)
    response = admin_client.post(
        "/admin/certificates/certificate/",
        {"action": "renew_certificates_now", "_selected_action": [current.pk, older.pk]},
        follow=True,
    )
    assert f"Renewing now: {served.name}</li>" in response.content.decode()
    current.refresh_from_db()
    assert current.renewal_claim is not None
