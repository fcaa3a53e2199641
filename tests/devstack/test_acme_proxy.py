"""The test ACME proxy (devstack/acme_proxy.py) against the real Pebble, through the `acme` library
with real accounts at the proxy: what it adds (ARI, profiles, `replaces`, pauses, 429s) behaves as
Let's Encrypt's does, and what it forwards is Pebble's. DNS-01 through challtestsrv, so no web
server is needed."""

from __future__ import annotations

import datetime
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import josepy as jose
import pytest
from acme import client, crypto_util, messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from certificates.acme_client import client_for, get_account
from certificates.facts import renewal_info_id
from certificates.models import AcmeAccount, Certificate
from devstack.acme_account_keys import from_database
from devstack.acme_proxy import MAX_HEAD_BYTES, AcmeProxy, ProxyControl, default_window
from domains.models import DomainStatus
from domains.services import create_domain
from tests.conftest import celery_subprocess_env
from tests.integration.pointing import point_at_platform
from tests.integration.polling import status_of, unique_name, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent.parent
HOUR = datetime.timedelta(hours=1)


class _NewOrder(messages.NewOrder):
    """newOrder with RFC 9773's `replaces`, which the library's message lacks."""

    replaces: str | None = jose.field("replaces", omitempty=True)


class _Network(client.ClientNetwork):
    """The library's network, raising a 409's problem document (alreadyReplaced) as the problem: the
    library itself raises a bare ConflictError for any 409, as for an account that exists."""

    @classmethod
    def _check_response(cls, response, content_type=None):
        if response.status_code == 409 and response.headers.get("Content-Type") == "application/problem+json":
            raise messages.Error.from_json(response.json())
        return super()._check_response(response, content_type=content_type)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def _name() -> str:
    return f"proxy-{uuid.uuid4().hex[:10]}.example.com"


class AcmeUser:
    """An ACME account at the proxy, issuing over DNS-01 (challtestsrv answers Pebble)."""

    def __init__(self, proxy: AcmeProxy, ca_path: Path, challtestsrv, keys: dict[str, jose.JWK]) -> None:
        self.key = jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
        self.challtestsrv = challtestsrv
        net = _Network(self.key, alg=jose.ES256, verify_ssl=str(ca_path), user_agent="proxy-test")
        self.client = client.ClientV2(client.ClientV2.get_directory(proxy.directory_url, net), net)
        registration = self.client.new_account(
            messages.NewRegistration.from_data(terms_of_service_agreed=True)
        )
        self.kid = registration.uri
        keys[self.kid] = self.key

    def order(self, names: list[str], profile: str | None = None, replaces: str | None = None):
        key_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        csr_pem = crypto_util.make_csr(key_pem, names)
        body = _NewOrder(
            identifiers=[messages.Identifier(typ=messages.IDENTIFIER_FQDN, value=name) for name in names],
            profile=profile,
            replaces=replaces,
        )
        response = self.client._post(self.client.directory["newOrder"], body)
        order = messages.Order.from_json(response.json())
        authorizations = [
            self.client._authzr_from_response(self.client._post_as_get(url), uri=url)
            for url in order.authorizations
        ]
        resource = messages.OrderResource(
            body=order, uri=response.headers.get("Location"), authorizations=authorizations, csr_pem=csr_pem
        )
        return resource, response.json()

    def issue(
        self, names: list[str], profile: str | None = None, replaces: str | None = None
    ) -> x509.Certificate:
        """The leaf of a certificate for `names`, downloaded (so the proxy saw it)."""
        resource, _ = self.order(names, profile, replaces)
        for authz in resource.authorizations:
            challenge = next(c for c in authz.body.challenges if c.chall.typ == "dns-01")
            self.challtestsrv.set_txt(
                f"_acme-challenge.{authz.body.identifier.value}", challenge.chall.validation(self.key)
            )
            self.client.answer_challenge(challenge, challenge.chall.response(self.key))
        done = self.client.poll_and_finalize(
            resource, datetime.datetime.now() + datetime.timedelta(seconds=60)
        )
        return x509.load_pem_x509_certificates(done.fullchain_pem.encode())[0]


