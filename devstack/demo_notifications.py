"""`make run`'s notifications: an SMTP sink whose mails can be read in a browser
(devstack/mail_sink.py), and a webhook receiver for the demo app that verifies every signature
with the standardwebhooks package and prints each event. Both run in `make run`'s own process, so
what they get is printed with the rest of its output."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from django.utils import timezone
from standardwebhooks import Webhook, WebhookVerificationError

from devstack.mail_sink import MailSink, serve_page
from domains.models import App, EventType
from domains.notification_models import NotificationSettings
from domains.webhook_models import WebhookEndpoint
from domains.webhooks import create_endpoint, enable_endpoint, signing_secrets


def start_mail_sink(
    smtp_port: int, page_port: int, directory: Path, say
) -> tuple[MailSink, ThreadingHTTPServer]:
    """The SMTP sink on 127.0.0.1:`smtp_port` (each mail also an .eml file in `directory`) and its
    page on `page_port`; each mail is announced with `say`."""

    def announce(number: int, received) -> None:
        say(
            f"mail: to {', '.join(received.recipients)}: {received.subject}  (http://localhost:{page_port}/mail/{number})"
        )

    sink = MailSink("127.0.0.1", smtp_port, directory, on_mail=announce).start()
    return sink, serve_page(sink, page_port)


class DemoReceiver:
    """A webhook receiver on 127.0.0.1:`port`, verifying with the endpoint's current secrets."""

    def __init__(self, port: int, say) -> None:
        self.port, self.say = port, say
        self.secrets: list[str] = []
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def start(self) -> DemoReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = min(int(self.headers.get("Content-Length") or 0), 1 << 20)
                body = self.rfile.read(length)
                headers = {key.lower(): value for key, value in self.headers.items()}
                verified = None
                for secret in receiver.secrets:
                    try:
                        verified = Webhook(secret).verify(body, headers)
                        break
                    except WebhookVerificationError:
                        continue
                if verified is None:
                    receiver.say(
                        f"webhook: REFUSED a request whose signature does not verify ({len(body)} bytes)"
                    )
                    self.send_response(401)
                else:
                    data = verified.get("data", {})
                    receiver.say(
                        f"webhook: {verified.get('type')} {data.get('domain')} (signature verified)"
                        + (f": {data['reason']}" if data.get("reason") else "")
                    )
                    self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, name="webhook-demo", daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def ensure_demo_webhook(app: App, receiver: DemoReceiver) -> WebhookEndpoint:
    """The demo app's endpoint at the receiver (made once; enabled again if a stopped receiver got it
    disabled); the receiver verifies with its secrets, read from the database."""
    endpoint = WebhookEndpoint.objects.filter(app=app, url=receiver.url).first()
    if endpoint is None:
        endpoint, _ = create_endpoint(app, receiver.url, description="make run's demo receiver")
    elif not endpoint.enabled:
        enable_endpoint(endpoint)
    receiver.secrets = signing_secrets(endpoint, timezone.now())
    return endpoint


def ensure_demo_notifications(app: App) -> None:
    """The demo's owner (the admin user) is mailed every event type, each at once, so the demo's
    certificate sends a mail; once, so a choice made later in the admin or the CLI is kept."""
    NotificationSettings.objects.get_or_create(
        user=app.owner, defaults={"event_types": list(EventType.values), "digest_seconds": 0}
    )
