"""CA profiles and `replaces` without a CA: the newOrder message, the directory's reading, the
effective profile and the messages a refusal gives. The directory is a stub HTTP server."""

from __future__ import annotations

import json

import pytest
from acme import messages

from api.health import check_acme_profile
from certificates.acme_client import NewOrder
from certificates.directory import DirectoryUnavailable, directory, parse_directory
from domains.checks import acme_profile_offered
from domains.profiles import (
    ProfileRefused,
    ProfileUnchecked,
    check_profile,
    effective_profile,
    not_offered_message,
    platform_profile_problem,
)
from workers.acme_steps import replaces_refused

IDENTIFIERS = [messages.Identifier(typ=messages.IDENTIFIER_FQDN, value="www.example.com")]


def _sent(order: NewOrder) -> dict:
    return json.loads(order.json_dumps())


def test_a_new_order_names_neither_profile_nor_replaces_when_they_are_empty():
    assert _sent(NewOrder(identifiers=IDENTIFIERS)) == {
        "identifiers": [{"type": "dns", "value": "www.example.com"}]
    }
    assert _sent(NewOrder(identifiers=IDENTIFIERS, profile="", replaces="")) == _sent(
        NewOrder(identifiers=IDENTIFIERS)
    )


def test_a_new_order_sends_profile_and_replaces_when_set():
    sent = _sent(
        NewOrder(
            identifiers=IDENTIFIERS, profile="shortlived", replaces="aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"
        )
    )
    assert sent["profile"] == "shortlived"
    assert sent["replaces"] == "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"
    assert _sent(NewOrder(identifiers=IDENTIFIERS, replaces="x.y")).keys() == {"identifiers", "replaces"}


def test_a_new_order_is_still_the_librarys_new_order():
    # The CA's answer is parsed with the library's Order, and the library's checks still apply.
    assert isinstance(NewOrder(identifiers=IDENTIFIERS), messages.NewOrder)


def test_the_effective_profile_is_the_domains_choice_else_acme_profile(settings):
    settings.ACME_PROFILE = "tlsserver"
    assert effective_profile("shortlived") == "shortlived"
    assert effective_profile("") == "tlsserver"
    settings.ACME_PROFILE = ""
    assert effective_profile("") == ""


def test_a_directory_without_profiles_or_renewal_info_offers_neither():
    found = parse_directory("https://ca.example/dir", {"newOrder": "https://ca.example/order"})
    assert found.profiles == {}
    assert found.renewal_info == ""


@pytest.mark.parametrize("document", [[], {"meta": {}}, {"newOrder": 3}, "directory"])
def test_a_document_that_is_no_directory_is_refused(document):
    with pytest.raises(DirectoryUnavailable, match="not an ACME directory"):
        parse_directory("https://ca.example/dir", document)


def test_malformed_profiles_are_read_as_none_offered():
    found = parse_directory(
        "https://ca.example/dir", {"newOrder": "https://ca.example/o", "meta": {"profiles": ["classic"]}}
    )
    assert found.profiles == {}


def test_the_directory_is_fetched_once_per_cache_period(stub_directory):
    assert set(directory(now=1000.0).profiles) == {"classic", "tlsserver", "shortlived"}
    assert directory(now=1300.0).renewal_info == "https://ca.invalid/renewal-info"
    assert stub_directory.requests == 1
    stub_directory.document["meta"] = {}
    assert directory(now=1000.0 + 601).profiles == {}
    assert stub_directory.requests == 2


def test_a_failing_directory_is_not_cached(stub_directory):
    stub_directory.status = 503
    with pytest.raises(DirectoryUnavailable, match="HTTP 503"):
        directory()
    stub_directory.status = 200
    assert "classic" in directory().profiles


def test_an_offered_profile_is_accepted_and_empty_means_the_default(stub_directory):
    assert check_profile(" shortlived ") == "shortlived"
    assert check_profile("") == ""
    stub_directory.status = 500
    # The default needs no CA.
    assert check_profile("  ") == ""


def test_a_profile_the_ca_does_not_offer_is_refused_naming_the_offered_ones(stub_directory):
    with pytest.raises(ProfileRefused) as refused:
        check_profile("veryshort")
    assert str(refused.value) == (
        "the CA does not offer the profile 'veryshort': the CA offers classic, shortlived, tlsserver"
    )


def test_a_ca_without_profiles_refuses_every_named_profile(stub_directory):
    stub_directory.document.pop("meta")
    with pytest.raises(ProfileRefused, match="the CA offers no profiles"):
        check_profile("classic")


@pytest.mark.parametrize("name", ["short lived", "x" * 65, "../classic", "-a"])
def test_a_name_that_is_no_profile_name_is_refused_before_the_ca_is_asked(stub_directory, name):
    with pytest.raises(ProfileRefused, match="is not a profile name"):
        check_profile(name)
    assert stub_directory.requests == 0


def test_an_unreachable_ca_leaves_the_profile_unchecked(unreachable_directory):
    with pytest.raises(ProfileUnchecked, match="could not be checked: the CA's directory is unreachable"):
        check_profile("classic")


def test_an_order_refused_for_acme_profile_names_the_setting():
    text = not_offered_message("shortlived", "", {"classic": ""})
    assert "ACME_PROFILE" in text and "the CA offers classic" in text
    text = not_offered_message("shortlived", "shortlived", {"classic": ""})
    assert "chosen for this domain" in text and "ACME_PROFILE" not in text


def test_the_operator_check_names_acme_profile_when_the_ca_does_not_offer_it(stub_directory, settings):
    settings.ACME_PROFILE = "classic"
    assert platform_profile_problem() is None
    settings.ACME_PROFILE = "sixday"
    assert platform_profile_problem().startswith("ACME_PROFILE='sixday' is not offered by the CA")
    settings.ACME_PROFILE = ""
    assert platform_profile_problem() is None


def _problem(code: str, detail: str) -> messages.Error:
    return messages.Error.from_json({"type": f"urn:ietf:params:acme:error:{code}", "detail": detail})


@pytest.mark.parametrize(
    ("code", "detail", "refused"),
    [
        ("alreadyReplaced", "certificate already replaced", True),
        ("malformed", "the certificate identified by replaces was not found", True),
        (
            "unauthorized",
            "requester account did not request the certificate being replaced by this order",
            True,
        ),
        ("malformed", "the order names no identifiers", False),
        ("rateLimited", "too many new orders", False),
        ("invalidProfile", "unknown profile", False),
    ],
)
def test_only_a_refusal_of_replaces_makes_the_order_go_again_without_it(code, detail, refused):
    assert replaces_refused(_problem(code, detail)) is refused


def test_healthz_and_check_deploy_name_an_acme_profile_the_ca_does_not_offer(stub_directory, settings):
    settings.ACME_PROFILE = "tlsserver"
    assert check_acme_profile().ok
    assert acme_profile_offered(None) == []
    settings.ACME_PROFILE = "sixday"
    health = check_acme_profile()
    assert (health.ok, health.critical) == (False, False)
    assert "ACME_PROFILE='sixday' is not offered" in health.detail
    [error] = acme_profile_offered(None)
    assert error.id == "certwright.E001" and "ACME_PROFILE='sixday'" in error.msg


def test_healthz_says_when_acme_profile_cannot_be_checked(unreachable_directory, settings):
    settings.ACME_PROFILE = "classic"
    health = check_acme_profile()
    assert not health.ok and "could not be checked" in health.detail
