"""The DNS codec of the sweep, checked against messages dnspython builds."""

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest

from workers.dns_wire import (
    TYPES,
    MalformedMessage,
    decode_response,
    encode_query,
    encode_question,
    question_of,
)


def response(
    qname: str, rdtype: str, *rrsets: tuple[str, str, str], rcode=dns.rcode.NOERROR, authority=True
) -> bytes:
    query = dns.message.make_query(qname, rdtype)
    message = dns.message.make_response(query)
    message.set_rcode(rcode)
    for owner, kind, text in rrsets:
        message.answer.append(dns.rrset.from_text(owner, 60, "IN", kind, text))
    if authority:
        message.authority.append(dns.rrset.from_text("example.com.", 60, "IN", "SOA", "ns. admin. 1 2 3 4 5"))
    return message.to_wire()


def test_a_query_dnspython_can_read_back():
    wire = encode_query(4242, encode_question("www.Example.com", "AAAA"))
    parsed = dns.message.from_wire(wire)
    assert parsed.id == 4242
    assert parsed.flags & dns.flags.RD
    assert parsed.question[0].to_text() == "www.Example.com. IN AAAA"


def test_a_cname_chain_with_compressed_names_and_its_addresses():
    wire = response(
        "www.example.com",
        "A",
        ("www.example.com.", "CNAME", "my-app.osc-fr1.example-paas.io."),
        ("my-app.osc-fr1.example-paas.io.", "A", "192.0.2.10"),
    )
    answer = decode_response(wire, TYPES["A"])
    assert answer.cnames == ["my-app.osc-fr1.example-paas.io"]
    assert answer.addresses == ["192.0.2.10"]
    assert (answer.rcode, answer.truncated) == (0, False)


def test_aaaa_records_are_read_and_other_types_ignored():
    wire = response(
        "v6.example.com",
        "AAAA",
        ("v6.example.com.", "AAAA", "2001:db8::1"),
        ("v6.example.com.", "TXT", '"x"'),
    )
    assert decode_response(wire, TYPES["AAAA"]).addresses == ["2001:db8::1"]


def test_caa_records_keep_flags_tag_and_value():
    wire = response(
        "example.com", "CAA", ("example.com.", "CAA", '128 issue "letsencrypt.org; accounturi=https://a/1"')
    )
    assert decode_response(wire, TYPES["CAA"]).caa == [
        (128, "issue", "letsencrypt.org; accounturi=https://a/1")
    ]


def test_nxdomain_and_truncation_are_reported():
    assert decode_response(response("nope.example.com", "A", rcode=dns.rcode.NXDOMAIN), 1).rcode == 3
    message = dns.message.make_response(dns.message.make_query("big.example.com", "A"))
    message.flags |= dns.flags.TC
    assert decode_response(message.to_wire(), 1).truncated


def test_the_question_matches_case_insensitively():
    sent = encode_question("WWW.example.com", "A").lower()
    assert question_of(response("www.example.com", "A")) == sent


@pytest.mark.parametrize(
    "wire",
    [
        b"",
        b"\x00" * 11,
        response("x.example.com", "A", ("x.example.com.", "A", "1.2.3.4"), authority=False)[:-3],
    ],
)
def test_a_truncated_or_garbage_message_is_malformed(wire):
    with pytest.raises(MalformedMessage):
        decode_response(wire, 1)


def test_a_compression_loop_is_refused():
    header = b"\x00\x01\x81\x80\x00\x00\x00\x01\x00\x00\x00\x00"
    looping_rr = b"\xc0\x0c" + b"\x00\x05\x00\x01\x00\x00\x00\x3c\x00\x02" + b"\xc0\x0c"
    with pytest.raises(MalformedMessage, match="compression loop"):
        decode_response(header + looping_rr, 1)


def test_txt_records_join_their_character_strings_and_keep_each_record_apart():
    wire = response(
        "_certwright-challenge.www.example.com",
        "TXT",
        ("_certwright-challenge.www.example.com.", "TXT", '"cw-abc" "def"'),
        ("_certwright-challenge.www.example.com.", "TXT", '"v=spf1 -all"'),
    )
    assert sorted(decode_response(wire, TYPES["TXT"]).txt) == ["cw-abcdef", "v=spf1 -all"]


def test_a_txt_string_running_past_its_record_is_malformed():
    wire = bytearray(response("t.example.com", "TXT", ("t.example.com.", "TXT", '"abc"'), authority=False))
    # The string's length byte (just before "abc") claims more than the record holds.
    wire[wire.index(b"abc") - 1] = 9
    with pytest.raises(MalformedMessage):
        decode_response(bytes(wire), TYPES["TXT"])
