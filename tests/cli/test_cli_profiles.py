"""The CLI's profile commands against the fake API of test_cli: `domains-add --profile`,
`domains-profile`, the API's refusal passed on, and the profile shown with the domain and its
certificate."""

from __future__ import annotations

from tests.cli.test_cli import NAME, api, domain, no_dotenv_no_proxy, run, stderr_lines  # noqa: F401

REFUSED = "the CA does not offer the profile 'sixday': the CA offers classic, shortlived, tlsserver"


def test_domains_add_with_a_profile_sends_it(api, capsys):  # noqa: F811
    api.route("POST", "/api/v1/apps/demo/domains", 201, domain(status="pending_dns", profile="shortlived"))
    assert run(api, "domains-add", "--profile", "shortlived", NAME) == 0
    assert api.seen[0].body == {"name": NAME, "letsencrypt": True, "profile": "shortlived"}


def test_domains_add_without_a_profile_sends_none(api, capsys):  # noqa: F811
    api.route("POST", "/api/v1/apps/demo/domains", 201, domain(status="pending_dns"))
    assert run(api, "domains-add", NAME) == 0
    assert "profile" not in api.seen[0].body


def test_a_profile_the_ca_does_not_offer_exits_1_with_the_apis_message(api, capsys):  # noqa: F811
    api.route("POST", "/api/v1/apps/demo/domains", 400, {"profile": [REFUSED]})
    assert run(api, "domains-add", "--profile", "sixday", NAME) == 1
    err = stderr_lines(capsys)
    assert len(err) == 1 and REFUSED in err[0] and "profile" in err[0]


def test_domains_profile_changes_it_and_says_when_it_applies(api, capsys):  # noqa: F811
    api.route(
        "PATCH",
        f"/api/v1/apps/demo/domains/{NAME}",
        200,
        domain(profile="tlsserver", effective_profile="tlsserver"),
    )
    assert run(api, "domains-profile", NAME, "tlsserver") == 0
    assert [(seen.method, seen.body) for seen in api.seen] == [("PATCH", {"profile": "tlsserver"})]
    assert capsys.readouterr().out.startswith(
        f"{NAME} now orders its certificates under: tlsserver. It applies from the next certificate"
    )


def test_domains_profile_default_goes_back_to_the_platforms(api, capsys):  # noqa: F811
    api.route(
        "PATCH", f"/api/v1/apps/demo/domains/{NAME}", 200, domain(profile="", effective_profile="classic")
    )
    assert run(api, "domains-profile", "--default", NAME) == 0
    assert api.seen[0].body == {"profile": ""}
    assert "classic (the platform's default)" in capsys.readouterr().out


def test_domains_profile_needs_exactly_one_of_a_profile_and_default(api, capsys):  # noqa: F811
    assert run(api, "domains-profile", NAME) == 2
    assert run(api, "domains-profile", "--default", NAME, "classic") == 2
    assert api.seen == []


def test_domains_show_gives_the_domains_profile_and_its_certificates(api, capsys):  # noqa: F811
    shown = domain(profile="", effective_profile="")
    shown["certificate"]["profile"] = "shortlived"
    api.route("GET", f"/api/v1/apps/demo/domains/{NAME}", 200, shown)
    api.route("GET", f"/api/v1/apps/demo/domains/{NAME}/events", 200, {"results": []})
    assert run(api, "domains-show", NAME) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.split() == ["profile", "the", "CA's", "default"] for line in lines)
    assert any(line.split() == ["profile", "shortlived"] for line in lines)
