"""Unit tests for domains.names: pure functions, no Django, no database."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domains.names import (
    RULES,
    InvalidDomainName,
    is_wildcard,
    normalize_domain_name,
    registered_domain,
    to_unicode,
)

PLATFORM = ("osc-fr1.example-paas.io",)

LABEL_63 = "a" * 63
# 63 + 1 + 63 + 1 + 63 + 1 + 57 + 4 (".com") = 253 octets.
NAME_253 = f"{LABEL_63}.{LABEL_63}.{LABEL_63}.{'b' * 57}.com"
NAME_254 = f"{LABEL_63}.{LABEL_63}.{LABEL_63}.{'b' * 58}.com"


def rejected(raw: object, rule: str, phrase: str, **kwargs: object) -> InvalidDomainName:
    """Assert normalize_domain_name rejects raw with this rule and a message containing phrase."""
    with pytest.raises(InvalidDomainName) as excinfo:
        normalize_domain_name(raw, **kwargs)  # type: ignore[arg-type]
    error = excinfo.value
    assert error.rule == rule, f"rule {error.rule!r}, message: {error}"
    assert phrase in str(error), str(error)
    assert error.rule in RULES
    return error


# --- accepted names and their canonical form ---------------------------------------------------


def test_idn_eszett_is_kept_non_transitional_as_a_label() -> None:
    assert normalize_domain_name("faß.de") == "xn--fa-hia.de"


def test_idn_result_differs_from_python_builtin_idna2003_codec() -> None:
    builtin = "faß.de".encode("idna").decode("ascii")
    assert builtin == "fass.de"
    assert normalize_domain_name("faß.de") != builtin


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("Bücher.DE", "xn--bcher-kva.de", id="idn_uppercase_umlaut_to_a_label"),
        pytest.param("пример.рф", "xn--e1afmkfd.xn--p1ai", id="idn_cyrillic_name_and_tld"),
        pytest.param("ς.gr", "xn--3xa.gr", id="idn_greek_final_sigma_kept"),
        pytest.param("xn--fa-hia.de", "xn--fa-hia.de", id="valid_a_label_passes_through"),
        pytest.param("XN--BCHER-KVA.de", "xn--bcher-kva.de", id="uppercase_a_label_lowercased"),
        pytest.param("WWW.Example.COM", "www.example.com", id="uppercase_is_lowercased"),
        pytest.param("example.com.", "example.com", id="one_trailing_dot_is_stripped"),
        pytest.param("  example.com \n", "example.com", id="surrounding_whitespace_is_stripped"),
        pytest.param("example\u3002com", "example.com", id="ideographic_full_stop_is_a_dot"),
        pytest.param(
            "\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com", "example.com", id="fullwidth_letters_are_folded"
        ),
        pytest.param("*.example.com", "*.example.com", id="wildcard_over_registered_domain"),
        pytest.param("*.Bücher.de", "*.xn--bcher-kva.de", id="wildcard_over_idn_domain"),
        pytest.param("*.shop.example.co.uk", "*.shop.example.co.uk", id="wildcard_over_subdomain"),
        pytest.param("my-app.github.io", "my-app.github.io", id="name_under_private_suffix"),
        pytest.param("city.kawasaki.jp", "city.kawasaki.jp", id="psl_exception_rule_is_registrable"),
        pytest.param("a1-b2.example.com", "a1-b2.example.com", id="inner_hyphen_and_digits_allowed"),
        pytest.param(f"{LABEL_63}.com", f"{LABEL_63}.com", id="label_of_exactly_63_octets"),
        pytest.param(NAME_253, NAME_253, id="name_of_exactly_253_octets"),
        pytest.param("a.b.c.d.e.f.g.h.example.com", "a.b.c.d.e.f.g.h.example.com", id="ten_labels_allowed"),
    ],
)
def test_normalizes_to(raw: str, expected: str) -> None:
    assert normalize_domain_name(raw) == expected


def test_idn_label_of_57_umlauts_fits_63_octets_once_encoded() -> None:
    name = normalize_domain_name("ü" * 57 + ".de")
    assert len(name.split(".")[0]) == 63


def test_platform_look_alike_not_under_the_suffix_is_accepted() -> None:
    got = normalize_domain_name("notosc-fr1.example-paas.io", reserved_suffixes=PLATFORM)
    assert got == "notosc-fr1.example-paas.io"


def test_platform_parent_domain_is_not_reserved_by_a_subdomain_suffix() -> None:
    got = normalize_domain_name("www.example-paas.io", reserved_suffixes=PLATFORM)
    assert got == "www.example-paas.io"


# --- rejections: each pins the rule code and a phrase of the human message --------------------


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(None, id="none"),
        pytest.param(b"example.com", id="bytes"),
        pytest.param(42, id="int"),
        pytest.param(["example.com"], id="list"),
    ],
)
def test_non_text_input_is_rejected(raw: object) -> None:
    rejected(raw, "not_text", "must be text")


@pytest.mark.parametrize(
    ("raw", "rule", "phrase"),
    [
        pytest.param("", "empty", "is empty", id="empty_string"),
        pytest.param("   \t\n", "empty", "is empty", id="only_whitespace"),
        pytest.param(".", "empty", "does not contain a domain name", id="only_a_dot"),
        pytest.param("exa mple.com", "whitespace", "contains a space", id="inner_space"),
        pytest.param("exa\tmple.com", "whitespace", "control character", id="inner_tab"),
        pytest.param("example.com\x00", "whitespace", "control character", id="nul_byte"),
        pytest.param("exa\u3000mple.com", "whitespace", "U+3000", id="ideographic_space"),
    ],
)
def test_empty_and_whitespace_are_rejected(raw: str, rule: str, phrase: str) -> None:
    rejected(raw, rule, phrase)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("192.0.2.1", id="ipv4_dotted_quad"),
        pytest.param("192.0.2.1.", id="ipv4_with_trailing_dot"),
        pytest.param("127.1", id="ipv4_short_form"),
        pytest.param("0x7f.1", id="ipv4_hex_form"),
        pytest.param("3232235521", id="ipv4_as_integer"),
        pytest.param("\uff11\uff19\uff12.\uff10.\uff12.\uff11", id="ipv4_fullwidth_digits"),
        pytest.param("2001:db8::1", id="ipv6"),
        pytest.param("::1", id="ipv6_loopback"),
        pytest.param("[2001:db8::1]", id="ipv6_in_brackets"),
        pytest.param("[::1]", id="ipv6_loopback_in_brackets"),
        pytest.param("::ffff:192.0.2.1", id="ipv4_mapped_ipv6"),
    ],
)
def test_ip_addresses_are_rejected(raw: str) -> None:
    error = rejected(raw, "ip_address", "is an IP address; a certificate needs a domain name")
    assert f'"{raw}"' in str(error)


def test_ip_address_message_matches_documented_example() -> None:
    error = rejected("192.0.2.1", "ip_address", "")
    assert str(error) == '"192.0.2.1" is an IP address; a certificate needs a domain name.'


@pytest.mark.parametrize(
    ("raw", "phrase"),
    [
        pytest.param("example.com..", '"example.com.."', id="double_trailing_dot"),
        pytest.param(".example.com", "dot at the start", id="leading_dot"),
        pytest.param("www..example.com", "two dots in a row", id="two_dots_in_a_row"),
        pytest.param("example\u3002\u3002com", "two dots in a row", id="two_ideographic_dots"),
        pytest.param("\u00ad.example.com", "empty part", id="label_made_only_of_ignored_soft_hyphen"),
    ],
)
def test_empty_labels_are_rejected(raw: str, phrase: str) -> None:
    rejected(raw, "empty_label", phrase)


@pytest.mark.parametrize(
    ("raw", "phrase"),
    [
        pytest.param("xn--ab.example.com", '"xn--ab" starts with "xn--" but is not', id="bad_punycode"),
        pytest.param("xn---bbk.example.com", '"xn---bbk"', id="non_canonical_punycode"),
        pytest.param("xn--ls8h.example.com", '"xn--ls8h"', id="punycode_of_disallowed_emoji"),
        pytest.param("☃.example.com", "U+2603", id="disallowed_symbol"),
        pytest.param("a\u200db.example.com", '"a\\u200db"', id="zero_width_joiner_out_of_context"),
        pytest.param("a\u200eb.example.com", "U+200E", id="bidi_control_character"),
        pytest.param("\udc80.example.com", "U+DC80", id="lone_surrogate"),
    ],
)
def test_invalid_idna_labels_are_rejected_naming_the_label(raw: str, phrase: str) -> None:
    rejected(raw, "idna", phrase)


@pytest.mark.parametrize(
    ("raw", "rule", "phrase"),
    [
        pytest.param(f"{'a' * 64}.com", "label_too_long", "is 64 characters long", id="label_of_64"),
        pytest.param(
            "ü" * 58 + ".de", "label_too_long", "64 characters long once encoded", id="idn_label_64"
        ),
        pytest.param("ü" * 70 + ".de", "label_too_long", "at most 63", id="idn_label_of_70_chars"),
        pytest.param(NAME_254, "name_too_long", "is 254 characters long", id="name_of_254"),
        pytest.param("a." * 600 + "com", "name_too_long", "at most 253", id="huge_input"),
        pytest.param("a.b.c.d.e.f.g.h.i.example.com", "too_many_labels", "at most 10", id="eleven_labels"),
    ],
)
def test_length_limits_are_enforced(raw: str, rule: str, phrase: str) -> None:
    rejected(raw, rule, phrase)


@pytest.mark.parametrize(
    ("raw", "rule", "phrase"),
    [
        pytest.param("my_app.example.com", "label_characters", "underscores", id="underscore"),
        pytest.param("_acme-challenge.example.com", "label_characters", '"_"', id="leading_underscore"),
        pytest.param("bü_cher.de", "label_characters", "underscores", id="underscore_in_idn_label"),
        pytest.param("https://example.com", "label_characters", 'without "https://"', id="url_scheme"),
        pytest.param("example.com:443", "label_characters", "a port", id="port"),
        pytest.param("exa!mple.com", "label_characters", "only letters, digits and hyphens", id="bang"),
        pytest.param("-app.example.com", "label_hyphen", '"-app" starts or ends', id="leading_hyphen"),
        pytest.param("app-.example.com", "label_hyphen", '"app-" starts or ends', id="trailing_hyphen"),
        pytest.param("ab--cd.example.com", "label_hyphen", "3rd and 4th", id="hyphens_3_4_not_xn"),
        pytest.param("-ü.de", "label_hyphen", "starts or ends", id="leading_hyphen_idn"),
        pytest.param("xn--.example.com", "label_hyphen", '"xn--" starts or ends', id="bare_xn_prefix"),
    ],
)
def test_label_syntax_is_enforced(raw: str, rule: str, phrase: str) -> None:
    rejected(raw, rule, phrase)


@pytest.mark.parametrize(
    ("raw", "rule", "phrase"),
    [
        pytest.param("localhost", "single_label", "needs at least one dot", id="localhost"),
        pytest.param("intranet", "single_label", '"intranet" is not a full domain name', id="intranet"),
        pytest.param("com", "public_suffix", "is a public suffix", id="icann_tld"),
        pytest.param("COM.", "public_suffix", '"example.com"', id="icann_tld_upper_trailing_dot"),
        pytest.param("co.uk", "public_suffix", '"example.co.uk"', id="icann_second_level"),
        pytest.param("github.io", "public_suffix", '"github.io" is a public suffix', id="private_section"),
        pytest.param("x.kawasaki.jp", "public_suffix", "public suffix", id="psl_wildcard_rule"),
        pytest.param("xn--p1ai", "public_suffix", "public suffix", id="idn_tld"),
    ],
)
def test_single_labels_and_public_suffixes_are_rejected(raw: str, rule: str, phrase: str) -> None:
    rejected(raw, rule, phrase)


@pytest.mark.parametrize(
    ("raw", "phrase"),
    [
        pytest.param(
            "example.internal", '".internal", which is not a public top-level domain', id="internal"
        ),
        pytest.param("example.test", '".test"', id="test"),
        pytest.param("x.local", '".local"', id="local"),
        pytest.param("example.zz", "no public certificate authority", id="unassigned_zz"),
        pytest.param("example.localhost", '".localhost"', id="localhost_tld"),
        pytest.param("abc.onion", "outside the public DNS", id="onion"),
        pytest.param("1.0.0.127.in-addr.arpa", "outside the public DNS", id="reverse_dns_arpa"),
    ],
)
def test_unknown_or_special_tlds_are_rejected(raw: str, phrase: str) -> None:
    rejected(raw, "unknown_tld", phrase)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("*", id="bare_star"),
        pytest.param("*example.com", id="star_glued_to_label"),
        pytest.param("w*.example.com", id="star_inside_label"),
        pytest.param("a.*.example.com", id="star_not_leftmost"),
        pytest.param("*.*.example.com", id="two_star_labels"),
        pytest.param("**.example.com", id="double_star"),
        pytest.param("example.*", id="star_as_tld"),
    ],
)
def test_malformed_wildcards_are_rejected(raw: str) -> None:
    rejected(raw, "wildcard", '"*" is only allowed as the whole first part')


@pytest.mark.parametrize(
    ("raw", "suffix"),
    [
        pytest.param("*.com", "com", id="icann_tld"),
        pytest.param("*.co.uk", "co.uk", id="icann_second_level"),
        pytest.param("*.github.io", "github.io", id="private_section"),
    ],
)
def test_wildcard_directly_over_public_suffix_is_rejected(raw: str, suffix: str) -> None:
    rejected(raw, "wildcard_public_suffix", f'public suffix "{suffix}"')


@pytest.mark.parametrize(
    ("raw", "reserved"),
    [
        pytest.param("osc-fr1.example-paas.io", PLATFORM, id="equal_to_suffix"),
        pytest.param("my-app.osc-fr1.example-paas.io", PLATFORM, id="under_suffix"),
        pytest.param("*.osc-fr1.example-paas.io", PLATFORM, id="wildcard_under_suffix"),
        pytest.param("My-App.OSC-FR1.example-paas.io.", PLATFORM, id="uppercase_trailing_dot_input"),
        pytest.param("a.osc-fr1.example-paas.io", (" OSC-FR1.Example-PaaS.io. ",), id="suffix_is_normalized"),
        pytest.param("a.osc-fr1.example-paas.io", "osc-fr1.example-paas.io", id="suffix_given_as_bare_str"),
        pytest.param("app.xn--bcher-kva.de", ("Bücher.de",), id="idn_suffix_matches_a_label_name"),
    ],
)
def test_platform_names_are_rejected(raw: str, reserved: object) -> None:
    rejected(raw, "platform_name", "belongs to the platform", reserved_suffixes=reserved)


def test_messages_quote_the_customer_input_as_typed() -> None:
    error = rejected("  Shop.Example.INTERNAL ", "unknown_tld", "")
    assert str(error).startswith('"Shop.Example.INTERNAL" ends in ".internal"')


def test_messages_escape_invisible_characters_and_cap_length() -> None:
    error = rejected("a\x07b.com", "whitespace", "")
    assert "\x07" not in str(error)
    assert '"a\\u0007b.com"' in str(error)
    long_error = rejected("a" * 300 + ".com", "label_too_long", "")
    assert len(str(long_error)) < 400


def test_exception_is_a_value_error_and_survives_pickling() -> None:
    error = rejected("192.0.2.1", "ip_address", "")
    assert isinstance(error, ValueError)
    clone = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own object
    assert (clone.rule, str(clone), clone.message) == ("ip_address", str(error), error.message)


def test_uniqueness_is_not_checked_same_name_normalizes_twice() -> None:
    assert normalize_domain_name("example.com") == normalize_domain_name("EXAMPLE.com.")


# --- registered_domain, is_wildcard, to_unicode -------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("a.b.example.co.uk", "example.co.uk", id="icann_multi_level_suffix"),
        pytest.param("www.example.com", "example.com", id="simple_subdomain"),
        pytest.param("example.com", "example.com", id="registered_domain_itself"),
        pytest.param("foo.github.io", "foo.github.io", id="private_section_suffix"),
        pytest.param("x.foo.github.io", "foo.github.io", id="under_private_section_suffix"),
        pytest.param("*.example.com", "example.com", id="wildcard"),
        pytest.param("www.xn--bcher-kva.de", "xn--bcher-kva.de", id="idn_a_labels"),
        pytest.param("city.kawasaki.jp", "city.kawasaki.jp", id="psl_exception_rule"),
        pytest.param("com", None, id="icann_tld_is_public"),
        pytest.param("co.uk", None, id="icann_suffix_is_public"),
        pytest.param("github.io", None, id="private_suffix_is_public"),
        pytest.param("*.co.uk", None, id="wildcard_over_public_suffix"),
    ],
)
def test_registered_domain(name: str, expected: str | None) -> None:
    assert registered_domain(name) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("*.example.com", True, id="wildcard"),
        pytest.param("example.com", False, id="plain"),
        pytest.param("www.example.com", False, id="subdomain"),
        pytest.param("w*.example.com", False, id="star_not_a_whole_label"),
    ],
)
def test_is_wildcard(name: str, expected: bool) -> None:
    assert is_wildcard(name) is expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("xn--fa-hia.de", "faß.de", id="eszett"),
        pytest.param("www.xn--bcher-kva.de", "www.bücher.de", id="mixed_labels"),
        pytest.param("*.xn--bcher-kva.de", "*.bücher.de", id="wildcard"),
        pytest.param("xn--e1afmkfd.xn--p1ai", "пример.рф", id="idn_tld"),
        pytest.param("example.com", "example.com", id="ascii_unchanged"),
        pytest.param("xn--ab.de", "xn--ab.de", id="invalid_a_label_falls_back_to_input"),
        pytest.param("", "", id="empty"),
    ],
)
def test_to_unicode(name: str, expected: str) -> None:
    assert to_unicode(name) == expected


def test_to_unicode_never_raises_on_non_text() -> None:
    assert to_unicode(None) is None  # type: ignore[arg-type]


# --- properties ---------------------------------------------------------------------------------

_LABEL_PIECES = st.sampled_from(
    ["a", "z", "0", "9", "-", "_", "*", "ß", "ü", "ς", "Ü", "xn--", "\u200d", "\u00ad", "。", " ", ":", "A"]
)
_LABELS = st.one_of(
    st.from_regex(r"[a-z0-9][a-z0-9-]{0,20}[a-z0-9]", fullmatch=True),
    st.lists(_LABEL_PIECES, min_size=0, max_size=8).map("".join),
    st.sampled_from(["xn--fa-hia", "xn--ab", "xn--p1ai", "*", "a" * 63, "a" * 64, "127", "[::1]"]),
)
_TLDS = st.sampled_from(["com", "de", "co.uk", "github.io", "internal", "zz", "xn--p1ai", "рф", "COM", ""])


@st.composite
def domain_like(draw: st.DrawFn) -> str:
    labels = draw(st.lists(_LABELS, min_size=0, max_size=5))
    name = ".".join([*labels, draw(_TLDS)])
    if draw(st.booleans()):
        name = "*." + name
    return name + draw(st.sampled_from(["", ".", "..", " ", "\t"]))


def check_normalizer_contract(raw: str) -> None:
    """Either a canonical ASCII fixed point comes back, or InvalidDomainName with a known rule."""
    try:
        name = normalize_domain_name(raw)
    except InvalidDomainName as error:
        assert error.rule in RULES
        assert str(error)
        return
    assert isinstance(name, str)
    assert name.isascii()
    assert name == name.lower()
    assert normalize_domain_name(name) == name
    assert normalize_domain_name(to_unicode(name)) == name
    assert len(name) <= 253


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.text())
def test_property_arbitrary_text_is_normalized_or_rejected_cleanly(raw: str) -> None:
    check_normalizer_contract(raw)


@settings(max_examples=200)
@given(st.text(alphabet=st.characters(exclude_categories=())))
def test_property_text_with_surrogates_is_normalized_or_rejected_cleanly(raw: str) -> None:
    check_normalizer_contract(raw)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(domain_like())
def test_property_domain_like_text_is_normalized_or_rejected_cleanly(raw: str) -> None:
    check_normalizer_contract(raw)


_LDH = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True).filter(lambda s: s[2:4] != "--")


@given(st.lists(_LDH, min_size=0, max_size=4), st.sampled_from(["com", "de", "co.uk", "fr"]))
def test_property_plain_ldh_names_under_real_tlds_are_accepted_unchanged(labels: list[str], tld: str) -> None:
    # The fixed label keeps random labels from ever forming a listed suffix such as "ltd.co.uk".
    name = ".".join([*labels, "certwright-test", tld])
    assert normalize_domain_name(name.upper() + ".") == name
