"""Tiny DNS servers for what challtestsrv cannot do: answer NXDOMAIN (optionally after a CNAME, as a
recursive resolver does when a chain ends at a name that does not exist), or never answer at all."""

from __future__ import annotations

import socket
import threading

import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset


class DnsStub:
    """A UDP server on 127.0.0.1 that answers every query with `rcode`, or drops it when None; with
    `cname_to`, the answer section says the queried name is a CNAME to it."""

    def __init__(self, rcode: int | None = dns.rcode.NXDOMAIN, cname_to: str | None = None) -> None:
        self.rcode = rcode
        self.cname_to = cname_to
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.queries = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> DnsStub:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.sock.close()

    def _serve(self) -> None:
        while True:
            try:
                wire, address = self.sock.recvfrom(4096)
            except OSError:
                return
            self.queries += 1
            if self.rcode is None:
                continue
            query = dns.message.from_wire(wire)
            response = dns.message.make_response(query)
            response.set_rcode(self.rcode)
            if self.cname_to is not None:
                question = query.question[0]
                response.answer.append(
                    dns.rrset.from_text(
                        question.name, 60, dns.rdataclass.IN, dns.rdatatype.CNAME, self.cname_to + "."
                    )
                )
            self.sock.sendto(response.to_wire(), address)
