"""The suite-wide leak check: every HTTP response the tests' Django clients receive, every log
record of the test process, every mail the suite's SMTP server received, and every log file the
suite's subprocesses wrote (web, workers, beat, Pebble, Redis) are searched for private-key
material when the session ends. A find fails the run.

The routers' endpoints' certificates (with their keys) are the one exception (ROUTERS_ENDPOINTS).
What counts as a leak: a PEM private-key marker, a Fernet token (a sealed key), a webhook signing
secret (whsec_..., outside the answers that show it once: SECRET_SHOWN), and the base64 of a DER
private key (PKCS#8, PKCS#1 or SEC1: recognized by how their encodings begin)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

LEAKS = {
    "a PEM private key": re.compile(rb"PRIVATE KEY-----"),
    # A token stands alone: its run of URL-safe base64 starts with it and holds no "+" or "/" (a
    # browser's log carries long standard base64 blobs, screenshots and fonts, whose zero bytes
    # spell "gAAAAA" mid-run).
    "a Fernet token (a sealed secret)": re.compile(
        rb"(?<![A-Za-z0-9+/_-])gAAAAA[A-Za-z0-9_-]{20,}(?![A-Za-z0-9+/])"
    ),
    "a webhook signing secret": re.compile(rb"whsec_[A-Za-z0-9+/]{20}"),
    "base64 of a DER private key": re.compile(
        rb"AgEAMBMGByqGSM49|AgEAMA0GCSqGSIb3DQEBAQUA|MHcCAQEE[A-Za-z0-9+/]{8}|MIGkAgEBBDA|"
        rb"MII[A-Za-z0-9+/]{2}[Ag]IBAAKCA"
    ),
}


# The places keys leave by design: the routers' endpoints answering a router's token with a
# certificate, the change feed or the snapshot (200). Their other answers (401, 403, 204, 304...) are checked
# like any response.
ROUTERS_ENDPOINTS = {"GET /routers/v1/certificate", "GET /routers/v1/changes", "GET /routers/v1/snapshot"}


# Where a webhook secret is shown by design, once: the answer that creates an endpoint or rotates
# its secret, and the admin page showing the message after either.
SECRET_SHOWN = re.compile(
    r"^(POST /api/v1/apps/[^/]+/webhooks(/\d+/rotate-secret)?|GET /admin/domains/webhookendpoint/.*)$"
)


class LeakWatch:
    def __init__(self) -> None:
        self.finds: list[str] = []
        self.responses = 0
        self.records = 0
        self.handed_to_routers = 0
        self.mails = 0

    def check(self, where: str, data: bytes, except_secrets: bool = False) -> None:
        for what, pattern in LEAKS.items():
            if except_secrets and what == "a webhook signing secret":
                continue
            match = pattern.search(data)
            if match:
                start = max(match.start() - 60, 0)
                excerpt = data[start : match.end() + 20].decode("utf-8", "replace")
                self.finds.append(f"{what} in {where}: ...{excerpt}...")

    def response(self, request_line: str, response) -> None:
        self.responses += 1
        if request_line in ROUTERS_ENDPOINTS and response.status_code == 200:
            self.handed_to_routers += 1
            return
        content = b"" if getattr(response, "streaming", False) else response.content
        shown = bool(SECRET_SHOWN.match(request_line)) and response.status_code in (200, 201)
        self.check(f"the response to {request_line}", content, except_secrets=shown)

    def mail(self, received) -> None:
        """A mail the suite's SMTP server received (devstack.mail_sink.Received), as sent."""
        self.mails += 1
        self.check(f"the mail {received.subject!r} to {', '.join(received.recipients)}", received.raw)

    def files(self, directory: Path) -> None:
        for path in sorted(directory.rglob("*.log")):
            self.check(f"log file {path.name}", path.read_bytes())


class RecordHandler(logging.Handler):
    """Formats every record of the test process (arguments included) and checks it."""

    def __init__(self, watch: LeakWatch) -> None:
        super().__init__(logging.DEBUG)
        self.watch = watch

    def emit(self, record: logging.LogRecord) -> None:
        self.watch.records += 1
        try:
            text = record.getMessage()
        except Exception:  # a record whose arguments do not format is still checked, raw
            text = f"{record.msg} {record.args}"
        if record.exc_info and record.exc_info[1] is not None:
            text += f" {record.exc_info[1]!r}"
        self.watch.check(f"a log record of {record.name}", text.encode("utf-8", "replace"))