@pytest.fixture
def keys() -> dict[str, jose.JWK]:
    return {}


@pytest.fixture
def proxy(pebble_stack, keys):
    with AcmeProxy.in_front_of(pebble_stack, account_key=keys.get) as proxy:
        yield proxy


@pytest.fixture
def user(proxy, pebble_stack, keys):
    def make() -> AcmeUser:
        return AcmeUser(proxy, pebble_stack.listener_ca_path, pebble_stack.challtestsrv, keys)

    return make


@pytest.fixture
def http(pebble_stack):
    with httpx.Client(verify=pebble_stack.ssl_context(), timeout=10) as http:
        yield http


# The directory.


def test_the_directory_offers_renewal_info_on_the_proxy_and_the_profiles(proxy, http):
    directory = http.get(proxy.directory_url).json()
    assert directory["renewalInfo"] == f"{proxy.base_url}/renewal-info"
    assert set(directory["meta"]["profiles"]) == {"classic", "tlsserver", "shortlived"}
    assert "160 hours" in directory["meta"]["profiles"]["shortlived"]
    # The rest is Pebble's, naming the proxy.
    assert directory["newOrder"] == f"{proxy.base_url}/order-plz"
    assert directory["meta"]["termsOfService"]


def test_the_directory_has_neither_when_switched_off_at_run_time(proxy, http):
    proxy.ari_enabled = False
    proxy.profiles = {}
    directory = http.get(proxy.directory_url).json()
    assert "renewalInfo" not in directory
    assert "profiles" not in directory.get("meta", {})
    assert http.get(f"{proxy.renewal_info_url}/AAAA.AAAA").status_code == 404


# renewalInfo.


