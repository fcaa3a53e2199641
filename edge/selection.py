"""What a name serves at a moment: the first candidate whose validity window holds that moment.

The feed lists each name's candidates in serving order (a custom certificate first, then Let's
Encrypt's); the agent keeps only their windows and fingerprints in memory (the keys stay on disk), and
a timer wakes at the next boundary (any not_before or not_after) to switch by the router's own clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

SOURCES = ("custom", "letsencrypt")


class BadCandidate(ValueError):
    """A candidate of the feed that lacks a field or holds a wrong one; the message names it."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """One certificate a name may serve, without its PEM: times are POSIX seconds (UTC)."""

    fingerprint: str
    source: str
    not_before: float
    not_after: float

    def as_json(self) -> dict:
        return {
            "fingerprint": self.fingerprint,
            "source": self.source,
            "not_before": to_iso(self.not_before),
            "not_after": to_iso(self.not_after),
        }


def to_iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def to_datetime(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _timestamp(raw: dict, field: str) -> float:
    value = raw.get(field)
    if not isinstance(value, str):
        raise BadCandidate(f"{field} is missing or not a string")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise BadCandidate(f"{field} is not an ISO 8601 time: {value[:40]!r}") from None
    if moment.tzinfo is None:
        raise BadCandidate(f"{field} has no time zone: {value[:40]!r}")
    return moment.timestamp()


def parse_candidate(raw: object) -> tuple[Candidate, str]:
    """A feed candidate (JSON object) as a Candidate and its PEM; BadCandidate names what is wrong."""
    if not isinstance(raw, dict):
        raise BadCandidate("a candidate is not a JSON object")
    fingerprint = raw.get("fingerprint")
    if not isinstance(fingerprint, str) or len(fingerprint) != 64 or not _is_hex(fingerprint):
        raise BadCandidate("fingerprint is not 64 hex digits")
    source = raw.get("source")
    if source not in SOURCES:
        raise BadCandidate(f"source is not one of {', '.join(SOURCES)}: {str(source)[:40]!r}")
    pem = raw.get("pem")
    if not isinstance(pem, str) or "-----BEGIN CERTIFICATE-----" not in pem:
        raise BadCandidate("pem is missing or holds no certificate")
    candidate = Candidate(
        fingerprint.lower(), source, _timestamp(raw, "not_before"), _timestamp(raw, "not_after")
    )
    return candidate, pem


def parse_candidates(raw: object) -> tuple[tuple[Candidate, ...], tuple[str, ...]]:
    """A feed name's candidates (a JSON list), in serving order, and their PEMs in the same order."""
    if not isinstance(raw, list):
        raise BadCandidate("candidates is not a list")
    parsed = [parse_candidate(item) for item in raw]
    return tuple(c for c, _ in parsed), tuple(p for _, p in parsed)


def _is_hex(text: str) -> bool:
    try:
        int(text, 16)
    except ValueError:
        return False
    return True


def select(candidates: tuple[Candidate, ...], at: float) -> Candidate | None:
    """The first candidate with not_before <= at < not_after; None: the name serves nothing at `at`."""
    for candidate in candidates:
        if candidate.not_before <= at < candidate.not_after:
            return candidate
    return None


def next_boundary(candidates: tuple[Candidate, ...], after: float) -> float | None:
    """The first moment later than `after` at which the choice may change (a window opens or closes)."""
    moments = [
        moment
        for candidate in candidates
        for moment in (candidate.not_before, candidate.not_after)
        if moment > after
    ]
    return min(moments, default=None)
