"""Domains through the API: every endpoint's success and error paths, body limits and the write
throttle."""

from __future__ import annotations

import datetime
import json
from urllib.parse import quote

import pytest
from django.utils import timezone

import domains.custom_certificates
from api.serializers import CertificateSerializer, DomainSerializer
from api.throttling import WriteRateThrottle
from certificates.custom import UploadRejected, check_upload
from certificates.models import Certificate, CertificateSource
from domains.models import Domain, DomainEvent, DomainStatus
from domains.names import InvalidDomainName
from domains.services import clean_domain_name
from tests.api.conftest import API
from tests.factories import AppFactory, CertificateFactory, DomainFactory

pytestmark = pytest.mark.django_db

DOMAINS = f"{API}/apps/shop/domains"
WWW = f"{DOMAINS}/www.example.com"
DAY = datetime.timedelta(days=1)
# What the schema promises: the presenter must give exactly the serializer's fields.
DOMAIN_FIELDS = set(DomainSerializer().fields)


def in_use(app, name: str = "www.example.com") -> Domain:
    """A domain served with a valid Let's Encrypt certificate."""
    domain = DomainFactory(app=app, name=name, status=DomainStatus.IN_USE)
    CertificateFactory(domain=domain, not_before=timezone.now() - DAY)
    return domain


def all_pages(client, url: str) -> list[dict]:
    """The results of every page, following `next` from `url`."""
    results = []
    while url:
        response = client.get(url)
        assert response.status_code == 200, response.content
        results += response.json()["results"]
        url = response.json()["next"]
    return results


# --- listing -------------------------------------------------------------------------------------


def test_a_lets_encrypt_certificate_shows_its_renewal_time_and_the_cas_renewal_window(alice_api, shop):
    domain = DomainFactory(app=shop, name="www.example.com", status=DomainStatus.IN_USE)
    start = datetime.datetime(2031, 3, 1, tzinfo=datetime.UTC)
    CertificateFactory(
        domain=domain,
        not_before=timezone.now() - DAY,
        renew_at=start + datetime.timedelta(hours=7, seconds=30),
        ari_window_start=start,
        ari_window_end=start + 2 * DAY,
        ari_explanation_url="https://ca.example/incident",
        ari_checked_at=start - 30 * DAY,
        ari_next_check=start - 29 * DAY,
        ari_error="",
    )

    certificate = alice_api.get(WWW).json()["certificate"]

    assert certificate["renew_at"] == "2031-03-01T07:00:30Z"
    assert certificate["ari"] == {
        "window_start": "2031-03-01T00:00:00Z",
        "window_end": "2031-03-03T00:00:00Z",
        "explanation_url": "https://ca.example/incident",
        "checked_at": "2031-01-30T00:00:00Z",
        "next_check": "2031-01-31T00:00:00Z",
        "error": "",
    }
    assert set(certificate) == set(CertificateSerializer().fields)


def test_a_custom_certificate_has_no_renewal_information(alice_api, shop):
    domain = DomainFactory(app=shop, name="www.example.com", status=DomainStatus.NOT_USED)
    CertificateFactory(
        domain=domain, source=CertificateSource.CUSTOM, not_before=timezone.now() - DAY, renew_at=None
    )

    certificate = alice_api.get(WWW).json()["certificate"]

    assert certificate["source"] == "custom"
    assert (certificate["renew_at"], certificate["ari"]) == (None, None)


def test_listing_domains_gives_them_by_name_with_what_is_served(alice_api, shop):
    in_use(shop, "b.example.com")
    DomainFactory(app=shop, name="a.example.com")

    response = alice_api.get(DOMAINS)

    assert response.status_code == 200
    results = response.json()["results"]
    assert [(d["name"], d["status"]) for d in results] == [
        ("a.example.com", "pending_dns"),
        ("b.example.com", "in_use"),
    ]
    assert results[0]["certificate"] is None
    assert results[1]["certificate"]["source"] == "letsencrypt"
    assert set(results[0]) == DOMAIN_FIELDS


def test_listing_domains_filtered_by_status_gives_only_that_status(alice_api, shop):
    DomainFactory(app=shop, name="a.example.com")
    DomainFactory(app=shop, name="b.example.com", status=DomainStatus.DISABLED, letsencrypt_enabled=False)
    in_use(shop, "c.example.com")

    response = alice_api.get(DOMAINS, {"status": "disabled"})

    assert response.status_code == 200
    assert [d["name"] for d in response.json()["results"]] == ["b.example.com"]


