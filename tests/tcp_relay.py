"""A TCP relay on a free local port that can cut every connection through it at once: what a
PostgreSQL restart, a failover or a proxy's restart looks like to the clients whose sessions it
carried (their sockets closed under them, with no goodbye from the server). While `refusing`, a
new connection is closed as soon as it is made: the server is down."""

from __future__ import annotations

import socket
import threading

from django.conf import settings


class TcpRelay:
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self.refusing = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.refusing:
                client.close()
                continue
            server = socket.create_connection(self.upstream)
            with self._lock:
                self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass

    def cut(self) -> int:
        """Closes every connection through the relay; returns how many there were."""
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        return len(sockets) // 2

    def close(self) -> None:
        self.listener.close()
        self.cut()


def database_relay() -> tuple[TcpRelay, str]:
    """A relay in front of the test database, and the DATABASE_URL that goes through it."""
    database = settings.DATABASES["default"]
    relay = TcpRelay((database.get("HOST") or "127.0.0.1", int(database.get("PORT") or 5432)))
    user = database.get("USER") or "postgres"
    password = f":{database['PASSWORD']}" if database.get("PASSWORD") else ""
    return relay, f"postgres://{user}{password}@127.0.0.1:{relay.port}/{database['NAME']}"