def test_renewal_info_answers_the_default_window_of_a_certificate_it_saw_issued(proxy, user, http):
    alice = user()
    leaf = alice.issue([_name()])
    cert_id = renewal_info_id(leaf)
    seen = proxy.certificate(cert_id)
    assert seen is not None and seen.account == alice.kid and seen.serial == format(leaf.serial_number, "x")
    response = http.get(f"{proxy.renewal_info_url}/{cert_id}")
    assert response.status_code == 200
    assert response.headers["Retry-After"] == "21600"
    window = response.json()["suggestedWindow"]
    start, end = default_window(leaf.not_valid_before_utc, leaf.not_valid_after_utc)
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    # Pebble's 90 days: from day 60, for 10 days.
    assert lifetime > datetime.timedelta(days=89)
    assert window == {
        "start": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "end": end.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    assert abs((start - leaf.not_valid_before_utc) - lifetime * 2 / 3) < datetime.timedelta(seconds=1)
    assert "explanationURL" not in response.json()
    # The acme library computes the same certID and reads the window.
    renew_at, _ = alice.client.renewal_time(leaf.public_bytes(serialization.Encoding.PEM))
    assert start <= renew_at <= end
    assert proxy.renewal_info_served_for(cert_id) == 2


def test_a_revoked_certificates_window_is_in_the_past_as_boulder_answers(proxy, user, http):
    alice = user()
    leaf = alice.issue([_name()])
    alice.client.revoke(leaf, 1)
    window = http.get(f"{proxy.renewal_info_url}/{renewal_info_id(leaf)}").json()["suggestedWindow"]
    assert window["end"] < _now().strftime("%Y-%m-%dT%H:%M:%SZ")
    assert proxy.certificate(renewal_info_id(leaf)).revoked


def test_a_short_certificates_default_window_starts_at_half_its_lifetime():
    not_before = _now()
    start, end = default_window(not_before, not_before + datetime.timedelta(hours=160))
    assert start == not_before + datetime.timedelta(hours=80)
    assert not_before + datetime.timedelta(hours=80) < end < not_before + datetime.timedelta(hours=160)


def test_a_per_certificate_window_wins_over_a_moved_one_which_wins_over_the_default(proxy, user, http):
    alice = user()
    first, second = (renewal_info_id(alice.issue([_name()])) for _ in range(2))
    moved_start, own_start = _now() - 2 * HOUR, _now() + 5 * HOUR
    proxy.move_all_windows(moved_start, moved_start + HOUR, "https://example.com/incident")
    proxy.set_window(second, own_start, own_start + HOUR)
    moved = http.get(f"{proxy.renewal_info_url}/{first}").json()
    own = http.get(f"{proxy.renewal_info_url}/{second}").json()
    assert moved == {
        "suggestedWindow": {
            "start": moved_start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "end": (moved_start + HOUR).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        "explanationURL": "https://example.com/incident",
    }
    assert own == {
        "suggestedWindow": {
            "start": own_start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "end": (own_start + HOUR).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    }
    proxy.reset_windows()
    default = http.get(f"{proxy.renewal_info_url}/{first}").json()["suggestedWindow"]
    assert default["start"] > (_now() + datetime.timedelta(days=50)).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_moved_window_is_for_the_certificates_issued_before_the_move_not_their_replacements(
    proxy, user, http
):
    alice = user()
    before = renewal_info_id(alice.issue([_name()]))
    moved_start = _now() - 2 * HOUR
    proxy.move_all_windows(moved_start, moved_start + HOUR)
    after = renewal_info_id(alice.issue([_name()]))
    moved = http.get(f"{proxy.renewal_info_url}/{before}").json()["suggestedWindow"]
    default = http.get(f"{proxy.renewal_info_url}/{after}").json()["suggestedWindow"]
    assert moved["start"] == moved_start.strftime("%Y-%m-%dT%H:%M:%SZ")
    # A replacement issued after the drill's move is not told to renew at once again.
    assert default["start"] > (_now() + datetime.timedelta(days=50)).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_renewal_info_of_an_unknown_certificate_is_a_404_and_of_a_malformed_id_a_400(proxy, http):
    unknown = http.get(f"{proxy.renewal_info_url}/aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE")
    assert unknown.status_code == 404
    assert unknown.json()["type"] == "urn:ietf:params:acme:error:malformed"
    for bad in ("no-dot", "a.b.c", "a=.AAAA", "AAAA.", ".AAAA", "A.AAAA", "AAAA.AAAA/x", "x" * 300 + ".AA"):
        response = http.get(f"{proxy.renewal_info_url}/{bad}")
        assert response.status_code == 400, bad
        assert response.json()["type"] == "urn:ietf:params:acme:error:malformed"
    assert http.post(f"{proxy.renewal_info_url}/AAAA.AAAA").status_code == 405


def test_answer_unknown_gives_well_formed_unknown_ids_a_window_instead_of_a_404(proxy, http):
    start = _now()
    proxy.answer_unknown(start, start + HOUR)
    response = http.get(f"{proxy.renewal_info_url}/AAAA.AAAB")
    assert response.status_code == 200
    assert response.json()["suggestedWindow"]["start"] == start.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert http.get(f"{proxy.renewal_info_url}/AAAA").status_code == 400
    proxy.answer_unknown(None)
    assert http.get(f"{proxy.renewal_info_url}/AAAA.AAAB").status_code == 404


def test_retry_after_and_injected_failures_are_what_the_test_set(proxy, http):
    proxy.answer_unknown(_now(), _now() + HOUR)
    proxy.retry_after = 60
    assert http.get(f"{proxy.renewal_info_url}/AAAA.AAAA").headers["Retry-After"] == "60"
    proxy.fail_renewal_info(status=503, times=2, retry_after=30)
    answers = [http.get(f"{proxy.renewal_info_url}/AAAA.AAAA") for _ in range(3)]
    assert [answer.status_code for answer in answers] == [503, 503, 200]
    assert answers[0].json()["type"] == "urn:ietf:params:acme:error:serverInternal"
    assert [answer.headers["Retry-After"] for answer in answers] == ["30", "30", "60"]
    proxy.fail_renewal_info(status=429)
    assert http.get(f"{proxy.renewal_info_url}/AAAA.AAAA").json()["type"].endswith(":rateLimited")
    assert proxy.renewal_info_served_for("AAAA.AAAA") == 5
    assert proxy.renewal_info_served == 5


def test_renewal_info_is_served_over_one_kept_alive_connection(proxy, pebble_stack):
    proxy.answer_unknown(_now(), _now() + HOUR)
    context = ssl.create_default_context(cafile=str(pebble_stack.listener_ca_path))
    with socket.create_connection(("127.0.0.1", proxy.port)) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            # Three requests in one write (pipelined), answered in order on the same connection.
            tls.sendall(
                b"".join(
                    f"GET /renewal-info/AAAA.AAA{c} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
                    for c in "ABC"
                )
            )
            received = b""
            while received.count(b"HTTP/1.1 200") < 3 or not received.endswith(b"}"):
                received += tls.recv(65536)
    assert received.count(b"HTTP/1.1 200 OK") == 3
    assert [proxy.renewal_info_served_for(f"AAAA.AAA{c}") for c in "ABC"] == [1, 1, 1]


def _raw_exchange(proxy: AcmeProxy, pebble_stack, data: bytes) -> bytes:
    context = ssl.create_default_context(cafile=str(pebble_stack.listener_ca_path))
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(data)
            received = b""
            while chunk := tls.recv(65536):
                received += chunk
    return received


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"NONSENSE\r\n\r\n", b"400"),
        (b"GET //example.com/dir HTTP/1.1\r\n\r\n", b"400"),
        (b"GET /dir HTTP/2.0\r\n\r\n", b"505"),
        (b"GET /dir HTTP/1.1\r\nX: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n", b"431"),
        (b"POST /order-plz HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", b"411"),
        (b"POST /order-plz HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", b"413"),
        (b"POST /order-plz HTTP/1.1\r\nContent-Length: -1\r\n\r\n", b"400"),
    ],
    ids=["request-line", "absolute-target", "version", "head-size", "chunked", "body-size", "content-length"],
)
def test_a_request_the_proxy_cannot_read_gets_a_4xx_and_the_connection_closed(
    proxy, pebble_stack, request_bytes, status
):
    received = _raw_exchange(proxy, pebble_stack, request_bytes)
    assert received.startswith(b"HTTP/1.1 " + status)
    assert b"Connection: close" in received


