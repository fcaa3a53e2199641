"""The CLI's certificate authority commands against the fake API of test_cli: `issuers` lists them
with their state, `domains-issuer` pins and unpins (the API's refusal passed on), and a domain
shows its pin and which CA issued its certificate."""

from __future__ import annotations

from tests.cli.test_cli import NAME, api, domain, no_dotenv_no_proxy, run, stderr_lines  # noqa: F401

ISSUERS = [
    {"name": "letsencrypt", "primary": True, "caa": ["letsencrypt.org"], "state": "open"},
    {"name": "second", "primary": False, "caa": ["pki.goog"], "state": "closed"},
]


def test_issuers_lists_them_in_order_with_what_their_state_means(api, capsys):  # noqa: F811
    api.route("GET", "/api/v1/issuers", 200, ISSUERS)
    assert run(api, "issuers") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "CAA", "ALLOWS", "STATE"]
    assert (
        lines[1].startswith("letsencrypt (primary)") and "failing: new orders go to the next one" in lines[1]
    )
    assert lines[2].startswith("second") and lines[2].endswith("in use")


def test_domains_issuer_pins_and_any_unpins(api, capsys):  # noqa: F811
    api.route("PATCH", f"/api/v1/apps/demo/domains/{NAME}", 200, domain(issuer="second"))
    assert run(api, "domains-issuer", NAME, "second") == 0
    assert api.seen[-1].body == {"issuer": "second"}
    assert f"{NAME} now orders its certificates from second only" in capsys.readouterr().out

    assert run(api, "domains-issuer", "--any", NAME) == 0
    assert api.seen[-1].body == {"issuer": ""}


def test_domains_issuer_needs_exactly_one_of_an_issuer_and_any(api, capsys):  # noqa: F811
    assert run(api, "domains-issuer", NAME) == 2
    assert run(api, "domains-issuer", "--any", NAME, "second") == 2
    assert api.seen == []


def test_an_unknown_issuer_exits_1_with_the_apis_message(api, capsys):  # noqa: F811
    refused = "'zerossl' is not one of the platform's certificate authorities (letsencrypt, second)"
    api.route("PATCH", f"/api/v1/apps/demo/domains/{NAME}", 400, {"issuer": [refused]})
    assert run(api, "domains-issuer", NAME, "zerossl") == 1
    assert refused in stderr_lines(capsys)[0]


def test_domains_show_gives_the_pin_and_the_ca_that_issued_the_certificate(api, capsys):  # noqa: F811
    shown = domain(issuer="")
    shown["certificate"]["issued_by"] = "second"
    api.route("GET", f"/api/v1/apps/demo/domains/{NAME}", 200, shown)
    api.route("GET", f"/api/v1/apps/demo/domains/{NAME}/events", 200, {"results": []})
    assert run(api, "domains-show", NAME) == 0
    out = capsys.readouterr().out
    assert "any, in the platform's order" in out
    assert "letsencrypt from second, issued by CN=Pebble Intermediate CA" in out
