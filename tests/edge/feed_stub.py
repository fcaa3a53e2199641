"""A small real HTTP server speaking the routers' feed protocol, for the agent's tests: the snapshot
streamed as NDJSON line by line, the changes with long-poll semantics (a waiting request is answered
as soon as `publish` commits a change), a bearer token, and switches to misbehave (cut the snapshot,
answer 5xx, refuse the token, forget its history so that a cursor is ahead of it).

Certificates are real ones made by tests/pki.py; each candidate carries its chain and key as the
real feed does."""

from __future__ import annotations

import datetime
import hashlib
import json
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from cryptography.hazmat.primitives import serialization

from devstack.ports import free_port
from tests.pki import Pki, key_pem

TOKEN = "cwt_stub_router_token_6f1d2a9b8c7e"


def candidate(
    pki: Pki,
    name: str,
    *,
    source: str = "letsencrypt",
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
) -> dict:
    """A real certificate for `name` (its SAN), as a feed candidate with its chain and key."""
    now = datetime.datetime.now(datetime.UTC)
    not_before = not_before or now - datetime.timedelta(days=1)
    not_after = not_after or now + datetime.timedelta(days=90)
    # X.509 times have whole seconds: the candidate's window is the certificate's own.
    not_before = not_before.replace(microsecond=0)
    not_after = not_after.replace(microsecond=0)
    leaf, key = pki.leaf([name], not_before=not_before, not_after=not_after)
    return {
        "source": source,
        "fingerprint": hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest(),
        "not_before": not_before.isoformat(),
        "not_after": not_after.isoformat(),
        "pem": (pki.chain_pem(leaf) + key_pem(key)).decode(),
    }


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # An agent stopped during a long-poll leaves a broken pipe behind: not the stub's problem.
        pass


@dataclass
class FeedState:
    seq: int = 0
    names: dict[str, list[dict]] = field(default_factory=dict)
    log: list[tuple[int, str]] = field(default_factory=list)  # (seq, name) of every change


class FeedStub:
    def __init__(self, token: str = TOKEN, tls: ssl.SSLContext | None = None) -> None:
        self.token = token
        self.state = FeedState()
        self.cond = threading.Condition()
        self.requests: list[str] = []  # "snapshot" / "changes after=N" in arrival order
        self.down = False  # answer 503 to everything
        self.refuse = False  # answer 401 to everything
        self.cut_snapshot_after: int | None = None  # close the snapshot stream after N name lines
        self.omit_end_line = False  # end the snapshot cleanly but without its end line
        self.snapshot_line_delay = 0.0
        port = free_port()
        self.server = _Server(("127.0.0.1", port), self._handler())
        if tls is not None:  # HTTPS, as a feed reached across hosts should be
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        with self.cond:
            self.cond.notify_all()
        self.server.shutdown()
        self.server.server_close()

    # -- what the server holds ---------------------------------------------------------------------

    def publish(self, name: str, candidates: list[dict]) -> int:
        """Commit a change of `name` (no candidates: stop serving it); wakes waiting long-polls."""
        with self.cond:
            self.state.seq += 1
            if candidates:
                self.state.names[name] = candidates
            else:
                self.state.names.pop(name, None)
            self.state.log.append((self.state.seq, name))
            self.cond.notify_all()
            return self.state.seq

    def forget_history(self) -> None:
        """As after a database restore: the feed restarts lower than the cursors routers hold."""
        with self.cond:
            self.state = FeedState(seq=0, names=dict(self.state.names))

    def count(self, kind: str) -> int:
        return sum(1 for request in self.requests if request.startswith(kind))

    # -- the protocol ------------------------------------------------------------------------------

    def _changes_after(self, after: int, limit: int) -> tuple[int, list[dict]]:
        latest: dict[str, int] = {}
        for seq, name in self.state.log:
            if seq > after:
                latest[name] = seq
        picked = sorted(latest.items(), key=lambda item: item[1])[:limit]
        changes = [
            {"seq": seq, "name": name, "candidates": self.state.names.get(name, [])} for name, seq in picked
        ]
        cursor = picked[-1][1] if len(picked) == limit else max(self.state.seq, after)
        return cursor, changes

    def _handler(self):
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):
                pass

            def _json(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                if stub.down:
                    self._json(503, {"detail": "down"})
                    return
                if stub.refuse or self.headers.get("Authorization") != f"Bearer {stub.token}":
                    self._json(401, {"detail": "unknown or revoked token"})
                    return
                if parts.path == "/routers/v1/snapshot":
                    stub.requests.append("snapshot")
                    self._snapshot()
                elif parts.path == "/routers/v1/changes":
                    stub.requests.append(f"changes after={query.get('after')}")
                    self._changes(
                        int(query["after"]), int(query.get("limit", 1000)), int(query.get("wait", 0))
                    )
                else:
                    self._json(404, {"detail": "not found"})

            def _changes(self, after: int, limit: int, wait: int) -> None:
                deadline = time.monotonic() + wait
                with stub.cond:
                    if after > stub.state.seq:
                        self._json(409, {"detail": "cursor beyond the feed's end"})
                        return
                    while stub.state.seq <= after and not stub.down and not stub.refuse:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            break
                        stub.cond.wait(min(left, 0.5))
                    cursor, changes = stub._changes_after(after, limit)
                if stub.down:
                    self._json(503, {"detail": "down"})
                elif stub.refuse:
                    self._json(401, {"detail": "revoked"})
                else:
                    self._json(200, {"cursor": cursor, "changes": changes})

            def _snapshot(self) -> None:
                with stub.cond:
                    cursor = stub.state.seq
                    names = sorted(stub.state.names.items())
                self.send_response(200)
                self.send_header("Content-Type", "application/x-ndjson")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self._chunk(json.dumps({"cursor": cursor}) + "\n")
                for count, (name, candidates) in enumerate(names):
                    if stub.cut_snapshot_after is not None and count >= stub.cut_snapshot_after:
                        # Close without the end line or the final chunk: a connection that died.
                        self.close_connection = True
                        self.wfile.flush()
                        return
                    if stub.snapshot_line_delay:
                        time.sleep(stub.snapshot_line_delay)
                    self._chunk(json.dumps({"name": name, "candidates": candidates}) + "\n")
                if not stub.omit_end_line:
                    self._chunk(json.dumps({"end": True, "names": len(names)}) + "\n")
                self.wfile.write(b"0\r\n\r\n")

            def _chunk(self, text: str) -> None:
                data = text.encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

        return Handler
