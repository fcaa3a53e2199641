"""ACME Renewal Information (RFC 9773), the pure part: reading a CA's renewalInfo answer, choosing
the renewal moment inside its window, and when to ask again. Django-free; the sweep that fetches
the answers and writes them is workers/ari_checks.py.
"""

from __future__ import annotations

import datetime
import email.utils
import json
import random
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

# At most this much of an answer is read: a RenewalInfo object is a few hundred bytes, and the CA
# is a remote party whose answer must not cost us memory or parsing time.
MAX_ANSWER_BYTES = 16 * 1024
# Certificate.ari_explanation_url's length.
MAX_EXPLANATION_URL = 2000
# RFC 9773 section 4.3: clients SHOULD set reasonable limits on Retry-After, for instance treat
# values under one minute as one minute and values over one day as one day.
MIN_RETRY_AFTER = datetime.timedelta(minutes=1)
MAX_RETRY_AFTER = datetime.timedelta(days=1)

# RFC 3339's date-time (section 5.6): a full date, T, a full time, and Z or a numeric offset.
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})", re.ASCII
)
_DIGITS = re.compile(r"\d+", re.ASCII)
_UNSAFE_URL_CHARACTERS = re.compile(r"[\x00-\x20\x7f-\x9f<>\"\\^`{|}]")


class MalformedRenewalInfo(ValueError):
    """The CA's answer is not a RenewalInfo object this client can use; the message says why, in
    words an operator can act on (RFC 9773 section 4.2: treat it as though nothing was received)."""


@dataclass(frozen=True, slots=True)
class RenewalInfo:
    """The CA's suggested renewal window for one certificate, and its optional explanation."""

    start: datetime.datetime
    end: datetime.datetime
    explanation_url: str = ""


def renewal_info_url(base: str, cert_id: str) -> str:
    """The renewalInfo resource of a certificate: the directory's `renewalInfo` URL, a slash, and
    the certificate's identifier (RFC 9773 section 4.1)."""
    return f"{base.rstrip('/')}/{cert_id}"


def parse_renewal_info(body: bytes) -> RenewalInfo:
    """The RenewalInfo object in `body` (RFC 9773 section 4.2); MalformedRenewalInfo says what is
    wrong with anything else."""
    if len(body) > MAX_ANSWER_BYTES:
        raise MalformedRenewalInfo(f"the answer is larger than {MAX_ANSWER_BYTES // 1024} KiB")
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise MalformedRenewalInfo("the answer is not JSON") from None
    if not isinstance(document, dict):
        raise MalformedRenewalInfo("the answer is not a JSON object")
    window = document.get("suggestedWindow")
    if not isinstance(window, dict):
        raise MalformedRenewalInfo("the answer has no suggestedWindow object")
    start = _timestamp(window.get("start"), "suggestedWindow.start")
    end = _timestamp(window.get("end"), "suggestedWindow.end")
    if end <= start:
        raise MalformedRenewalInfo(
            f"the suggested window ends ({end.isoformat()}) before it starts ({start.isoformat()})"
        )
    return RenewalInfo(start, end, _explanation_url(document.get("explanationURL")))


def _timestamp(value: object, field: str) -> datetime.datetime:
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise MalformedRenewalInfo(f"{field} is not an RFC 3339 timestamp: {_shown(value)}")
    try:
        moment = datetime.datetime.fromisoformat(value.upper())
    except ValueError:
        raise MalformedRenewalInfo(f"{field} is not a valid date and time: {_shown(value)}") from None
    return moment.astimezone(datetime.UTC)


def _explanation_url(value: object) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise MalformedRenewalInfo(f"explanationURL is not a string: {_shown(value)}")
    if len(value) > MAX_EXPLANATION_URL:
        raise MalformedRenewalInfo(f"explanationURL is longer than {MAX_EXPLANATION_URL} characters")
    if _UNSAFE_URL_CHARACTERS.search(value):
        raise MalformedRenewalInfo(f"explanationURL has characters a URL cannot: {_shown(value)}")
    try:
        parts = urlsplit(value)
    except ValueError:
        raise MalformedRenewalInfo(f"explanationURL is not a URL: {_shown(value)}") from None
    # Shown to operators as a link: anything but a web page (javascript:, data:) is refused.
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise MalformedRenewalInfo(f"explanationURL is not an http(s) URL: {_shown(value)}")
    return value


def _shown(value: object) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def renewal_moment(
    info: RenewalInfo, now: datetime.datetime, rng: random.Random | None = None
) -> datetime.datetime:
    """When to renew, as RFC 9773 section 4.2 says: a uniformly random moment inside the suggested
    window (so a CA's many clients spread their renewals over it), or `now` if that moment has
    already passed (to the second)."""
    fraction = (rng or random).random()
    moment = info.start + (info.end - info.start) * fraction
    # Whole seconds: what operators read, and no later than `now` when it is now.
    return max(moment, now).replace(microsecond=0)


def retry_after(
    header: str | None, now: datetime.datetime, default: datetime.timedelta
) -> datetime.timedelta:
    """How long to wait before asking again, from a Retry-After header (delay-seconds or an HTTP
    date, RFC 9110 section 10.2.3) clamped to between a minute and a day (RFC 9773 section 4.3);
    `default` when the header is absent or unreadable."""
    if not header:
        return default
    header = header.strip()
    if _DIGITS.fullmatch(header):
        # A number of more digits than a day has seconds is a long wait, whatever its value.
        delay = datetime.timedelta(seconds=int(header)) if len(header) <= 9 else MAX_RETRY_AFTER
    else:
        try:
            when = email.utils.parsedate_to_datetime(header)
        except (TypeError, ValueError, IndexError, OverflowError):
            return default
        if when is None:
            return default
        if when.tzinfo is None:
            # An HTTP date is always GMT; a date without a zone is read as such.
            when = when.replace(tzinfo=datetime.UTC)
        delay = when - now
    return min(max(delay, MIN_RETRY_AFTER), MAX_RETRY_AFTER)
