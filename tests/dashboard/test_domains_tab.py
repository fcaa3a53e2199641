"""The customers' Domains tab (/apps/<app>/domains/): an app's owner sees each domain in the seed's
words with what to do next and the records to add, and adds, removes, retries, turns Let's Encrypt
off and uploads or removes a custom certificate from files, through the API's services and with the
API's tenancy (another customer's app is a 404)."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from domains.models import Domain, DomainStatus
from tests.factories import AppFactory, DomainFactory, UserFactory
from tests.pki import key_pem, pfx

pytestmark = pytest.mark.django_db


@pytest.fixture
def owner_client(app) -> Client:
    client = Client()
    client.force_login(app.owner)
    return client


def tab(client: Client, app) -> str:
    response = client.get(f"/apps/{app.name}/domains/")
    assert response.status_code == 200
    return response.content.decode()


def test_a_visitor_who_is_not_signed_in_is_sent_to_the_sign_in_page(app):
    response = Client().get(f"/apps/{app.name}/domains/")
    assert response.status_code == 302
    assert response["Location"].startswith(f"/apps/login/?next=/apps/{app.name}/domains/")
    assert Client().get("/apps/login/").status_code == 200


def test_another_customers_app_and_its_domains_are_404_and_untouched(app):
    domain = DomainFactory(app=app, name="shop.example.com")
    stranger = Client()
    stranger.force_login(UserFactory(username="stranger"))
    assert stranger.get(f"/apps/{app.name}/domains/").status_code == 404
    assert stranger.post(f"/apps/{app.name}/domains/{domain.name}/remove").status_code == 404
    assert stranger.post(f"/apps/{app.name}/domains/add", {"name": "evil.example.com"}).status_code == 404
    assert Domain.objects.filter(pk=domain.pk).exists()
    assert not Domain.objects.filter(name="evil.example.com").exists()


def test_adding_a_domain_shows_pending_dns_with_the_records_to_add(owner_client, app, redis_servers):
    response = owner_client.post(f"/apps/{app.name}/domains/add", {"name": "WWW.Example.com."}, follow=True)
    body = response.content.decode()
    domain = Domain.objects.get(name="www.example.com")
    assert domain.app == app and domain.status == DomainStatus.PENDING_DNS
    assert "www.example.com added: Pending DNS." in body
    assert '<span class="cw-badge cw-pending_dns">Pending DNS</span>' in body
    assert "Add the DNS record below at your DNS provider" in body
    assert f"www.example.com. CNAME {app.name}." in body
    assert 'class="cw-secondary cw-copy" data-copy="www.example.com. CNAME' in body


def test_a_name_that_cannot_be_added_says_why_and_adds_nothing(owner_client, app):
    body = owner_client.post(f"/apps/{app.name}/domains/add", {"name": "bad..name"}, follow=True)
    assert "bad..name:" in body.content.decode()
    taken = DomainFactory(name="taken.example.com")
    body = owner_client.post(f"/apps/{app.name}/domains/add", {"name": taken.name}, follow=True)
    assert "taken.example.com" in body.content.decode()
    assert Domain.objects.filter(app=app).count() == 0


def test_a_custom_certificate_from_files_is_applied_at_once_and_removed(
    owner_client, app, pki, trusted, redis_servers
):
    domain = DomainFactory(app=app, name="shop.example.com", status=DomainStatus.PENDING_DNS)
    leaf, key = pki.leaf([domain.name])
    url = f"/apps/{app.name}/domains/{domain.name}/certificate"
    response = owner_client.post(
        url,
        {
            "certificate": SimpleUploadedFile("shop.crt", pki.chain_pem(leaf)),
            "private_key": SimpleUploadedFile("shop.key", key_pem(key)),
        },
        follow=True,
    )
    body = response.content.decode()
    assert "shop.example.com: custom certificate applied, served now until" in body
    assert "your custom certificate, valid until" in body
    assert "Remove the custom certificate" in body
    removed = owner_client.post(f"{url}/remove", follow=True).content.decode()
    assert "shop.example.com: custom certificate removed" in removed
    assert "No certificate served yet." in removed


def test_a_pkcs12_file_with_its_passphrase_is_taken_as_the_api_takes_it(
    owner_client, app, pki, trusted, redis_servers
):
    domain = DomainFactory(app=app, name="shop.example.com", status=DomainStatus.PENDING_DNS)
    leaf, key = pki.leaf([domain.name])
    bundle = pfx(key, leaf, [pki.intermediate], passphrase="open sesame")
    url = f"/apps/{app.name}/domains/{domain.name}/certificate"
    wrong = owner_client.post(
        url, {"certificate": SimpleUploadedFile("shop.pfx", bundle), "passphrase": "wrong"}, follow=True
    ).content.decode()
    assert "nothing uploaded:" in wrong
    assert not domain.certificates.exists()
    right = owner_client.post(
        url, {"certificate": SimpleUploadedFile("shop.pfx", bundle), "passphrase": "open sesame"}, follow=True
    ).content.decode()
    assert "custom certificate applied" in right
    assert domain.certificates.count() == 1


def test_a_file_over_its_cap_is_refused_by_name_before_it_is_parsed(owner_client, app):
    domain = DomainFactory(app=app, name="shop.example.com")
    big = SimpleUploadedFile("big.pem", b"A" * 300_000)
    body = owner_client.post(
        f"/apps/{app.name}/domains/{domain.name}/certificate", {"certificate": big}, follow=True
    ).content.decode()
    assert "nothing uploaded: Certificate: 300,000 bytes; at most 65,536 bytes (64 KiB) are accepted" in body
    assert not domain.certificates.exists()


def test_a_body_declared_over_the_page_cap_is_a_413_before_it_is_read(owner_client, app, settings):
    domain = DomainFactory(app=app, name="shop.example.com")
    # The body is shorter than it claims: reading it would fail in the test client's payload.
    response = owner_client.post(
        f"/apps/{app.name}/domains/{domain.name}/certificate",
        {"certificate": SimpleUploadedFile("shop.pem", b"x")},
        CONTENT_LENGTH=str(settings.PAGE_MAX_BODY_BYTES + 1),
    )
    assert response.status_code == 413
    assert "larger than 1,024 KiB (PAGE_MAX_BODY_BYTES)" in response.content.decode()
    assert not domain.certificates.exists()


def test_lets_encrypt_turned_off_and_on_and_a_domain_removed(owner_client, app, redis_servers):
    domain = DomainFactory(app=app, name="shop.example.com", status=DomainStatus.PENDING_DNS)
    base = f"/apps/{app.name}/domains/{domain.name}"
    owner_client.post(f"{base}/letsencrypt", {})
    domain.refresh_from_db()
    assert not domain.letsencrypt_enabled and domain.status == DomainStatus.DISABLED
    owner_client.post(f"{base}/letsencrypt", {"enabled": "on"})
    domain.refresh_from_db()
    assert domain.letsencrypt_enabled
    body = owner_client.post(f"{base}/remove", follow=True).content.decode()
    assert "shop.example.com removed" in body
    assert not Domain.objects.filter(pk=domain.pk).exists()


def test_each_change_needs_a_post_with_the_csrf_token(app):
    domain = DomainFactory(app=app, name="shop.example.com")
    client = Client(enforce_csrf_checks=True)
    client.force_login(app.owner)
    assert client.get(f"/apps/{app.name}/domains/{domain.name}/remove").status_code == 405
    assert client.post(f"/apps/{app.name}/domains/{domain.name}/remove").status_code == 403
    assert Domain.objects.filter(pk=domain.pk).exists()


def test_the_tab_may_be_framed_only_by_the_origins_configured(owner_client, app, settings):
    assert owner_client.get(f"/apps/{app.name}/domains/")["X-Frame-Options"] == "DENY"
    settings.DOMAINS_TAB_FRAME_ANCESTORS = ["https://dashboard.example-paas.io"]
    response = owner_client.get(f"/apps/{app.name}/domains/")
    assert response["Content-Security-Policy"] == "frame-ancestors 'self' https://dashboard.example-paas.io"
    assert "X-Frame-Options" not in response
    admin = Client().get("/admin/login/")
    assert admin["X-Frame-Options"] == "DENY"


def test_two_apps_of_the_same_name_in_two_regions_are_told_apart_by_region(app):
    other = AppFactory(owner=app.owner, name=app.name)
    client = Client()
    client.force_login(app.owner)
    assert client.get(f"/apps/{app.name}/domains/").status_code == 404
    assert client.get(f"/apps/{app.name}/domains/?region={other.region.name}").status_code == 200


def test_an_app_with_more_domains_than_the_tab_shows_says_how_many_it_leaves_out(
    owner_client, app, monkeypatch, redis_servers
):
    from dashboard import customer_views

    monkeypatch.setattr(customer_views, "TAB_DOMAINS", 2)
    for name in ("a.example.com", "b.example.com", "c.example.com"):
        DomainFactory(app=app, name=name)
    body = tab(owner_client, app)
    assert "The first 2 of 3 domains, by name: the API lists them all." in body
    assert "a.example.com" in body and "c.example.com" not in body


def test_sign_in_is_refused_after_ten_failures_for_one_user_name(app, broker_redis):
    from django.core.cache import cache

    app.owner.set_password("the right passphrase")
    app.owner.save()
    cache.delete_many(
        [f"sign-in-failures:user:{app.owner.username.lower()}", "sign-in-failures:address:127.0.0.1"]
    )
    client = Client()
    for _ in range(10):
        wrong = client.post("/apps/login/", {"username": app.owner.username, "password": "guess"})
        assert wrong.status_code == 200
    refused = client.post(
        "/apps/login/", {"username": app.owner.username, "password": "the right passphrase"}
    )
    assert refused.status_code == 429
    assert "Too many failed sign-ins" in refused.content.decode()
    assert "_auth_user_id" not in client.session
    cache.delete_many(
        [f"sign-in-failures:user:{app.owner.username.lower()}", "sign-in-failures:address:127.0.0.1"]
    )
    signed_in = client.post(
        "/apps/login/", {"username": app.owner.username, "password": "the right passphrase"}
    )
    assert signed_in.status_code == 302


def test_signing_in_leads_to_the_customers_apps_or_straight_to_the_only_one(app):
    client = Client()
    client.force_login(app.owner)
    only = client.get("/apps/")
    assert only.status_code == 302 and only["Location"] == f"/apps/{app.name}/domains/"
    AppFactory(owner=app.owner, name="second-app")
    listed = client.get("/apps/").content.decode()
    assert f"/apps/{app.name}/domains/?region=" in listed and "/apps/second-app/domains/?region=" in listed
    stranger = Client()
    stranger.force_login(UserFactory(username="no-apps"))
    assert "You have no app yet" in stranger.get("/apps/").content.decode()
