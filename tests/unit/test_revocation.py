"""certificates/revocation.py's answers to what the CA says, without a CA: which problems are
retried later, which are final, and what is never sent at all."""

from __future__ import annotations

import datetime

import pytest
import requests
from acme import messages

from certificates import revocation
from certificates.revocation import RevocationDeferred, RevocationRefused, revoke_pem
from tests.pki import Pki


class FakeCa:
    """Stands for an ACME client: records each revokeCert and answers with `answer`."""

    def __init__(self, answer: Exception | None = None) -> None:
        self.answer = answer
        self.asked: list[tuple[int, int]] = []

    def revoke(self, cert, rsn: int) -> None:
        self.asked.append((cert.serial_number, rsn))
        if self.answer is not None:
            raise self.answer


class Account:
    directory_url = "https://ca.example.net/dir"
    account_url = "https://ca.example.net/acct/1"


@pytest.fixture(scope="module")
def leaf():
    return Pki().leaf(["www.example.com"])[0]


@pytest.fixture
def ca(monkeypatch):
    fake = FakeCa()
    monkeypatch.setattr(revocation, "client_for", lambda account: fake)
    monkeypatch.setattr(revocation, "forget_clients", lambda: None)
    return fake


def _problem(code: str) -> messages.Error:
    return messages.Error.with_code(code, detail=f"the CA says {code}")


def test_the_reason_is_sent_as_its_rfc_5280_code(ca, leaf):
    assert revoke_pem(Account(), leaf, "cessationOfOperation") == "revoked"
    assert revoke_pem(Account(), leaf, "superseded") == "revoked"
    assert ca.asked == [(leaf.serial_number, 5), (leaf.serial_number, 4)]


def test_already_revoked_at_the_ca_counts_as_revoked(ca, leaf):
    ca.answer = _problem("alreadyRevoked")
    assert revoke_pem(Account(), leaf, "cessationOfOperation") == "already revoked"


@pytest.mark.parametrize(
    "answer",
    [
        _problem("badNonce"),
        _problem("serverInternal"),
        _problem("rateLimited"),
        requests.ConnectionError("refused"),
        requests.Timeout("slow"),
    ],
    ids=["badNonce", "serverInternal", "rateLimited", "connection", "timeout"],
)
def test_what_the_ca_did_not_process_is_deferred_for_a_retry(ca, leaf, answer):
    ca.answer = answer
    with pytest.raises(RevocationDeferred):
        revoke_pem(Account(), leaf, "cessationOfOperation")


@pytest.mark.parametrize("code", ["unauthorized", "malformed", "badRevocationReason"])
def test_a_refusal_is_final_and_names_the_cas_problem(ca, leaf, code):
    ca.answer = _problem(code)
    with pytest.raises(RevocationRefused, match=f"the CA says {code}.*{code}"):
        revoke_pem(Account(), leaf, "cessationOfOperation")


def test_an_unknown_reason_or_an_expired_certificate_is_never_sent(ca, leaf):
    with pytest.raises(RevocationRefused, match="not a revocation reason"):
        revoke_pem(Account(), leaf, "certificateHold")
    after_expiry = leaf.not_valid_after_utc + datetime.timedelta(seconds=1)
    assert revoke_pem(Account(), leaf, "keyCompromise", now=after_expiry) == "expired"
    assert ca.asked == []


def test_without_an_account_or_a_key_nothing_can_sign(ca, leaf):
    with pytest.raises(RevocationRefused, match="no ACME account"):
        revoke_pem(None, leaf, "keyCompromise")
    assert ca.asked == []
