"""ACME_ISSUERS as config/issuers.py reads it: every problem named with its issuer and field, the
HMAC key never quoted, and the settings' ACME_DIRECTORY_URL kept the primary's."""

from __future__ import annotations

import json

import pytest

from config.issuers import parse_issuers

KEY = "c2VjcmV0LWhtYWMta2V5LWZvci10ZXN0cw"


def _issuer(**fields) -> dict:
    return {"name": "le", "directory": "https://ca.example/dir", "caa": ["letsencrypt.org"], **fields}


def test_a_valid_list_keeps_the_order_and_every_field():
    text = json.dumps(
        [
            _issuer(),
            _issuer(
                name="second",
                directory="https://two.example/dir",
                caa="pki.goog",
                eab_kid="k",
                eab_hmac_key=KEY,
            ),
        ]
    )
    issuers, problems = parse_issuers(text)
    assert problems == []
    assert [issuer.name for issuer in issuers] == ["le", "second"]
    assert issuers[1].caa_identities == ("pki.goog",) and issuers[1].has_eab
    assert KEY not in repr(issuers[1])


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        ("not json {", "is not JSON (line 1"),
        ([], "at least one"),
        ([_issuer(name="Bad Name")], "issuer 1 needs a name"),
        ([_issuer(directory="ftp://x")], "issuer 1 (le) needs a directory"),
        ([_issuer(caa=[])], "issuer 1 (le) needs caa"),
        ([_issuer(caa=["not a domain"])], "'not a domain' is not a domain name"),
        ([_issuer(eab_kid="k")], "needs both eab_kid and eab_hmac_key"),
        ([_issuer(eab_kid="k", eab_hmac_key="not base64!")], "eab_hmac_key is not base64url"),
        ([_issuer(ca_bundle="/nonexistent/ca.pem")], "ca_bundle names a file that does not exist"),
        ([_issuer(colour="blue")], "unknown field(s) colour"),
        ([_issuer(limits="zerossl")], "limits must be letsencrypt or none"),
        ([_issuer(limits={"orders": 0})], "limits of its own are"),
        ([_issuer(limits={"orders": 5, "period_seconds": "1h"})], "limits of its own are"),
        ([_issuer(limits={"orders": 5, "per": 60})], "limits of its own are"),
        ([_issuer(), _issuer(directory="https://other.example/dir")], "two issuers have the name 'le'"),
        ([_issuer(), _issuer(name="b")], "two issuers have the directory"),
        ([_issuer(name=f"i{n}", directory=f"https://{n}.example/dir") for n in range(9)], "at most 8"),
    ],
)
def test_a_bad_list_is_refused_naming_the_issuer_and_the_field(entries, expected):
    text = entries if isinstance(entries, str) else json.dumps(entries)
    _, problems = parse_issuers(text)
    assert any(expected in problem for problem in problems), problems


def test_limits_default_to_lets_encrypts_only_for_an_issuer_its_caa_names_and_may_be_its_own():
    text = json.dumps(
        [
            _issuer(),
            _issuer(name="b", directory="https://b.example/dir", caa=["pki.goog"]),
            _issuer(
                name="c",
                directory="https://c.example/dir",
                caa=["ssl.com"],
                limits={"orders": 300, "period_seconds": 10800},
            ),
        ]
    )
    issuers, problems = parse_issuers(text)
    assert problems == []
    assert [issuer.limits for issuer in issuers] == ["letsencrypt", "none", "own"]
    assert (issuers[2].orders_limit, issuers[2].orders_period_seconds) == (300, 10800)


def test_a_problem_never_quotes_the_hmac_key():
    text = json.dumps([_issuer(eab_hmac_key=KEY), {"oops": KEY}])
    _, problems = parse_issuers(text)
    assert problems and not any(KEY in problem for problem in problems)
    _, problems = parse_issuers(f'[{{"eab_hmac_key": "{KEY}",,]')
    assert problems and not any(KEY in problem for problem in problems)


def test_a_huge_value_is_refused_before_it_is_parsed():
    _, problems = parse_issuers("[" + " " * (70 * 1024) + "]")
    assert problems == ["is longer than 64 KiB"]
