"""Domains: created through one service with the normalizer, unique platform-wide, admin-safe."""

from __future__ import annotations

import datetime
import re

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from certificates import dns01
from certificates.sealing import seal
from domains.models import Domain, DomainStatus
from domains.services import (
    DomainNameTaken,
    InvalidDomainName,
    create_domain,
    dns_records_to_add,
    retry_now,
    set_letsencrypt,
)
from tests.callbacks import task_sends
from tests.factories import AppFactory, CertificateFactory, DomainFactory, RegionFactory

pytestmark = pytest.mark.django_db


def test_create_domain_normalizes_the_name_and_sends_its_first_check_after_commit(
    django_capture_on_commit_callbacks, settings
):
    app = AppFactory()
    now = timezone.now()
    with django_capture_on_commit_callbacks() as callbacks:
        domain = create_domain(app, "  Bücher.Example.COM. ", now=now)
    assert domain.name == "xn--bcher-kva.example.com"
    assert domain.status == DomainStatus.PENDING_DNS
    assert domain.consecutive_failures == 0
    # The creation itself claims the first check; the domain is due again only if it is lost.
    assert domain.claim_token is not None
    assert domain.next_attempt_at == now + datetime.timedelta(seconds=settings.DOMAIN_CHECK_LEASE_SECONDS)
    assert len(task_sends(callbacks)) == 1
    assert [e.to_status for e in domain.events.all()] == [DomainStatus.PENDING_DNS]


def test_without_a_dns01_zone_a_wildcard_is_parked_in_action_required_and_never_checked(
    django_capture_on_commit_callbacks, settings
):
    settings.DNS01_ZONE = ""
    with django_capture_on_commit_callbacks() as callbacks:
        domain = create_domain(AppFactory(), "*.example.com")
    assert domain.status == DomainStatus.ACTION_REQUIRED
    assert "Wildcard certificates need DNS validation" in domain.last_error
    assert "DNS01_ZONE" in domain.last_error
    assert domain.next_attempt_at is None
    assert task_sends(callbacks) == []


def test_with_a_dns01_zone_a_wildcard_is_checked_like_any_name_and_shows_its_delegation(
    django_capture_on_commit_callbacks, settings
):
    settings.DNS01_ZONE = "dns01.example-paas.net"
    with django_capture_on_commit_callbacks() as callbacks:
        domain = create_domain(AppFactory(), "*.example.com")
    assert domain.status == DomainStatus.PENDING_DNS
    assert domain.claim_token is not None and len(task_sends(callbacks)) == 1
    records = dns_records_to_add(domain)
    assert records[0] == f"*.example.com. CNAME {domain.app.default_hostname}."
    assert re.fullmatch(
        r"_acme-challenge\.example\.com\. CNAME [a-z2-7]{32}\.dns01\.example-paas\.net\.", records[1]
    )
    # It depends on the name only (never on an order), one name apart from another.
    assert records[1].split()[-1] == dns01.delegation_target("*.example.com") + "."
    assert dns01.delegation_target("*.example.com") != dns01.delegation_target("*.example.org")


def test_create_domain_without_letsencrypt_is_disabled_and_never_due():
    domain = create_domain(AppFactory(), "shop.example.com", letsencrypt=False)
    assert domain.status == DomainStatus.DISABLED
    assert domain.next_attempt_at is None


def test_a_name_is_first_come_across_the_platform():
    create_domain(AppFactory(), "www.example.com")
    with pytest.raises(DomainNameTaken, match=r"www\.example\.com is already in use by another app"):
        create_domain(AppFactory(), "WWW.example.com.")
    assert Domain.objects.filter(name="www.example.com").count() == 1


def test_names_under_a_region_suffix_or_its_cname_target_belong_to_the_platform():
    region = RegionFactory(domain_suffix="osc-fr1.example-paas.io", cname_target="edge.example-cdn.net")
    app = AppFactory(region=region)
    for name in ("other-app.osc-fr1.example-paas.io", "edge.example-cdn.net"):
        with pytest.raises(InvalidDomainName) as excinfo:
            create_domain(app, name)
        assert excinfo.value.rule == "platform_name"
    assert not Domain.objects.exists()


def test_database_refuses_an_uppercase_name_written_around_the_service():
    app = AppFactory()
    with pytest.raises(IntegrityError, match="domain_name_lowercase"), transaction.atomic():
        Domain.objects.create(app=app, name="WWW.Example.com")


def test_database_refuses_an_unknown_status():
    with pytest.raises(IntegrityError, match="domain_status_valid"), transaction.atomic():
        DomainFactory(status="issued")


def test_certificate_validity_must_be_ordered():
    with pytest.raises(IntegrityError, match="certificate_validity_ordered"), transaction.atomic():
        now = timezone.now()
        CertificateFactory(not_before=now, not_after=now - datetime.timedelta(days=1))