# Profiles.


@pytest.mark.parametrize(
    ("profile", "lifetime"),
    [("shortlived", datetime.timedelta(hours=160)), ("tlsserver", datetime.timedelta(days=45))],
)
def test_a_profile_order_gets_a_certificate_of_the_profiles_lifetime_from_pebble(
    proxy, user, profile, lifetime
):
    alice = user()
    leaf = alice.issue([_name()], profile=profile)
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == lifetime
    assert abs(leaf.not_valid_before_utc - _now()) < datetime.timedelta(minutes=2)
    assert proxy.orders[-1]["profile"] == profile


def test_the_order_says_its_profile_and_what_it_replaces(proxy, user):
    alice = user()
    name = _name()
    old = renewal_info_id(alice.issue([name]))
    _, created = alice.order([name], profile="shortlived", replaces=old)
    assert created["profile"] == "shortlived" and created["replaces"] == old
    fetched = alice.client._post_as_get(proxy.orders[-1]["url"]).json()
    assert fetched["profile"] == "shortlived" and fetched["replaces"] == old


def test_an_unknown_profile_is_refused_with_invalid_profile_naming_the_offered_ones(proxy, user):
    alice = user()
    with pytest.raises(messages.Error) as refused:
        alice.order([_name()], profile="longlived")
    assert refused.value.typ == "urn:ietf:params:acme:error:invalidProfile"
    assert "'longlived'" in refused.value.detail
    assert "classic, shortlived, tlsserver" in refused.value.detail
    proxy.profiles = {}
    with pytest.raises(messages.Error) as off:
        alice.order([_name()], profile="classic")
    assert off.value.typ == "urn:ietf:params:acme:error:invalidProfile"
    assert proxy.orders == []


def test_a_profile_order_without_an_account_key_callback_is_a_500_saying_so(proxy, user):
    alice = user()
    proxy.account_key = None
    with pytest.raises(messages.Error) as refused:
        alice.order([_name()], profile="shortlived")
    assert refused.value.typ == "urn:ietf:params:acme:error:serverInternal"
    assert "account_key" in refused.value.detail
    # The refusal carried a fresh nonce: the next request of the same client goes through.
    alice.order([_name()])