def test_listing_domains_with_an_unknown_status_is_400_naming_the_statuses(alice_api, shop):
    response = alice_api.get(DOMAINS, {"status": "broken"})

    assert response.status_code == 400
    assert response.json() == {"status": [f"one of {', '.join(DomainStatus.values)}"]}


def test_following_next_pages_gives_every_domain_once_in_name_order(alice_api, shop):
    names = sorted(f"site{i:02}.example.com" for i in range(25))
    for name in names:
        DomainFactory(app=shop, name=name)

    first = alice_api.get(DOMAINS, {"page_size": 10})
    results = all_pages(alice_api, f"{DOMAINS}?page_size=10")

    assert len(first.json()["results"]) == 10
    assert [d["name"] for d in results] == names


# --- creating ------------------------------------------------------------------------------------


def test_adding_a_domain_answers_201_with_the_domain_pending_its_dns_check(alice_api, shop):
    response = alice_api.post(DOMAINS, {"name": "WWW.Example.com."}, format="json")

    assert response.status_code == 201
    body = response.json()
    assert set(body) == DOMAIN_FIELDS
    assert body["name"] == "www.example.com"
    assert body["app"] == "shop"
    assert body["status"] == "pending_dns"
    assert body["letsencrypt"] is True
    assert body["custom_certificate"] is False
    assert body["certificate"] is None
    assert body["dns"]["records"] == ["www.example.com. CNAME shop.osc-fr1.example-paas.io."]
    assert body["quota"]["registered_domain"] == "example.com"
    assert Domain.objects.get(name="www.example.com").app == shop


def test_adding_a_wildcard_lists_its_cname_and_its_dns01_delegation_to_add(alice_api, shop):
    from certificates import dns01

    response = alice_api.post(DOMAINS, {"name": "*.example.com"}, format="json")

    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "pending_dns"
    assert body["dns"]["records"] == [
        "*.example.com. CNAME shop.osc-fr1.example-paas.io.",
        f"_acme-challenge.example.com. CNAME {dns01.delegation_target('*.example.com')}.",
    ]


def test_adding_a_domain_with_letsencrypt_off_leaves_it_disabled(alice_api, shop):
    response = alice_api.post(DOMAINS, {"name": "www.example.com", "letsencrypt": False}, format="json")

    assert response.status_code == 201
    assert response.json()["status"] == "disabled"
    assert response.json()["dns"]["ok"] is None


@pytest.mark.parametrize(
    "name",
    ["192.0.2.1", "shop.osc-fr1.example-paas.io", "localhost", "bücher.example", "a..example.com"],
    ids=["ip", "platform", "single-label", "unknown-tld", "empty-label"],
)
def test_adding_a_bad_name_is_400_with_the_normalizers_message(alice_api, shop, name):
    with pytest.raises(InvalidDomainName) as rejected:
        clean_domain_name(name)

    response = alice_api.post(DOMAINS, {"name": name}, format="json")

    assert response.status_code == 400
    assert response.json() == {"name": [str(rejected.value)]}
    assert not Domain.objects.exists()


def test_adding_a_name_another_users_app_has_is_409_saying_nothing_of_that_app(alice_api, shop, bob, region):
    DomainFactory(app__owner=bob, app__name="bobs-app", name="www.example.com")

    response = alice_api.post(DOMAINS, {"name": "www.example.com"}, format="json")

    assert response.status_code == 409
    assert response.json() == {"detail": "www.example.com is already in use by another app"}
    assert "bob" not in response.content.decode()


def test_adding_a_name_the_app_already_has_is_409_already_a_domain_of_it(alice_api, shop):
    DomainFactory(app=shop, name="www.example.com")

    response = alice_api.post(DOMAINS, {"name": "www.example.com"}, format="json")

    assert response.status_code == 409
    assert response.json() == {"detail": "www.example.com is already a domain of shop"}


def test_adding_a_domain_beyond_app_domain_limit_is_409_naming_the_limit(alice_api, shop, settings):
    settings.APP_DOMAIN_LIMIT = 2
    DomainFactory.create_batch(2, app=shop)

    response = alice_api.post(DOMAINS, {"name": "third.example.com"}, format="json")

    assert response.status_code == 409
    assert response.json() == {
        "detail": "shop already has 2 domains, the most an app may have (APP_DOMAIN_LIMIT)"
    }
    assert not Domain.objects.filter(name="third.example.com").exists()


