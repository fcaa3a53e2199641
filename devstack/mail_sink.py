"""A local SMTP server that keeps every mail: the test suite's (tests/conftest.py `smtp`) and
`make run`'s, where mails can be read in a browser.

    python -m devstack.mail_sink --smtp-port 8025 --http-port 8026 --dir .run/mail

It is a real SMTP server (aiosmtpd): Django's SMTP backend talks to it as to any other. Each mail is
kept in memory (parsed) and, given a directory, written there as an .eml file; the HTTP page lists
them, newest first, and shows each one's HTML or text part.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import html
import logging
import threading
import time
from dataclasses import dataclass
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from aiosmtpd.controller import Controller


@dataclass(frozen=True)
class Received:
    sender: str
    recipients: list[str]
    message: EmailMessage
    raw: bytes
    # The client's address and port: one per SMTP connection.
    peer: tuple = ()

    @property
    def subject(self) -> str:
        return str(self.message["Subject"] or "")

    def part(self, content_type: str) -> str:
        """The body of the first part of `content_type` (text/plain, text/html), or ""."""
        for part in self.message.walk():
            if part.get_content_type() == content_type and not part.is_multipart():
                return part.get_content()
        return ""


class MailSink:
    """An SMTP server on `host:port` keeping every mail in `.mails` (and in `directory`, if given)."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 8025, directory: Path | None = None, on_mail=None
    ) -> None:
        self.host, self.port, self.directory = host, port, directory
        # Called with each Received as it arrives (`make run` prints a line).
        self.on_mail = on_mail
        self.mails: list[Received] = []
        self.refuse = False
        self._lock = threading.Lock()
        self._controller: Controller | None = None

    async def handle_DATA(self, server, session, envelope) -> str:
        if self.refuse:
            return "451 4.3.0 the test made this server refuse mail"
        raw = envelope.original_content or envelope.content
        message = email.message_from_bytes(raw, policy=email.policy.default)
        received = Received(
            envelope.mail_from, list(envelope.rcpt_tos), message, raw, tuple(session.peer or ())
        )
        with self._lock:
            self.mails.append(received)
            number = len(self.mails)
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            (self.directory / f"{number:06d}.eml").write_bytes(raw)
        if self.on_mail is not None:
            self.on_mail(number, received)
        return "250 OK"

    def start(self) -> MailSink:
        # aiosmtpd logs every SMTP command at INFO.
        logging.getLogger("mail.log").setLevel(logging.WARNING)
        self._controller = Controller(self, hostname=self.host, port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def clear(self) -> None:
        with self._lock:
            self.mails.clear()

    def wait_for(self, count: int = 1, timeout: float = 30.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.mails) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.mails)} mail(s) arrived within {timeout:g} s, not {count}")
            time.sleep(0.05)
        return list(self.mails)


def serve_page(sink: MailSink, port: int) -> ThreadingHTTPServer:
    """The page listing the sink's mails on 127.0.0.1:`port`, served from a thread."""
    server = ThreadingHTTPServer(("127.0.0.1", port), _page(sink))
    threading.Thread(target=server.serve_forever, name="mail-page", daemon=True).start()
    return server


def _page(sink: MailSink):
    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            mails = list(sink.mails)
            if (
                self.path.startswith("/mail/")
                and self.path[6:].isdigit()
                and 0 < int(self.path[6:]) <= len(mails)
            ):
                found = mails[int(self.path[6:]) - 1]
                body = found.part("text/html") or f"<pre>{html.escape(found.part('text/plain'))}</pre>"
            else:
                rows = "".join(
                    f"<tr><td>{number}</td><td>{html.escape(str(m.message['Date'] or ''))}</td>"
                    f"<td>{html.escape(', '.join(m.recipients))}</td>"
                    f'<td><a href="/mail/{number}">{html.escape(m.subject) or "(no subject)"}</a></td></tr>'
                    for number, m in reversed(list(enumerate(mails, start=1)))
                )
                body = (
                    "<!DOCTYPE html><meta charset=utf-8><title>Mails</title><h1>Mails sent by Certwright</h1>"
                    "<table cellpadding=4><tr><th>#</th><th>Date</th><th>To</th><th>Subject</th></tr>"
                    f"{rows}</table>"
                )
            data = body.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:
            pass

    return Page


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.mail_sink", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--smtp-port", type=int, default=8025)
    parser.add_argument("--http-port", type=int, default=8026)
    parser.add_argument("--dir", type=Path, help="also write each mail here as an .eml file")
    args = parser.parse_args(argv)
    sink = MailSink("127.0.0.1", args.smtp_port, args.dir).start()
    server = ThreadingHTTPServer(("127.0.0.1", args.http_port), _page(sink))
    print(
        f"mail sink: SMTP on 127.0.0.1:{args.smtp_port}, mails at http://127.0.0.1:{args.http_port}/",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        sink.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
