"""The CAA decision (RFC 8659, RFC 8657), pure."""

from domains.caa import CaaRecord, climb, evaluate

ACCOUNT = "https://acme.example/acct/42"


def decide(records, name="www.example.com", owner="example.com"):
    found = (owner, [CaaRecord(*r) for r in records]) if records is not None else None
    return evaluate(name, found, identity="letsencrypt.org", account_uri=ACCOUNT)


def test_climbing_goes_from_the_name_to_its_parents_but_not_the_tld():
    assert climb("a.b.example.com") == ["a.b.example.com", "b.example.com", "example.com"]
    assert climb("*.example.co.uk") == ["example.co.uk", "co.uk"]


def test_no_caa_record_set_anywhere_allows_issuance():
    assert decide(None).allowed


def test_an_issue_record_for_the_ca_allows_issuance():
    assert decide([(0, "issue", "letsencrypt.org")]).allowed


def test_an_issue_record_for_another_ca_forbids_and_names_the_record_to_add():
    decision = decide([(0, "issue", "otherca.example")])
    assert not decision.allowed
    assert '0 issue "otherca.example" names another CA' in decision.message
    assert 'Add example.com. CAA 0 issue "letsencrypt.org"' in decision.message


def test_accounturi_for_another_account_forbids():
    decision = decide([(0, "issue", "letsencrypt.org; accounturi=https://acme.example/acct/7")])
    assert not decision.allowed
    assert "allows another ACME account only" in decision.message


def test_accounturi_for_this_account_allows():
    assert decide([(0, "issue", f"letsencrypt.org; accounturi={ACCOUNT}")]).allowed


def test_validationmethods_without_http01_forbids():
    decision = decide([(0, "issue", "letsencrypt.org; validationmethods=dns-01")])
    assert "does not allow the http-01 validation method" in decision.message


def test_an_empty_issuer_forbids_every_ca():
    assert "forbids every CA" in decide([(0, "issue", ";")]).message


def test_only_iodef_records_do_not_restrict_issuance():
    assert decide([(0, "iodef", "mailto:security@example.com")]).allowed


def test_an_unknown_critical_property_forbids():
    decision = decide([(128, "tbs", "x"), (0, "issue", "letsencrypt.org")])
    assert not decision.allowed
    assert "marked critical" in decision.message


def test_issuewild_governs_wildcards_when_present():
    records = [(0, "issue", "letsencrypt.org"), (0, "issuewild", "otherca.example")]
    assert decide(records).allowed
    assert not decide(records, name="*.example.com").allowed
    assert decide([(0, "issue", "letsencrypt.org")], name="*.example.com").allowed