def test_turning_letsencrypt_off_then_on_resets_the_backoff_and_checks_at_once(
    django_capture_on_commit_callbacks,
):
    domain = DomainFactory(status=DomainStatus.FAILING, consecutive_failures=5, last_error="CA said no")
    now = timezone.now()
    assert set_letsencrypt(domain, False, now=now) is True
    assert (domain.status, domain.next_attempt_at) == (DomainStatus.DISABLED, None)
    assert set_letsencrypt(domain, False, now=now) is False
    with django_capture_on_commit_callbacks() as callbacks:
        assert set_letsencrypt(domain, True, now=now) is True
    assert domain.status == DomainStatus.PENDING_DNS
    assert (domain.consecutive_failures, domain.last_error) == (0, "")
    assert domain.claim_token is not None
    assert len(task_sends(callbacks)) == 1
    assert [e.to_status for e in domain.events.order_by("pk")] == [
        DomainStatus.DISABLED,
        DomainStatus.PENDING_DNS,
    ]


def test_app_default_hostname_is_app_name_under_the_region_suffix():
    app = AppFactory(name="my-app", region=RegionFactory(domain_suffix="osc-fr1.example-paas.io"))
    assert app.default_hostname == "my-app.osc-fr1.example-paas.io"


def test_due_index_is_used_by_the_sweep_query():
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        plan = Domain.objects.filter(
            status__in=[DomainStatus.PENDING_DNS, DomainStatus.FAILING, DomainStatus.ACTION_REQUIRED],
            next_attempt_at__lte=timezone.now(),
        ).explain()
    assert "domain_due_idx" in plan


class TestAdmin:
    @pytest.fixture
    def staff(self, admin_client):
        return admin_client

    def test_every_admin_changelist_renders(self, staff):
        CertificateFactory()
        for path in (
            "/admin/domains/region/",
            "/admin/domains/app/",
            "/admin/domains/domain/",
            "/admin/certificates/certificate/",
            "/admin/certificates/acmeaccount/",
            "/admin/workers/heartbeat/",
            "/admin/django_celery_beat/periodictask/",
        ):
            assert staff.get(path).status_code == 200, path

    def test_certificate_page_never_renders_key_material(self, staff):
        certificate = CertificateFactory(private_key=seal(b"-----BEGIN PRIVATE KEY-----\nsecret\n"))
        for path in (
            f"/admin/certificates/certificate/{certificate.pk}/change/",
            "/admin/certificates/certificate/",
        ):
            body = staff.get(path).content.decode()
            assert "PRIVATE KEY" not in body
            assert "gAAAAA" not in body
            assert certificate.private_key.token not in body

    def test_adding_a_domain_in_the_admin_normalizes_it_and_schedules_its_check(self, staff):
        app = AppFactory()
        response = staff.post(
            "/admin/domains/domain/add/", {"app": app.pk, "name": "Faß.DE", "letsencrypt_enabled": "on"}
        )
        assert response.status_code == 302, response.content.decode()[:2000]
        domain = Domain.objects.get()
        assert domain.name == "xn--fa-hia.de"
        assert domain.next_attempt_at is not None

    def test_admin_rejects_a_bad_name_with_the_rule_in_words_and_saves_nothing(self, staff):
        app = AppFactory()
        response = staff.post("/admin/domains/domain/add/", {"app": app.pk, "name": "192.0.2.1"})
        assert response.status_code == 200
        assert "is an IP address" in response.content.decode()
        assert not Domain.objects.exists()


def test_retry_now_resets_the_backoff_and_checks_at_once(django_capture_on_commit_callbacks):
    later = timezone.now() + datetime.timedelta(hours=5)
    domain = DomainFactory(status=DomainStatus.FAILING, consecutive_failures=9, next_attempt_at=later)
    with django_capture_on_commit_callbacks() as callbacks:
        assert retry_now(domain) == f"{domain.name}: checking now"
    domain.refresh_from_db()
    assert domain.consecutive_failures == 0
    assert domain.claim_token is not None
    assert domain.next_attempt_at < later
    assert len(task_sends(callbacks)) == 1


def test_retry_now_on_a_domain_in_use_without_a_certificate_does_nothing():
    domain = DomainFactory(status=DomainStatus.IN_USE)
    assert retry_now(domain) == f"{domain.name}: nothing to retry (In use)"


class TestRecordsToAdd:
    def test_a_subdomain_needs_a_cname_to_the_apps_hostname(self):
        domain = DomainFactory(name="shop.example.com")
        assert dns_records_to_add(domain) == [f"shop.example.com. CNAME {domain.app.default_hostname}."]

    def test_an_apex_needs_the_ingress_addresses(self):
        domain = DomainFactory(name="example.org")
        assert dns_records_to_add(domain) == [
            "example.org. A 192.0.2.10",
            "example.org. A 192.0.2.11",
            "example.org. AAAA 2001:db8::10",
        ]

    def test_the_admin_page_shows_them(self, admin_client):
        domain = DomainFactory(name="shop.example.com")
        body = admin_client.get(f"/admin/domains/domain/{domain.pk}/change/").content.decode()
        assert f"shop.example.com. CNAME {domain.app.default_hostname}." in body
