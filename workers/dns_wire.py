"""The little of the DNS wire format (RFC 1035) the check needs: a query with one question, and the
answer section of a response (A, AAAA, CNAME, CAA, TXT). Authority and additional sections are never
parsed. Built for speed: the sweep sends hundreds of thousands of queries a minute."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field

TYPES = {"A": 1, "CNAME": 5, "TXT": 16, "AAAA": 28, "CAA": 257}
_HEADER = struct.Struct("!HHHHHH")
_RR = struct.Struct("!HHIH")
FLAG_RD = 0x0100
FLAG_TC = 0x0200
FLAG_QR = 0x8000
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


class MalformedMessage(ValueError):
    """Bytes that are not a DNS message we can read."""


@dataclass
class Answer:
    rcode: int
    truncated: bool
    cnames: list[str] = field(default_factory=list)
    addresses: list[str] = field(default_factory=list)
    caa: list[tuple[int, str, str]] = field(default_factory=list)
    # Each TXT record's character-strings joined, as RFC 7208 reads them.
    txt: list[str] = field(default_factory=list)


def encode_name(name: str) -> bytes:
    labels = [label.encode("ascii") for label in name.rstrip(".").split(".")]
    if any(not 0 < len(label) < 64 for label in labels):
        raise MalformedMessage(f"not a valid name for a query: {name!r}")
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\x00"


def encode_question(name: str, rdtype: str) -> bytes:
    return encode_name(name) + struct.pack("!HH", TYPES[rdtype], 1)


def encode_query(query_id: int, question: bytes) -> bytes:
    """A recursive query (RD set) with one question, no EDNS."""
    return _HEADER.pack(query_id, FLAG_RD, 1, 0, 0, 0) + question


def _skip_name(data: bytes, pos: int) -> int:
    while True:
        if pos >= len(data):
            raise MalformedMessage("name runs past the message")
        length = data[pos]
        if length == 0:
            return pos + 1
        if length & 0xC0 == 0xC0:
            return pos + 2
        pos += length + 1


def _read_name(data: bytes, pos: int) -> str:
    labels: list[str] = []
    jumps = 0
    while True:
        if pos >= len(data):
            raise MalformedMessage("name runs past the message")
        length = data[pos]
        if length == 0:
            return ".".join(labels).lower()
        if length & 0xC0 == 0xC0:
            jumps += 1
            if jumps > 20 or pos + 1 >= len(data):
                raise MalformedMessage("compression loop")
            pos = ((length & 0x3F) << 8) | data[pos + 1]
            continue
        labels.append(data[pos + 1 : pos + 1 + length].decode("ascii", "replace"))
        pos += length + 1


def _read_character_strings(rdata: bytes) -> str:
    parts, pos = [], 0
    while pos < len(rdata):
        length = rdata[pos]
        if pos + 1 + length > len(rdata):
            raise MalformedMessage("TXT string runs past its record")
        parts.append(rdata[pos + 1 : pos + 1 + length])
        pos += 1 + length
    return b"".join(parts).decode("utf-8", "replace")


def question_of(data: bytes) -> bytes:
    """The raw question section of a one-question message (to match answers to queries)."""
    end = _skip_name(data, 12) + 4
    return data[12:end].lower()


def decode_response(data: bytes, wanted: int) -> Answer:
    """The answer section of a response: CNAME targets, and the records of type `wanted`."""
    if len(data) < 12:
        raise MalformedMessage("shorter than a DNS header")
    _, flags, qdcount, ancount, _, _ = _HEADER.unpack_from(data)
    answer = Answer(rcode=flags & 0xF, truncated=bool(flags & FLAG_TC))
    pos = 12
    for _ in range(qdcount):
        pos = _skip_name(data, pos) + 4
    for _ in range(ancount):
        pos = _skip_name(data, pos)
        rdtype, _, _, rdlength = _RR.unpack_from(data, pos)
        start = pos + _RR.size
        rdata = data[start : start + rdlength]
        if len(rdata) != rdlength:
            raise MalformedMessage("record runs past the message")
        if rdtype == 5:
            answer.cnames.append(_read_name(data, start))
        elif rdtype == wanted == 1 and rdlength == 4:
            answer.addresses.append(socket.inet_ntop(socket.AF_INET, rdata))
        elif rdtype == wanted == 28 and rdlength == 16:
            answer.addresses.append(socket.inet_ntop(socket.AF_INET6, rdata))
        elif rdtype == wanted == 16:
            answer.txt.append(_read_character_strings(rdata))
        elif rdtype == wanted == 257 and rdlength >= 2:
            tag_length = rdata[1]
            tag = rdata[2 : 2 + tag_length].decode("ascii", "replace")
            answer.caa.append((rdata[0], tag, rdata[2 + tag_length :].decode("utf-8", "replace")))
        pos = start + rdlength
    return answer