def test_a_profile_order_whose_jws_cannot_be_signed_again_is_a_400_not_a_500(proxy, user, http):
    alice = user()

    def b64(document: dict) -> str:
        return jose.encode_b64jose(json.dumps(document).encode())

    jws = {
        "protected": b64(
            {"alg": "ES999", "kid": alice.kid, "nonce": "AAAA", "url": f"{proxy.base_url}/order-plz"}
        ),
        "payload": b64({"identifiers": [{"type": "dns", "value": _name()}], "profile": "shortlived"}),
        "signature": "AAAA",
    }
    response = http.post(
        f"{proxy.base_url}/order-plz", json=jws, headers={"Content-Type": "application/jose+json"}
    )
    assert response.status_code == 400
    assert response.json()["type"] == "urn:ietf:params:acme:error:malformed"
    assert "alg" in response.json()["detail"] and response.headers["Replay-Nonce"]


# replaces.


def test_replaces_must_name_a_certificate_this_account_was_issued(proxy, user):
    alice, mallory = user(), user()
    name = _name()
    cert_id = renewal_info_id(alice.issue([name]))
    with pytest.raises(messages.Error) as foreign:
        mallory.order([name], replaces=cert_id)
    assert foreign.value.typ == "urn:ietf:params:acme:error:unauthorized"
    assert "did not request the certificate being replaced" in foreign.value.detail
    with pytest.raises(messages.Error) as unknown:
        alice.order([name], replaces="aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE")
    assert unknown.value.typ == "urn:ietf:params:acme:error:malformed"
    assert "no current certificate" in unknown.value.detail
    with pytest.raises(messages.Error) as malformed:
        alice.order([name], replaces="not-a-cert-id")
    assert malformed.value.typ == "urn:ietf:params:acme:error:malformed"
    with pytest.raises(messages.Error) as other_names:
        alice.order([_name()], replaces=cert_id)
    assert "do not match any identifiers" in other_names.value.detail
    # Only the first issuance's order reached Pebble.
    assert [order["replaces"] for order in proxy.orders] == [""]


def test_a_second_replacement_of_a_replaced_certificate_is_already_replaced(proxy, user):
    alice = user()
    name = _name()
    first = alice.issue([name])
    old = renewal_info_id(first)
    # Orders that name it but are not finalized do not replace it (RFC 9773 section 5).
    alice.order([name], replaces=old)
    renewed = alice.issue([name], replaces=old)
    assert proxy.certificate(old).replaced_by == proxy.orders[-1]["url"]
    with pytest.raises(messages.Error) as again:
        alice.order([name], replaces=old)
    assert again.value.typ == "urn:ietf:params:acme:error:alreadyReplaced"
    assert f'"{first.serial_number:036x}"' in again.value.detail
    # The renewal can itself be replaced.
    alice.issue([name], replaces=renewal_info_id(renewed))
    assert [order["replaces"] for order in proxy.orders] == ["", old, old, renewal_info_id(renewed)]
    # Each order names the certificate it issued (the unfinished one none).
    assert [order["cert_id"] for order in proxy.orders][:3] == [old, "", renewal_info_id(renewed)]
    assert all(order["kid"] == alice.kid and order["identifiers"] == [name] for order in proxy.orders)


# Pauses and 429s.


def test_a_paused_identifier_gets_lets_encrypts_429_with_the_unpause_url_until_unpaused(proxy, user):
    alice, bob = user(), user()
    name = _name()
    url = "https://portal.letsencrypt.org/sfe/v1/unpause?jwt=test.jwt.value"
    proxy.pause(name, url, account=alice.kid)
    with pytest.raises(messages.Error) as paused:
        alice.order([_name(), name])
    assert paused.value.typ == "urn:ietf:params:acme:error:rateLimited"
    assert paused.value.detail == (
        f"Your account is temporarily prevented from requesting certificates for {name} and "
        f"possibly others. Please visit: {url}"
    )
    # Another account is not paused for it.
    bob.order([name])
    proxy.unpause(name)
    alice.order([name])
    assert proxy.new_orders_for(name) == 3
    assert proxy.new_orders_refused == 1