def test_adding_a_domain_with_a_valid_certificate_serves_it_as_custom(alice_api, shop, upload):
    fields = upload("www.example.com")

    response = alice_api.post(DOMAINS, {"name": "www.example.com", **fields}, format="json")

    assert response.status_code == 201
    body = response.json()
    assert body["custom_certificate"] is True
    assert body["certificate"]["source"] == "custom"
    assert body["certificate"]["sans"] == ["www.example.com"]
    stored = Certificate.objects.get(domain__name="www.example.com")
    assert body["certificate"]["fingerprint_sha256"] == stored.fingerprint_sha256


def test_adding_a_domain_with_an_encrypted_key_and_its_passphrase_serves_it(alice_api, shop, upload):
    fields = upload("www.example.com", passphrase="s3cret passphrase")

    response = alice_api.post(DOMAINS, {"name": "www.example.com", **fields}, format="json")

    assert response.status_code == 201
    assert response.json()["certificate"]["source"] == "custom"


def _mismatched_key(upload) -> dict:
    return {**upload("www.example.com"), "tlskey": upload("www.example.com")["tlskey"]}


def _wrong_passphrase(upload) -> dict:
    return {**upload("www.example.com", passphrase="right one"), "tlskey_passphrase": "wrong one"}


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda upload: upload("other.example.com"), "tlscert"),
        (_mismatched_key, "tlskey"),
        (lambda upload: {**upload("www.example.com"), "tlscert": "not a certificate"}, "tlscert"),
        (lambda upload: {**upload("www.example.com"), "tlskey": "not a key"}, "tlskey"),
        (_wrong_passphrase, "tlskey_passphrase"),
    ],
    ids=["not-covering", "key-mismatch", "garbage-cert", "garbage-key", "wrong-passphrase"],
)
def test_adding_a_domain_with_a_rejected_certificate_is_400_and_adds_nothing(
    alice_api, shop, upload, make, field
):
    fields = make(upload)
    with pytest.raises(UploadRejected) as rejected:
        check_upload(
            "www.example.com",
            fields["tlscert"].encode(),
            key=fields["tlskey"].encode(),
            passphrase=fields.get("tlskey_passphrase"),
        )

    response = alice_api.post(DOMAINS, {"name": "www.example.com", **fields}, format="json")

    assert response.status_code == 400
    assert response.json() == {field: [str(rejected.value)]}
    assert not Domain.objects.exists()
    assert not DomainEvent.objects.exists()
    assert not Certificate.objects.exists()


def test_adding_a_domain_with_a_key_but_no_certificate_is_400(alice_api, shop, upload):
    response = alice_api.post(
        DOMAINS, {"name": "www.example.com", "tlskey": upload("www.example.com")["tlskey"]}, format="json"
    )

    assert response.status_code == 400
    assert response.json() == {"tlscert": ["a key or passphrase was given without tlscert"]}
    assert not Domain.objects.exists()


def test_adding_a_domain_with_a_certificate_but_no_key_is_400(alice_api, shop, upload):
    response = alice_api.post(
        DOMAINS, {"name": "www.example.com", "tlscert": upload("www.example.com")["tlscert"]}, format="json"
    )

    assert response.status_code == 400
    assert response.json() == {"tlskey": ["tlscert needs its private key (tlskey)"]}


def test_a_certificate_longer_than_64_kib_is_400_before_anything_parses_it(alice_api, shop, monkeypatch):
    parsed = []
    monkeypatch.setattr(
        domains.custom_certificates, "check_upload", lambda *args, **kwargs: parsed.append(args)
    )

    response = alice_api.post(
        DOMAINS, {"name": "www.example.com", "tlscert": "x" * 65537, "tlskey": "key"}, format="json"
    )

    assert response.status_code == 400
    assert response.json() == {"tlscert": ["Ensure this field has no more than 65536 characters."]}
    assert parsed == []
    assert not Domain.objects.exists()


# --- showing and changing ------------------------------------------------------------------------


def test_showing_a_domain_gives_it(alice_api, shop):
    in_use(shop)

    response = alice_api.get(WWW)

    assert response.status_code == 200
    assert response.json()["name"] == "www.example.com"
    assert response.json()["status"] == "in_use"
    assert response.json()["certificate"]["source"] == "letsencrypt"


def test_showing_an_unknown_or_invalid_domain_is_404(alice_api, shop):
    assert alice_api.get(f"{DOMAINS}/nope.example.com").json() == {
        "detail": "no domain nope.example.com on shop"
    }
    assert alice_api.get(f"{DOMAINS}/not a name").status_code == 404


