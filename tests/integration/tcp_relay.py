"""A TCP relay on loopback that a test can freeze: every byte stops, every socket stays open.

Frozen, it is what a host cut off from the network looks like to both ends: connections neither
fail nor answer, and new ones get no reply. Thawed, the bytes held meanwhile flow again.
"""

from __future__ import annotations

import select
import socket
import threading


class FreezableRelay:
    """Forwards 127.0.0.1:<port> to `upstream` until `freeze()`; `close()` ends it."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._thawed = threading.Event()
        self._thawed.set()
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def freeze(self) -> None:
        self._thawed.clear()

    def thaw(self) -> None:
        self._thawed.set()

    def close(self) -> None:
        self._closed.set()
        self._thawed.set()
        for sock in [self._listener, *self._sockets]:
            sock.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        self._thawed.wait()  # frozen: the client's connection attempt goes unanswered
        if self._closed.is_set():
            client.close()
            return
        server = socket.create_connection(self.upstream)
        self._sockets += [client, server]
        threading.Thread(target=self._pump, args=(server, client), daemon=True).start()
        self._pump(client, server)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        while not self._closed.is_set():
            self._thawed.wait()
            try:
                readable, _, _ = select.select([source], [], [], 0.1)
                if not readable or not self._thawed.is_set():
                    continue
                data = source.recv(65536)
                if not data:
                    sink.shutdown(socket.SHUT_WR)
                    return
                sink.sendall(data)
            except OSError:
                return