def test_refused_new_orders_get_a_429_with_retry_after_then_pass(proxy, user):
    alice = user()
    proxy.refuse_new_orders("too many new orders recently", retry_after="7", times=1)
    with pytest.raises(messages.Error) as limited:
        alice.order([_name()])
    assert limited.value.typ == "urn:ietf:params:acme:error:rateLimited"
    alice.order([_name()])
    assert (proxy.new_orders_refused, proxy.new_orders_passed) == (1, 1)


def test_a_ca_outage_answers_500_or_nothing_until_it_ends_and_the_control_api_still_answers(proxy, http):
    proxy.outage.start("mixed", seconds=30)
    failed = http.get(proxy.directory_url)
    assert failed.status_code == 500
    assert failed.json()["type"] == "urn:ietf:params:acme:error:serverInternal"
    with pytest.raises(httpx.ReadTimeout):
        http.get(proxy.directory_url, timeout=1)
    assert http.get(f"{proxy.base_url}/_proxy/state").json()["outage"]["mode"] == "mixed"
    http.post(f"{proxy.base_url}/_proxy/outage", json={"mode": "none"})
    assert http.get(proxy.directory_url).status_code == 200


def test_a_ca_outage_ends_by_itself_and_a_request_held_to_its_end_gets_a_504(proxy, http):
    proxy.outage.start("hang", seconds=1)
    assert http.get(proxy.directory_url, timeout=10).status_code == 504
    assert http.get(proxy.directory_url).status_code == 200
    assert proxy.outage.requests_failed == 1


def test_a_renewal_naming_what_it_replaces_once_its_window_opened_is_exempt_from_refusals(proxy, user):
    alice = user()
    name = _name()
    early, due = (renewal_info_id(alice.issue([name])) for _ in range(2))
    proxy.set_window(due, _now() - 2 * HOUR, _now() - HOUR)
    proxy.refuse_new_orders("too many certificates", retry_after="60", times=1)
    # Not yet in its window (the default one, weeks ahead): refused like any order.
    with pytest.raises(messages.Error) as limited:
        alice.order([name], replaces=early)
    assert limited.value.typ == "urn:ietf:params:acme:error:rateLimited"
    proxy.refuse_new_orders("too many certificates", retry_after="60", times=1)
    alice.order([name], replaces=due)
    # The refusal is still there for the next order that is not exempt.
    with pytest.raises(messages.Error):
        alice.order([name])
    proxy.refuse_new_orders("too many certificates", retry_after="60", times=1, exempt_renewals=False)
    with pytest.raises(messages.Error):
        alice.order([name], replaces=due)


# Out of process.


def test_out_of_process_the_proxy_prints_its_directory_and_its_control_api_works(pebble_stack, http):
    process = _start_out_of_process(pebble_stack)
    try:
        directory_url = process.stdout.readline().strip()
        assert directory_url.startswith("https://127.0.0.1:") and directory_url.endswith("/dir")
        assert "renewalInfo" in http.get(directory_url).json()
        control = ProxyControl(directory_url, pebble_stack.listener_ca_path)
        start = _now()
        control.post("answer-unknown", start=start, end=start + HOUR)
        control.post("settings", retry_after=60, profiles={"shortlived": 576000})
        answer = http.get(f"{directory_url[:-4]}/renewal-info/AAAA.AAAA")
        assert answer.status_code == 200 and answer.headers["Retry-After"] == "60"
        assert answer.json()["suggestedWindow"]["start"] == start.strftime("%Y-%m-%dT%H:%M:%SZ")
        state = control.get("state")
        assert state["renewal_info_served"] == 1 and state["profiles"] == {"shortlived": 576000}
        assert control.get("renewal-info-count/AAAA.AAAA") == {"cert_id": "AAAA.AAAA", "count": 1}
        with pytest.raises(ValueError, match="end is before start"):
            control.post("move-all-windows", start=start, end=start - HOUR)
        with pytest.raises(ValueError, match="retry_after"):
            control.post("settings", retry_after="soon")
        with pytest.raises(ValueError, match="404"):
            control.post("no-such-thing")
        bad = http.post(f"{directory_url[:-4]}/_proxy/window", content=b"{not json")
        assert bad.status_code == 400 and bad.json() == {"error": "the body is not JSON"}
        control.close()
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