def test_a_unicode_name_in_the_url_finds_its_a_label_domain(alice_api, shop):
    created = alice_api.post(DOMAINS, {"name": "Bücher.Example.com"}, format="json")
    assert created.status_code == 201
    assert created.json()["name"] == "xn--bcher-kva.example.com"
    assert created.json()["unicode_name"] == "bücher.example.com"

    for spelling in ["bücher.example.com", quote("bücher.example.com"), "xn--bcher-kva.example.com"]:
        response = alice_api.get(f"{DOMAINS}/{spelling}")
        assert response.status_code == 200, spelling
        assert response.json()["name"] == "xn--bcher-kva.example.com"


def test_uploading_a_certificate_with_patch_serves_it_instead_of_lets_encrypt(alice_api, shop, upload):
    in_use(shop)
    fields = upload("www.example.com")

    response = alice_api.patch(WWW, fields, format="json")

    assert response.status_code == 200
    body = response.json()
    assert body["certificate"]["source"] == "custom"
    assert body["custom_certificate"] is True
    assert body["status"] == "not_used"


def test_a_rejected_patch_upload_is_400_and_keeps_what_was_served(alice_api, shop, upload):
    in_use(shop)

    response = alice_api.patch(WWW, upload("other.example.com"), format="json")

    assert response.status_code == 400
    assert list(response.json()) == ["tlscert"]
    assert not Certificate.objects.filter(source=CertificateSource.CUSTOM).exists()
    assert Domain.objects.get(name="www.example.com").status == DomainStatus.IN_USE


def test_turning_lets_encrypt_off_with_patch_disables_the_domain(alice_api, shop):
    DomainFactory(app=shop, name="www.example.com")

    response = alice_api.patch(WWW, {"letsencrypt": False}, format="json")

    assert response.status_code == 200
    assert response.json()["status"] == "disabled"
    assert response.json()["letsencrypt"] is False
    assert Domain.objects.get(name="www.example.com").status == DomainStatus.DISABLED


def test_moving_a_domain_to_another_app_is_400_for_a_non_staff_user(alice_api, alice, shop, region):
    AppFactory(owner=alice, region=region, name="blog")
    DomainFactory(app=shop, name="www.example.com")

    response = alice_api.patch(WWW, {"app": "blog"}, format="json")

    assert response.status_code == 400
    assert response.json() == {"app": ["only staff can move a domain to another app"]}
    assert Domain.objects.get(name="www.example.com").app == shop


def test_staff_move_a_domain_to_another_app(client_for, staff, shop, bob, region):
    target = AppFactory(owner=bob, region=region, name="blog")
    DomainFactory(app=shop, name="www.example.com")

    response = client_for(staff).patch(WWW, {"app": "blog"}, format="json")

    assert response.status_code == 200
    assert response.json()["app"] == "blog"
    assert Domain.objects.get(name="www.example.com").app == target
    assert DomainEvent.objects.filter(reason="moved from app shop to app blog").exists()


def test_staff_moving_a_domain_to_an_unknown_app_is_400(client_for, staff, shop):
    DomainFactory(app=shop, name="www.example.com")

    response = client_for(staff).patch(WWW, {"app": "nope"}, format="json")

    assert response.status_code == 400
    assert response.json() == {"app": ["no app named nope"]}


def test_a_patch_refused_because_the_target_app_is_full_changes_nothing(
    client_for, staff, shop, bob, region, upload, settings
):
    settings.APP_DOMAIN_LIMIT = 1
    DomainFactory(app=AppFactory(owner=bob, region=region, name="blog"), name="blog.example.com")
    DomainFactory(app=shop, name="www.example.com")

    response = client_for(staff).patch(
        WWW, {"letsencrypt": False, **upload("www.example.com"), "app": "blog"}, format="json"
    )

    assert response.status_code == 409
    assert response.json() == {
        "detail": "blog already has 1 domains, the most an app may have (APP_DOMAIN_LIMIT)"
    }
    domain = Domain.objects.get(name="www.example.com")
    assert domain.app == shop
    assert (domain.letsencrypt_enabled, domain.status) == (True, DomainStatus.PENDING_DNS)
    assert not Certificate.objects.filter(domain=domain).exists()


def test_deleting_a_domain_removes_it_and_its_certificates(alice_api, shop):
    in_use(shop)

    response = alice_api.delete(WWW)

    assert response.status_code == 204
    assert not Domain.objects.exists()
    assert not Certificate.objects.exists()
    assert alice_api.get(WWW).status_code == 404


# --- the custom certificate, retry, events -------------------------------------------------------


