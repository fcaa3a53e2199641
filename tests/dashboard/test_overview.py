"""The operators' overview, the admin's home: counts per status linking to the filtered lists,
what needs attention with its reason and a button, both charts, the quota and the machinery, with a
number of statements that does not grow with the data."""

from __future__ import annotations

import datetime
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from certificates.models import CertificateSource, Issuance, OrderState
from domains.models import Domain, DomainStatus
from tests.factories import CertificateFactory, DomainFactory, OrderFactory

pytestmark = pytest.mark.django_db

DAY = datetime.timedelta(days=1)


def overview(admin_client) -> str:
    response = admin_client.get("/admin/")
    assert response.status_code == 200
    return response.content.decode()


def test_each_status_is_counted_and_links_to_the_list_filtered_on_it(admin_client, redis_servers):
    for status, count in ((DomainStatus.IN_USE, 3), (DomainStatus.PENDING_DNS, 2), (DomainStatus.FAILING, 1)):
        for _ in range(count):
            DomainFactory(status=status)
    body = overview(admin_client)
    tiles = dict(
        re.findall(
            r'href="/admin/domains/domain/\?status__exact=([a-z_]+)">.*?<span class="cw-count">(\d+)</span>',
            body,
            re.S,
        )
    )
    assert tiles["in_use"] == "3" and tiles["pending_dns"] == "2" and tiles["failing"] == "1"
    assert tiles["disabled"] == "0"
    assert "(6 in all)" in body
    listed = admin_client.get("/admin/domains/domain/?status__exact=pending_dns").content.decode()
    assert "2 domains" in listed


def test_what_needs_attention_shows_the_reason_on_one_line_and_a_button(admin_client, redis_servers):
    failing = DomainFactory(
        status=DomainStatus.FAILING, last_error="Let's Encrypt could not issue:\n the CA said no"
    )
    DomainFactory(status=DomainStatus.ACTION_REQUIRED, last_error="Add a CAA record for letsencrypt.org")
    ending = DomainFactory(status=DomainStatus.IN_USE)
    now = timezone.now()
    CertificateFactory(domain=ending, not_before=now - 87 * DAY, not_after=now + 3 * DAY)
    renewing = CertificateFactory(
        not_before=now - 70 * DAY,
        not_after=now + 20 * DAY,
        renew_at=now + DAY,
        renewal_failures=2,
        renewal_error="timeout at the CA",
    )
    body = overview(admin_client)
    attention = body[body.index('id="attention"') : body.index('id="cw-charts"')]
    assert "Let&#x27;s Encrypt could not issue: the CA said no" in attention
    assert f'action="/admin/overview/retry/{failing.pk}/"' in attention
    assert "Add a CAA record for letsencrypt.org" in attention
    assert ending.name in attention and "ends" in attention
    assert renewing.domain.name in attention and "timeout at the CA" in attention
    assert "Renew now" in attention and "Retry now" in attention


def test_retry_now_from_the_overview_claims_the_check_at_once_with_the_backoff_reset(
    admin_client, redis_servers
):
    later = timezone.now() + datetime.timedelta(hours=5)
    domain = DomainFactory(status=DomainStatus.FAILING, consecutive_failures=4, next_attempt_at=later)
    response = admin_client.post(f"/admin/overview/retry/{domain.pk}/", follow=True)
    assert response.redirect_chain[-1][0].endswith("/admin/#attention")
    # The admin shows the message with its first letter capitalised.
    assert f"{domain.name}: checking now" in response.content.decode().lower()
    domain.refresh_from_db()
    # Claimed: the check is sent now, and its lease (not the backoff) is what next_attempt_at holds.
    assert domain.claim_token is not None and domain.consecutive_failures == 0
    assert domain.next_attempt_at < later
    assert admin_client.get(f"/admin/overview/retry/{domain.pk}/").status_code == 405


def test_both_charts_are_drawn_with_the_days_and_hours_counted(admin_client, redis_servers):
    now = timezone.now()
    CertificateFactory(not_before=now - DAY, not_after=now + 10 * DAY)
    CertificateFactory(not_before=now - DAY, not_after=now + 10 * DAY, source=CertificateSource.CUSTOM)
    Issuance.objects.create(
        registered_domain="example.com", names=["a.example.com"], fingerprint_sha256="a" * 64, issued_at=now
    )
    Issuance.objects.create(
        registered_domain="example.com",
        names=["b.example.com"],
        fingerprint_sha256="b" * 64,
        issued_at=now,
        renewal=True,
    )
    OrderFactory(state=OrderState.INVALID, finished=now)
    body = overview(admin_client)
    assert body.count('<svg class="cw-chart"') == 2
    day = (now + 10 * DAY).date()
    assert f"<title>{day:%Y-%m-%d}: 1 let&#x27;s encrypt, 1 custom</title>" in body
    hour = now.replace(minute=0, second=0, microsecond=0)
    assert f"<title>{hour:%Y-%m-%d %H:00} UTC: 1 issued, 1 renewed, 1 failed</title>" in body