def test_a_proxy_that_cannot_listen_raises_and_leaves_no_thread_behind(proxy, pebble_stack):
    threads = threading.active_count()
    with pytest.raises(OSError):
        AcmeProxy.in_front_of(pebble_stack, port=proxy.port).start()
    assert threading.active_count() == threads


def _start_out_of_process(pebble_stack, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    tls = pebble_stack.state_dir / "tls"
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "devstack.acme_proxy",
            "--upstream",
            f"127.0.0.1:{pebble_stack.acme_port}",
            "--ca-file",
            str(pebble_stack.listener_ca_path),
            "--cert",
            str(tls / "cert.pem"),
            "--key",
            str(tls / "key.pem"),
            *extra,
        ],
        cwd=ROOT,
        env=env or {**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.django_db(transaction=True)
def test_out_of_process_the_proxy_reads_account_keys_from_certwrights_database(pebble_stack):
    process = _start_out_of_process(
        pebble_stack, "--account-key", "devstack.acme_account_keys:from_database", env=celery_subprocess_env()
    )
    try:
        directory_url = process.stdout.readline().strip()
        account = get_account(directory_url)
        key_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        order = client_for(account).new_order(crypto_util.make_csr(key_pem, [_name()]), profile="shortlived")
        assert order.body.status.name == "pending"
        orders = ProxyControl(directory_url, pebble_stack.listener_ca_path).get("orders")
        assert [(o["kid"], o["profile"], o["url"]) for o in orders] == [
            (account.account_url, "shortlived", order.uri)
        ]
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


def test_the_proxy_stops_with_its_connections_open(pebble_stack, http):
    proxy = AcmeProxy.in_front_of(pebble_stack).start()
    http.get(proxy.directory_url)
    began = time.monotonic()
    proxy.stop()
    assert time.monotonic() - began < 5
    with pytest.raises(httpx.ConnectError):
        httpx.get(proxy.directory_url, verify=pebble_stack.ssl_context(), timeout=2)


def test_a_new_order_the_proxy_cannot_read_gets_pebbles_answer(proxy, http):
    # Not a JWS the proxy can read: Pebble says what is wrong with it.
    response = http.post(
        f"{proxy.base_url}/order-plz",
        content=b'{"protected": "e30", "payload": "", "signature": ""}',
        headers={"Content-Type": "application/jose+json"},
    )
    assert response.status_code == 400
    assert response.json()["type"].startswith("urn:ietf:params:acme:error:")


# The proxied issuance stack (tests/proxied_stack.py).


@pytest.mark.django_db(transaction=True)
def test_the_proxied_stack_issues_through_the_proxy_which_reads_account_keys_from_the_database(
    proxied_issuance, app
):
    proxy = proxied_issuance.proxy
    name = unique_name()
    point_at_platform(proxied_issuance.pebble.challtestsrv, app, name)
    domain = create_domain(app, name)
    wait_for(lambda: status_of(domain) == DomainStatus.IN_USE, timeout=60, what="in_use through the proxy")
    certificate = Certificate.objects.get(domain=domain)
    account = AcmeAccount.objects.get(directory_url=proxy.directory_url)
    seen = proxy.certificate(certificate.ari_cert_id)
    assert seen is not None and seen.account == account.account_url and seen.names == [name]
    assert [(order["kid"], order["identifiers"]) for order in proxy.orders] == [(account.account_url, [name])]
    key = from_database(account.account_url)
    assert key.thumbprint() == jose.JWKEC.load(account.key.reveal()).thumbprint()
    # A profile order signed by the platform's account: the proxy re-signs it with the key it read
    # from the database, and Pebble accepts the signature.
    key_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    order = client_for(account).new_order(crypto_util.make_csr(key_pem, [name]), profile="shortlived")
    assert order.uri == proxy.orders[-1]["url"] and proxy.orders[-1]["profile"] == "shortlived"
