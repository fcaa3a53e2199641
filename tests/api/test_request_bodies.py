"""What the API answers to bodies it cannot or will not read, and to requests no view takes: JSON
naming the problem (413, 400, 404, 405), never Django's HTML pages or a 500.

Chunked bodies and bodies refused before they are sent are in test_chunked_bodies.py (real gunicorn).
"""

from __future__ import annotations

import json

import pytest

from api.parsers import MAX_JSON_DEPTH
from domains.models import Domain
from tests.api.conftest import API
from tests.factories import DomainFactory
from tests.pki import der, key_pem, pfx

pytestmark = pytest.mark.django_db

DOMAINS = f"{API}/apps/shop/domains"
PEM_ADVICE = "./certwright domains-ssl converts DER, PKCS#7 and PKCS#12 files to PEM"


@pytest.fixture
def api(alice_api):
    """Alice's client, answering a crash with the server's 500 page rather than raising it."""
    alice_api.raise_request_exception = False
    return alice_api


def nested(depth: int) -> str:
    """A domain body whose name is `depth` levels of arrays and objects deep, the object counted."""
    return '{"name": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}"


def too_large(settings) -> str:
    return (
        f"the request body is larger than {settings.API_MAX_BODY_BYTES:,} bytes (API_MAX_BODY_BYTES), "
        "the most the API accepts"
    )


# --- size ----------------------------------------------------------------------------------------


def test_a_five_megabyte_body_is_a_json_413_naming_the_limit(api, shop, settings):
    body = json.dumps({"name": "www.example.com", "padding": "x" * 5_000_000})

    response = api.post(DOMAINS, body, content_type="application/json")

    assert response.status_code == 413
    assert response.json() == {"detail": too_large(settings)}
    assert not Domain.objects.exists()


def test_a_declared_length_over_the_limit_is_refused_without_reading_the_body(api, shop, settings):
    # The body is shorter than it claims: reading it would fail in the test client's payload.
    response = api.post(
        DOMAINS, '{"name": "www.example.com"}', content_type="application/json", CONTENT_LENGTH="5000000"
    )

    assert response.status_code == 413
    assert response.json() == {"detail": too_large(settings)}


# --- bodies that cannot be read ------------------------------------------------------------------


def test_a_body_nested_far_deeper_than_the_limit_is_a_400_naming_its_depth(api, shop, settings):
    body = nested(100_000)
    assert len(body) < settings.API_MAX_BODY_BYTES

    response = api.post(DOMAINS, body, content_type="application/json")

    assert response.status_code == 400
    assert response.json() == {
        "detail": f"JSON parse error - arrays and objects nest 100,000 levels deep; "
        f"the API reads at most {MAX_JSON_DEPTH}"
    }


def test_a_body_one_level_past_the_limit_is_refused_and_one_at_it_is_read(api, shop):
    deeper = api.post(DOMAINS, nested(MAX_JSON_DEPTH + 1), content_type="application/json")
    at_limit = api.post(DOMAINS, nested(MAX_JSON_DEPTH), content_type="application/json")

    assert deeper.status_code == 400
    assert "nest 33 levels deep" in deeper.json()["detail"]
    # Read, then refused by the serializer for what it is.
    assert at_limit.status_code == 400
    assert at_limit.json() == {"name": ["Not a valid string."]}


def test_brackets_inside_strings_do_not_count_as_nesting(api, shop):
    name = "[" * 1000 + '\\"{' * 1000

    response = api.post(DOMAINS, '{"name": "' + name + '"}', content_type="application/json")

    assert response.status_code == 400
    assert set(response.json()) == {"name"}


def test_a_binary_body_is_a_400_saying_the_api_takes_pem_text(api, shop, trusted):
    leaf, _ = trusted.leaf(["www.example.com"])

    response = api.post(DOMAINS, der(leaf), content_type="application/json")

    assert response.status_code == 400
    detail = response.json()["detail"]
    assert detail.startswith("JSON parse error - the body is not utf-8 text (byte ")
    assert "certificates and keys go in as PEM text" in detail
    assert PEM_ADVICE in detail


# --- binary files inside the JSON ----------------------------------------------------------------


def test_a_der_certificate_in_tlscert_is_refused_as_binary_not_pem(api, shop, trusted):
    leaf, key = trusted.leaf(["www.example.com"])
    fields = {"tlscert": der(leaf).decode("latin-1"), "tlskey": key_pem(key).decode()}

    response = api.post(DOMAINS, {"name": "www.example.com", **fields}, format="json")

    assert response.status_code == 400
    assert set(response.json()) == {"tlscert"}
    [message] = response.json()["tlscert"]
    assert message.startswith(
        "this is binary data (a DER or PKCS#12 file?), not PEM text: the API takes the certificate as PEM"
    )
    assert PEM_ADVICE in message
    assert not Domain.objects.exists()


def test_a_pkcs12_file_in_tlskey_is_refused_as_binary_not_pem(api, shop, trusted):
    DomainFactory(app=shop, name="www.example.com")
    leaf, key = trusted.leaf(["www.example.com"])
    fields = {"tlscert": trusted.chain_pem(leaf).decode(), "tlskey": pfx(key, leaf).decode("latin-1")}

    response = api.patch(f"{DOMAINS}/www.example.com", fields, format="json")

    assert response.status_code == 400
    [message] = response.json()["tlskey"]
    assert "not PEM text: the API takes the private key as PEM" in message
    assert PEM_ADVICE in message


# --- requests no view takes ----------------------------------------------------------------------


@pytest.mark.parametrize("path", [f"{API}/nothing", f"{API}/apps/", "/api/v2/apps", "/api/"])
def test_an_unknown_api_path_is_a_json_404(api, path):
    response = api.get(path)

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": f"no API endpoint at {path}; /api/schema/ lists them"}


def test_a_method_an_endpoint_lacks_is_a_json_405(api):
    response = api.delete(f"{API}/regions")

    assert response.status_code == 405
    assert response.json() == {"detail": 'Method "DELETE" not allowed.'}


def test_an_unknown_path_outside_the_api_keeps_the_html_404(api):
    response = api.get("/nothing-here")

    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")
