"""ACME Renewal Information's pure part (certificates/ari.py): reading the CA's answer, choosing the
renewal moment, and when to ask again."""

from __future__ import annotations

import datetime
import json
import random

import pytest

from certificates.ari import (
    MAX_ANSWER_BYTES,
    MalformedRenewalInfo,
    RenewalInfo,
    parse_renewal_info,
    renewal_info_url,
    renewal_moment,
    retry_after,
)

UTC = datetime.UTC
NOW = datetime.datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
HOUR = datetime.timedelta(hours=1)
SIX_HOURS = 6 * HOUR


def _answer(start="2026-12-01T00:00:00Z", end="2026-12-03T00:00:00Z", **extra) -> bytes:
    return json.dumps({"suggestedWindow": {"start": start, "end": end}, **extra}).encode()


def test_a_window_and_its_explanation_are_read_as_utc_datetimes():
    info = parse_renewal_info(
        _answer(
            "2026-12-01T01:00:00+01:00",
            "2026-12-03T00:00:00.123456789Z",
            explanationURL="https://ca.example/why",
        )
    )
    assert info == RenewalInfo(
        datetime.datetime(2026, 12, 1, 0, 0, tzinfo=UTC),
        datetime.datetime(2026, 12, 3, 0, 0, 0, 123456, tzinfo=UTC),
        "https://ca.example/why",
    )
    assert info.start.tzinfo is UTC


def test_unknown_fields_are_ignored_and_the_explanation_is_optional():
    info = parse_renewal_info(_answer(somethingNew={"x": 1}))
    assert info.explanation_url == ""


def test_lowercase_t_and_z_are_rfc_3339_too():
    info = parse_renewal_info(_answer("2026-12-01t00:00:00z", "2026-12-02t00:00:00z"))
    assert info.end - info.start == 24 * HOUR


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"<html>busy</html>", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b"{}", "no suggestedWindow"),
        (json.dumps({"suggestedWindow": "soon"}).encode(), "no suggestedWindow"),
        (_answer(start=None), "suggestedWindow.start is not an RFC 3339 timestamp"),
        (_answer(end=1764547200), "suggestedWindow.end is not an RFC 3339 timestamp: 1764547200"),
        (_answer(start="2026-12-01"), "suggestedWindow.start is not an RFC 3339 timestamp"),
        (_answer(start="2026-12-01T00:00:00"), "suggestedWindow.start is not an RFC 3339 timestamp"),
        (_answer(start="2026-13-01T00:00:00Z"), "suggestedWindow.start is not a valid date and time"),
        (
            _answer(start="2026-12-03T00:00:00Z", end="2026-12-01T00:00:00Z"),
            "ends (2026-12-01T00:00:00+00:00) before",
        ),
        (_answer(start="2026-12-01T00:00:00Z", end="2026-12-01T00:00:00Z"), "before it starts"),
        (_answer(explanationURL=42), "explanationURL is not a string"),
        (_answer(explanationURL="javascript:alert(1)"), "not an http(s) URL"),
        (_answer(explanationURL="ftp://ca.example/why"), "not an http(s) URL"),
        (_answer(explanationURL="https://"), "not an http(s) URL"),
        (_answer(explanationURL="https://ca.example/a b"), "characters a URL cannot"),
        (_answer(explanationURL="https://ca.example/" + "a" * 2000), "longer than 2000 characters"),
    ],
)
def test_anything_but_a_usable_renewal_info_object_is_refused_saying_why(body, says):
    with pytest.raises(MalformedRenewalInfo) as refused:
        parse_renewal_info(body)
    assert says in str(refused.value)


def test_an_answer_larger_than_the_cap_is_refused_before_it_is_parsed():
    body = _answer(padding="x" * MAX_ANSWER_BYTES)
    with pytest.raises(MalformedRenewalInfo, match="larger than 16 KiB"):
        parse_renewal_info(body)


def test_a_deeply_nested_answer_is_refused_not_a_crash():
    with pytest.raises(MalformedRenewalInfo):
        parse_renewal_info(b"[" * 5000 + b"]" * 5000)


def test_a_long_bad_value_is_shortened_in_the_message():
    with pytest.raises(MalformedRenewalInfo) as refused:
        parse_renewal_info(_answer(start="x" * 5000))
    assert len(str(refused.value)) < 200


def test_the_renewal_moment_is_uniform_inside_a_future_window():
    info = RenewalInfo(NOW + 10 * HOUR, NOW + 20 * HOUR)
    rng = random.Random(14)
    moments = [renewal_moment(info, NOW, rng) for _ in range(2000)]
    assert all(info.start <= m <= info.end for m in moments)
    # Uniform: each tenth of the window gets about a tenth of the moments (2000 draws: 200 +- 60).
    tenths = [0] * 10
    for m in moments:
        tenths[min(int((m - info.start) / HOUR), 9)] += 1
    assert all(140 <= count <= 260 for count in tenths), tenths


def test_the_renewal_moment_is_now_when_the_window_has_passed():
    info = RenewalInfo(NOW - 20 * HOUR, NOW - 10 * HOUR)
    assert renewal_moment(info, NOW, random.Random(1)) == NOW
    assert renewal_moment(info, NOW.replace(microsecond=999999), random.Random(1)) == NOW


def test_the_renewal_moment_is_a_whole_second():
    info = RenewalInfo(NOW, NOW + datetime.timedelta(seconds=10))
    assert all(renewal_moment(info, NOW, random.Random(seed)).microsecond == 0 for seed in range(50))


def test_the_renewal_moment_is_now_when_the_drawn_moment_of_a_current_window_has_passed():
    info = RenewalInfo(NOW - 10 * HOUR, NOW + 10 * HOUR)
    moments = [renewal_moment(info, NOW, random.Random(seed)) for seed in range(200)]
    assert NOW in moments
    assert all(NOW <= m <= info.end for m in moments)
    assert any(m > NOW for m in moments)


@pytest.mark.parametrize(
    ("header", "wait"),
    [
        ("21600", SIX_HOURS),
        (" 120 ", datetime.timedelta(seconds=120)),
        ("0", datetime.timedelta(minutes=1)),
        ("5", datetime.timedelta(minutes=1)),
        ("604800", datetime.timedelta(days=1)),
        ("99999999999999999999", datetime.timedelta(days=1)),
        ("Mon, 30 Nov 2026 14:00:00 GMT", 2 * HOUR),
        ("Mon, 30 Nov 2026 11:00:00 GMT", datetime.timedelta(minutes=1)),
        ("Mon, 30 Nov 2026 12:00:30 GMT", datetime.timedelta(minutes=1)),
        ("Mon, 07 Dec 2026 12:00:00 GMT", datetime.timedelta(days=1)),
        (None, SIX_HOURS),
        ("", SIX_HOURS),
        ("soon", SIX_HOURS),
        ("-5", SIX_HOURS),
        ("1.5", SIX_HOURS),
    ],
)
def test_retry_after_is_read_as_seconds_or_an_http_date_and_clamped_to_a_minute_and_a_day(header, wait):
    assert retry_after(header, NOW, SIX_HOURS) == wait


def test_the_renewal_info_url_is_the_base_a_slash_and_the_certificate_id():
    assert renewal_info_url("https://ca.example/renewal-info", "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE") == (
        "https://ca.example/renewal-info/aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"
    )
    assert (
        renewal_info_url("https://ca.example/renewal-info/", "a.b") == "https://ca.example/renewal-info/a.b"
    )
