"""What Django's error reports (the DEBUG 500 page, the admins' error e-mails) may show.

Django's own filter hides settings by name and, with DEBUG on, nothing else: the frames' local
variables showed an upload's private key, its passphrase and the request's token. Here secrets are
hidden by name (`tlskey`, `passphrase`, `token`, `authorization`...) and by value: whatever holds a
PEM private key, a Fernet token (a sealed key), an API token or a URL's password is hidden whatever
it is called, in DEBUG as in production, and the finished report is scrubbed of them once more.
"""

from __future__ import annotations

import re
from typing import Any

from django.http import HttpRequest
from django.views.debug import ExceptionReporter, SafeExceptionReporterFilter

SUBSTITUTE = SafeExceptionReporterFilter.cleansed_substitute
# Names whose values are never shown: Django's list, and the API's upload fields, the request's
# headers and raw body, and keys and certificates under any name.
SENSITIVE_NAMES = re.compile(
    r"API|AUTH|TOKEN|KEY|SECRET|PASS|SIGNATURE|COOKIE|SESSION|CREDENTIAL|PRIVATE|TLS|CERT|PEM|BODY",
    re.IGNORECASE,
)
SECRET_VALUES = re.compile(
    # A PEM private key (any kind, encrypted too) up to its end line, or to the end of the run of
    # base64, headers and line breaks (also as `\n` in a repr) when the end was cut off.
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?:[A-Za-z0-9+/=:,\s-]|\\[rn])*"
    # A Fernet token: version byte 0x80, then the timestamp.
    r"|gAAAAA[A-Za-z0-9_=-]+"
    # An API token (api/tokens.py).
    r"|cwt_[A-Za-z0-9_-]{8,}"
    # The user and password of a URL (a broker's, a database's).
    r"|(?<=://)[^/\s:@'\"]*:[^/\s@'\"]+(?=@)"
    # The base64 of a DER private key without its PEM lines, from how its encoding begins (PKCS#8
    # EC, PKCS#8 RSA, SEC1 P-256, SEC1 P-384, PKCS#1), to the end of the run.
    r"|(?:AgEAMBMGByqGSM49|AgEAMA0GCSqGSIb3DQEBAQUA|MHcCAQEE|MIGkAgEBBDA|MII[A-Za-z0-9+/]{2}[Ag]IBAAKCA)"
    r"[A-Za-z0-9+/=]*"
)
# Containers are walked this deep; anything deeper is judged by its repr as a whole.
MAX_DEPTH = 4


def holds_secret(value: Any) -> bool:
    """Whether `value` (as text, or its repr) contains key material or a token."""
    if isinstance(value, bytes | bytearray | memoryview):
        text = bytes(value).decode("latin-1")
    elif isinstance(value, str):
        text = value
    else:
        try:
            text = repr(value)
        except Exception:  # the report shows such a value as its repr's error; nothing to hide
            return False
    return SECRET_VALUES.search(text) is not None


def scrub(text: str) -> str:
    """`text` with every private key, Fernet token and API token replaced by the substitute."""
    return SECRET_VALUES.sub(SUBSTITUTE, text)


class SecretsReporterFilter(SafeExceptionReporterFilter):
    """Hides secrets by name and by value, in settings, META, cookies, POST and frame variables."""

    hidden_settings = SENSITIVE_NAMES

    def is_active(self, request: HttpRequest | None) -> bool:
        # Django's filter stands down with DEBUG on; a developer's page must not show keys either.
        return True

    def cleanse_setting(self, key, value):
        cleansed = super().cleanse_setting(key, value)
        if isinstance(cleansed, dict | list | tuple) or cleansed is SUBSTITUTE:
            return cleansed
        return SUBSTITUTE if holds_secret(value) else cleansed

    def cleanse_variable(self, name: Any, value: Any, depth: int = 0) -> Any:
        """`value` with what `name` or its content says is secret hidden, containers item by item."""
        if isinstance(name, str) and SENSITIVE_NAMES.search(name):
            return SUBSTITUTE
        if depth < MAX_DEPTH and isinstance(value, dict):
            return {key: self.cleanse_variable(key, item, depth + 1) for key, item in value.items()}
        if depth < MAX_DEPTH and isinstance(value, list | tuple):
            items = [self.cleanse_variable(name, item, depth + 1) for item in value]
            return items if isinstance(value, list) else tuple(items)
        return SUBSTITUTE if holds_secret(value) else value

    def get_traceback_frame_variables(self, request, tb_frame):
        variables = super().get_traceback_frame_variables(request, tb_frame)
        return [(name, self.cleanse_variable(name, value)) for name, value in variables]


class SecretsExceptionReporter(ExceptionReporter):
    """Django's reporter with the query string cleansed by name, and the finished page or e-mail
    (exception message and URL included) scrubbed of secrets once more."""

    def get_traceback_data(self) -> dict:
        data = super().get_traceback_data()
        if "request_GET_items" in data:
            data["request_GET_items"] = [
                (name, self.filter.cleanse_setting(name, value)) for name, value in data["request_GET_items"]
            ]
        return data

    def get_traceback_html(self) -> str:
        return scrub(super().get_traceback_html())

    def get_traceback_text(self) -> str:
        return scrub(super().get_traceback_text())
