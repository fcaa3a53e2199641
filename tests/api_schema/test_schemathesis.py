"""The API against its own OpenAPI schema (/api/schema/), with schemathesis, in-process over WSGI.

Every operation is called with a valid token. The path parameters are the fixtures' real app and
domains in part of the cases (generated values in the rest), so the handlers are exercised past
their 404. Checks: no 5xx, and the status code, content type and body the schema documents.
Bounded (a few dozen examples per operation, derandomized) to run in seconds, not minutes.

The fixtures are made once per operation, not per example: a DELETE that succeeds leaves the later
examples of that operation a 404, which the schema documents too.
"""

from __future__ import annotations

import datetime

import pytest
import schemathesis
from django.core import signals
from django.db import close_old_connections
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.throttling import WriteRateThrottle
from api.tokens import create_token
from certificates.models import CertificateSource
from config.wsgi import application
from tests.conftest import LEAK_WATCH
from tests.factories import AppFactory, CertificateFactory, DomainFactory, UserFactory

APP = "schema-app"
# A subdomain with a Let's Encrypt certificate, an apex with a custom one, a parked wildcard.
DOMAINS = ("www.schema-example.com", "schema-example.com", "*.shop.schema-example.com")
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
MAX_EXAMPLES = 40

# Loaded at collection: schemathesis' fixture-based loader (schemathesis.pytest.from_fixture) fails
# under pytest 9.2, as it sets the item's private `_nodeid`, which pytest 9.2 no longer has. The
# schema view reads no database and needs no token.
schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", application)


@schema.hook
def flatmap_path_parameters(context, path_parameters: dict | None) -> st.SearchStrategy:
    """The generated path parameters, or the same with the fixtures' app (and one of its domains)."""
    if not path_parameters:
        return st.just(path_parameters)
    real = dict(path_parameters)
    if "app" in real:
        real["app"] = APP
    if "name" in real:
        return st.sampled_from([path_parameters, *({**real, "name": name} for name in DOMAINS)])
    return st.sampled_from([path_parameters, real])


@pytest.fixture
def wsgi_in_test_transaction(db):
    """The WSGI handler closes the database connection around each request (as in production); the
    test's transaction lives on that connection, so it is kept open, as Django's test client does."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def bearer(wsgi_in_test_transaction, monkeypatch) -> dict[str, str]:
    """A customer owning APP and its DOMAINS, another customer's app, and a token of the first."""
    owner = UserFactory(username="schema-owner")
    app = AppFactory(owner=owner, name=APP)
    www, apex, _ = (DomainFactory(app=app, name=name) for name in DOMAINS)
    yesterday = timezone.now() - datetime.timedelta(days=1)
    CertificateFactory(domain=www, not_before=yesterday)
    CertificateFactory(domain=apex, source=CertificateSource.CUSTOM, not_before=yesterday)
    AppFactory(name="someone-elses-app")
    # The per-token write budget would turn most generated writes into 429s (documented, but
    # answered before the handler runs): raised, so that the writes reach the services.
    monkeypatch.setattr(WriteRateThrottle, "THROTTLE_RATES", {"write": "100000/min"})
    _, token = create_token(owner, "schemathesis")
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.integration
@pytest.mark.django_db
@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_every_operation_answers_as_its_schema_documents(case, bearer):
    response = case.call(headers=bearer)
    # Past the Django test client, so handed to the suite's leak check here.
    LEAK_WATCH.response(case.operation.label, response)
    case.validate_response(response, checks=CHECKS)


@pytest.mark.integration
@pytest.mark.django_db
def test_a_mangled_cursor_is_a_documented_400_on_the_cursor(bearer):
    case = schema["/api/v1/apps"]["GET"].Case(query={"cursor": "not-a-cursor"})
    response = case.call(headers=bearer)
    case.validate_response(response, checks=CHECKS)
    assert response.status_code == 400
    assert "cursor" in response.json()
