"""A stand-in CA for the ARI sweep's database tests: a directory (with or without renewalInfo) and
renewalInfo answers set by the test, over plain local HTTP. The integration tests use the test ACME
proxy in front of Pebble instead (devstack/acme_proxy.py)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class StubCA:
    """A directory (with or without renewalInfo) and renewalInfo answers per certificate ID:
    `answers[cert_id] = (status, body, headers)`; unknown IDs get a 404 problem."""

    def __init__(self) -> None:
        self.answers: dict[str, tuple[int, bytes, dict]] = {}
        self.ari = True
        self.requests: list[str] = []
        self.directory_answer: tuple[int, bytes] | None = None  # instead of the directory
        self.slow: dict[str, float] = {}  # cert_id -> seconds between the headers and the body
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                stub.requests.append(self.path)
                if self.path == "/dir" and stub.directory_answer is not None:
                    self._send(*stub.directory_answer, {})
                    return
                if self.path == "/dir":
                    directory = {"newNonce": f"{stub.base}/nonce", "newOrder": f"{stub.base}/order"}
                    if stub.ari:
                        directory["renewalInfo"] = f"{stub.base}/renewal-info/"
                    self._send(200, json.dumps(directory).encode(), {})
                    return
                cert_id = self.path.rsplit("/", 1)[-1]
                status, body, headers = stub.answers.get(
                    cert_id,
                    (404, b'{"type": "urn:ietf:params:acme:error:malformed", "detail": "no such"}', {}),
                )
                self._send(status, body, headers, stub.slow.get(cert_id, 0))

            def _send(self, status: int, body: bytes, headers: dict, pause: float = 0) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                if pause:
                    self.wfile.flush()
                    time.sleep(pause)
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.directory_url = f"{self.base}/dir"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def window(
        self, cert_id: str, start, end, retry_after: str | None = "21600", explanation: str = ""
    ) -> None:
        body = {"suggestedWindow": {"start": start.isoformat(), "end": end.isoformat()}}
        if explanation:
            body["explanationURL"] = explanation
        headers = {"Retry-After": retry_after} if retry_after else {}
        self.answers[cert_id] = (200, json.dumps(body).encode(), headers)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
