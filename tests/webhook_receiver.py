"""A webhook receiver for the tests: a real HTTP server on a loopback address, recording every
request it gets (headers and body) and answering what the test sets (a status, a body, a
redirect, a delay). It verifies nothing itself: the tests verify signatures with the
standardwebhooks package."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from devstack.ports import free_port


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


@dataclass
class Answer:
    status: int = 204
    body: bytes = b""
    location: str | None = None
    # Seconds the answer waits (a slow receiver, or one that never answers within the timeout).
    delay: float = 0.0


@dataclass
class Receiver:
    host: str
    port: int
    requests: list[Received] = field(default_factory=list)
    answer: Answer = field(default_factory=Answer)
    server: ThreadingHTTPServer | None = None
    stopping: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/hooks"

    def events(self) -> list[dict]:
        return [request.json() for request in self.requests]

    def stop(self) -> None:
        self.stopping.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def start_receiver(host: str = "127.0.0.3", port: int | None = None) -> Receiver:
    receiver = Receiver(host, port or free_port())
    lock = threading.Lock()
    stopping = receiver.stopping

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            with lock:
                receiver.requests.append(Received(self.path, dict(self.headers.items()), body))
            answer = receiver.answer
            if answer.delay and stopping.wait(answer.delay):
                return  # the receiver stops: no answer
            self.send_response(answer.status)
            if answer.location:
                self.send_header("Location", answer.location)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)

        def log_message(self, *args) -> None:
            pass

    class Server(ThreadingHTTPServer):
        # A listen backlog as a real receiver has (socketserver's is 5: a burst of new connections
        # would wait for SYN retransmissions, a second or more).
        request_queue_size = 256

    family_server = Server
    if ":" in host:
        import socket

        class V6Server(Server):
            address_family = socket.AF_INET6

        family_server = V6Server
    receiver.server = family_server((host, receiver.port), Handler)
    receiver.server.daemon_threads = True
    threading.Thread(target=receiver.server.serve_forever, daemon=True).start()
    return receiver