def test_the_number_of_statements_does_not_grow_with_the_data(admin_client, redis_servers):
    def statements() -> int:
        with CaptureQueriesContext(connection) as captured:
            overview(admin_client)
        return len(captured.captured_queries)

    DomainFactory(status=DomainStatus.FAILING)
    statements()  # the first writes the issuers' rows and the session's
    few = statements()
    now = timezone.now()
    for index in range(30):
        domain = DomainFactory(status=[DomainStatus.FAILING, DomainStatus.ACTION_REQUIRED][index % 2])
        CertificateFactory(domain=domain, not_before=now - 87 * DAY, not_after=now + 2 * DAY)
        CertificateFactory(renew_at=now, renewal_failures=1)
    assert Domain.objects.count() > 60
    assert statements() == few


def test_a_user_who_may_not_change_domains_sees_no_button_and_cannot_retry(client, redis_servers):
    from django.contrib.auth.models import Permission

    from tests.factories import UserFactory

    viewer = UserFactory(username="viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_domain"))
    client.force_login(viewer)
    domain = DomainFactory(status=DomainStatus.FAILING, next_attempt_at=timezone.now() + DAY)
    body = client.get("/admin/").content.decode()
    assert domain.name in body and "/admin/overview/retry/" not in body
    client.post(f"/admin/overview/retry/{domain.pk}/")
    domain.refresh_from_db()
    assert domain.next_attempt_at > timezone.now()


def test_each_see_all_link_opens_a_list_that_exists_and_is_filtered(admin_client, redis_servers):
    now = timezone.now()
    failing = CertificateFactory(renew_at=now, renewal_failures=1, renewal_error="no")
    CertificateFactory(renew_at=now)
    ending = DomainFactory(status=DomainStatus.IN_USE)
    CertificateFactory(domain=ending, not_before=now - 87 * DAY, not_after=now + 3 * DAY)
    DomainFactory(status=DomainStatus.FAILING)
    DomainFactory(status=DomainStatus.ACTION_REQUIRED)
    body = overview(admin_client)
    links = re.findall(r'<a href="([^"]+)">see all</a>', body)
    assert len(links) == 4
    pages = {link: admin_client.get(link.replace("&amp;", "&")) for link in links}
    # An unknown filter is not an error page: the admin redirects to ?e=1 (a 302), not a 200.
    assert all(page.status_code == 200 for page in pages.values())
    renewals = next(page for link, page in pages.items() if "renewal_failing" in link).content.decode()
    assert f"/admin/certificates/certificate/{failing.pk}/change/" in renewals
    assert "1 certificate" in renewals
    served = next(page for link, page in pages.items() if "ending_7d" in link).content.decode()
    assert ending.name in served


def test_a_long_list_of_certificates_ending_is_counted_up_to_a_cap_and_says_so(
    admin_client, redis_servers, monkeypatch
):
    from dashboard import overview as overview_module

    monkeypatch.setattr(overview_module, "COUNT_CAP", 3)
    now = timezone.now()
    for index in range(5):
        domain = DomainFactory(status=DomainStatus.IN_USE)
        source = CertificateSource.CUSTOM if index % 2 else CertificateSource.LETSENCRYPT
        CertificateFactory(
            domain=domain, source=source, not_before=now - 80 * DAY, not_after=now + DAY + index * DAY / 10
        )
    # Revoked: not servable, so not "ending".
    revoked = DomainFactory(status=DomainStatus.IN_USE)
    CertificateFactory(domain=revoked, not_before=now - 80 * DAY, not_after=now + DAY, revoked_at=now)
    data = overview_module.build()
    ending = next(group for group in data.attention if group.key == "ending_7d")
    assert (ending.count, ending.more) == (3, True)
    # The soonest first, of both sources (the query stops one past the cap).
    soonest = Domain.objects.exclude(pk=revoked.pk).order_by("pk").values_list("name", flat=True)
    assert [row.name for row in ending.rows] == list(soonest)[:4]
    assert '<span class="cw-count-small cw-hot">3+</span>' in overview(admin_client)


def test_each_tile_says_what_its_domains_wait_on_and_links_to_them(admin_client, redis_servers):
    for waiting_on, count in (("dns", 3), ("ownership", 1)):
        for _ in range(count):
            DomainFactory(status=DomainStatus.PENDING_DNS, waiting_on=waiting_on)
    body = overview(admin_client)
    dns = "/admin/domains/domain/?status__exact=pending_dns&amp;waiting_on__exact=dns"
    assert f'<a href="{dns}">3 on DNS record</a>' in body
    assert "1 on ownership</a>" in body
    listed = admin_client.get(dns.replace("&amp;", "&"))
    assert listed.status_code == 200 and "3 domains" in listed.content.decode()