def test_deleting_the_custom_certificate_serves_lets_encrypt_again(alice_api, shop, upload):
    in_use(shop)
    assert alice_api.patch(WWW, upload("www.example.com"), format="json").json()["status"] == "not_used"

    response = alice_api.delete(f"{WWW}/certificate")

    assert response.status_code == 200
    body = response.json()
    assert body["certificate"]["source"] == "letsencrypt"
    assert body["custom_certificate"] is False
    assert body["status"] == "in_use"
    assert not Certificate.objects.filter(source=CertificateSource.CUSTOM).exists()


def test_deleting_the_custom_certificate_of_a_domain_without_one_is_404(alice_api, shop):
    in_use(shop)

    response = alice_api.delete(f"{WWW}/certificate")

    assert response.status_code == 404
    assert response.json() == {"detail": "www.example.com has no custom certificate"}
    assert Certificate.objects.count() == 1


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "www.example.com: checking now"),
        (
            {"status": DomainStatus.DISABLED, "letsencrypt_enabled": False},
            "www.example.com: nothing to retry (Disabled)",
        ),
    ],
    ids=["pending-dns", "disabled"],
)
def test_retry_answers_202_with_what_the_service_did(alice_api, shop, fields, message):
    DomainFactory(app=shop, name="www.example.com", **fields)

    response = alice_api.post(f"{WWW}/retry")

    assert response.status_code == 202
    assert response.json() == {"detail": message}


def test_events_are_newest_first_and_pages_give_each_once(alice_api, shop):
    domain = DomainFactory(app=shop, name="www.example.com")
    base = timezone.now()
    # Two ties on `created`: the cursor must neither skip nor repeat them across pages.
    moments = [base, base + DAY, base + DAY, base + DAY, base + 2 * DAY, base + 3 * DAY]
    reasons = []
    for number, moment in enumerate(moments):
        reasons.append(f"event {number}")
        DomainEvent.objects.create(domain=domain, created=moment, to_status="pending_dns", reason=reasons[-1])

    first = alice_api.get(f"{WWW}/events", {"page_size": 2})
    results = all_pages(alice_api, f"{WWW}/events?page_size=2")

    assert [event["reason"] for event in first.json()["results"]] == ["event 5", "event 4"]
    assert [event["reason"] for event in results] == list(reversed(reasons))


# --- bodies --------------------------------------------------------------------------------------


def test_a_json_body_above_api_max_body_bytes_is_413_with_the_limit(alice_api, shop, settings):
    body = json.dumps({"name": "www.example.com", "padding": "x" * settings.API_MAX_BODY_BYTES})

    response = alice_api.post(DOMAINS, body, content_type="application/json")

    assert response.status_code == 413
    assert response.json() == {
        "detail": f"the request body is larger than {settings.API_MAX_BODY_BYTES:,} bytes "
        "(API_MAX_BODY_BYTES), the most the API accepts"
    }
    assert not Domain.objects.exists()


def test_malformed_json_is_400_not_500(alice_api, shop):
    response = alice_api.post(DOMAINS, '{"name": "www.example.com",', content_type="application/json")

    assert response.status_code == 400
    assert response.json()["detail"].startswith("JSON parse error")


# --- the write throttle --------------------------------------------------------------------------


@pytest.fixture
def three_writes_a_minute(monkeypatch):
    # DRF binds THROTTLE_RATES when the throttle class is defined, so override_settings of
    # REST_FRAMEWORK does not reach it: the class attribute is what must change.
    monkeypatch.setattr(WriteRateThrottle, "THROTTLE_RATES", {"write": "3/min"})


def test_the_fourth_write_in_a_minute_with_a_token_is_429(three_writes_a_minute, alice_api, shop):
    DomainFactory(app=shop, name="www.example.com")

    codes = [alice_api.post(f"{WWW}/retry").status_code for _ in range(4)]

    assert codes == [202, 202, 202, 429]


def test_reads_are_never_throttled(three_writes_a_minute, alice_api, shop):
    DomainFactory(app=shop, name="www.example.com")
    for _ in range(4):
        alice_api.post(f"{WWW}/retry")

    codes = {alice_api.get(url).status_code for url in [WWW, DOMAINS, f"{WWW}/events"] * 3}

    assert codes == {200}


def test_another_token_of_the_same_user_has_its_own_write_budget(
    three_writes_a_minute, client_for, alice, shop
):
    DomainFactory(app=shop, name="www.example.com")
    laptop, ci = client_for(alice), client_for(alice)
    for _ in range(3):
        assert laptop.post(f"{WWW}/retry").status_code == 202
    assert laptop.post(f"{WWW}/retry").status_code == 429

    assert ci.post(f"{WWW}/retry").status_code == 202
