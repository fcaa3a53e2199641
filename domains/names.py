"""Domain-name normalization shared by every part of Certwright.

Everything that stores, compares or sends a domain name to the CA goes through
``normalize_domain_name`` so that a name has exactly one spelling: lowercase A-labels
(IDNA 2008 / UTS 46 non-transitional), no trailing dot. Pure functions, no I/O.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import unicodedata
from collections.abc import Iterable

import idna
from publicsuffixlist import PublicSuffixList

__all__ = [
    "RULES",
    "InvalidDomainName",
    "is_wildcard",
    "normalize_domain_name",
    "registered_domain",
    "to_unicode",
]

MAX_LABEL_OCTETS = 63
MAX_NAME_OCTETS = 253
# Let's Encrypt (Boulder policy, maxLabels) refuses names with more labels than this,
# wildcard label included; rejecting early beats a failed order later.
MAX_LABELS = 10
# Far above anything that can normalize to 253 octets; also keeps idna's own
# 1024-character guard (which raises a generic error) out of reach.
_MAX_INPUT_CHARS = 1024

# ICANN TLDs that are on the PSL but for which no public CA can validate a name:
# .onion is not in the DNS and .arpa is infrastructure (reverse DNS, home.arpa).
_UNISSUABLE_TLDS = frozenset({"onion", "arpa"})

RULES = frozenset(
    {
        "not_text",
        "empty",
        "whitespace",
        "ip_address",
        "idna",
        "empty_label",
        "label_too_long",
        "name_too_long",
        "too_many_labels",
        "label_characters",
        "label_hyphen",
        "single_label",
        "wildcard",
        "wildcard_public_suffix",
        "public_suffix",
        "unknown_tld",
        "platform_name",
    }
)

_LDH_LABEL = re.compile(r"[a-z0-9-]+")
_NOT_LDH = re.compile(r"[^a-z0-9-]")
# The separators UTS 46 treats as dots, used only to locate the label at fault.
_ANY_DOT = re.compile("[.\u3002\uff0e\uff61]")
# WHATWG URL "ends in a number": browsers read such names as IPv4 (e.g. "127.1", "0x7f.1").
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")


class InvalidDomainName(ValueError):
    """Raised with .rule (a short stable code, e.g. "ip_address") and a message for humans."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message

    def __reduce__(self) -> tuple[type[InvalidDomainName], tuple[str, str]]:
        # Default exception pickling replays self.args (message only) and would lose the
        # rule; task queues pickle exceptions.
        return (type(self), (self.rule, self.message))


@functools.cache
def _full_psl() -> PublicSuffixList:
    # ICANN + private sections, as Let's Encrypt uses for "registered domain".
    return PublicSuffixList(accept_unknown=False)


@functools.cache
def _icann_psl() -> PublicSuffixList:
    return PublicSuffixList(accept_unknown=False, only_icann=True)


def _quote(text: str, limit: int = 80) -> str:
    """Quote user text for a message: escape invisible characters, cap the length."""
    shown = text if len(text) <= limit else text[: limit - 1] + "\u2026"
    escaped = "".join(ch if ch.isprintable() else f"\\u{ord(ch):04x}" for ch in shown)
    return f'"{escaped}"'


def _char_name(ch: str) -> str:
    shown = ch if ch.isprintable() else ""
    return f'"{shown}" (U+{ord(ch):04X})' if shown else f"U+{ord(ch):04X}"


def _looks_like_ip(candidate: str) -> bool:
    host = candidate[:-1] if candidate.endswith(".") else candidate
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return True
    # No TLD is numeric, so a numeric last label is an IPv4 in a non-dotted-quad spelling.
    return _NUMERIC_LABEL.fullmatch(host.rsplit(".", 1)[-1]) is not None


def _reject_ip(candidate: str, shown: str) -> None:
    if _looks_like_ip(candidate):
        raise InvalidDomainName(
            "ip_address", f"{_quote(shown)} is an IP address; a certificate needs a domain name."
        )


def _remap(text: str, shown: str) -> str:
    """Apply UTS 46 mapping (case folding, width folding, dot variants) to the whole name."""
    try:
        # Non-transitional, so ß and ς survive. The pinned idna (3.20) always processes
        # non-transitionally and deprecates the transitional argument, so it is not passed.
        return idna.uts46_remap(text, std3_rules=False)
    except idna.IDNAError as exc:
        label = next(
            (part for part in _ANY_DOT.split(text) if not _remaps(part)),
            text,
        )
        bad = chr(exc.codepoint) if exc.codepoint is not None else None
        what = f"the character {_char_name(bad)}" if bad else "a character"
        raise InvalidDomainName(
            "idna",
            f"{_quote(shown)}: the part {_quote(label)} contains {what}, "
            "which is not allowed in a domain name.",
        ) from exc


def _remaps(part: str) -> bool:
    try:
        idna.uts46_remap(part, std3_rules=False)
    except idna.IDNAError:
        return False
    return True


def _check_hyphens(label: str, shown: str) -> None:
    if label.startswith("-") or label.endswith("-"):
        raise InvalidDomainName(
            "label_hyphen",
            f"{_quote(shown)}: the part {_quote(label)} starts or ends with a hyphen, which is not allowed.",
        )
    if label[2:4] == "--" and not label.startswith("xn--"):
        raise InvalidDomainName(
            "label_hyphen",
            f"{_quote(shown)}: the part {_quote(label)} has hyphens in the 3rd and 4th positions, "
            'which are reserved for encoded international names ("xn--").',
        )


def _check_ascii_characters(label: str, shown: str) -> None:
    bad = [ch for ch in _NOT_LDH.findall(label) if ch.isascii()]
    if not bad:
        return
    ch = bad[0]
    message = (
        f"{_quote(shown)}: the part {_quote(label)} contains {_char_name(ch)}; "
        "only letters, digits and hyphens are allowed."
    )
    if ch == "_":
        message += " Public certificate authorities do not issue certificates for names with underscores."
    elif ch in ":/@?#":
        message += ' Enter only the domain name, without "https://", a port or a path.'
    raise InvalidDomainName("label_characters", message)


def _too_long(label: str, octets: int, shown: str, encoded: str | None = None) -> InvalidDomainName:
    how = f" once encoded as {_quote(encoded)}" if encoded else ""
    return InvalidDomainName(
        "label_too_long",
        f"{_quote(shown)}: the part {_quote(label)} is {octets} characters long{how}; "
        f"each part between dots can be at most {MAX_LABEL_OCTETS}.",
    )


def _encode_label(label: str, shown: str) -> str:
    """Validate one already-mapped label and return its A-label."""
    _check_ascii_characters(label, shown)
    _check_hyphens(label, shown)
    if label.isascii():
        if len(label) > MAX_LABEL_OCTETS:
            raise _too_long(label, len(label), shown)
        if label.startswith("xn--"):
            try:
                # ulabel() decodes, requires canonical Punycode and runs the IDNA 2008
                # code point, context and bidi checks on the result.
                idna.ulabel(label)
            except idna.IDNAError as exc:
                raise InvalidDomainName(
                    "idna",
                    f'{_quote(shown)}: the part {_quote(label)} starts with "xn--" but is not '
                    "a valid encoded international name.",
                ) from exc
        return label
    # Every code point costs at least one octet in the A-label, plus the "xn--" prefix.
    if len(label) > MAX_LABEL_OCTETS:
        raise _too_long(label, len(label), shown)
    try:
        encoded = idna.alabel(label).decode("ascii")
    except idna.IDNAError as exc:
        if exc.code == "label_too_long":
            full = "xn--" + label.encode("punycode").decode("ascii")
            raise _too_long(label, len(full), shown, full) from exc
        bad = chr(exc.codepoint) if exc.codepoint is not None else None
        what = f" because of the character {_char_name(bad)}" if bad else ""
        raise InvalidDomainName(
            "idna",
            f"{_quote(shown)}: the part {_quote(label)} is not a valid international domain name "
            f"label{what}.",
        ) from exc
    return encoded


def _public_suffix(shown: str, name: str) -> InvalidDomainName:
    return InvalidDomainName(
        "public_suffix",
        f"{_quote(shown)} is a public suffix: many different owners register domains under it, "
        f'so a certificate needs a name under it, such as "example.{name}".',
    )


def _normalize_suffix(suffix: str) -> str:
    cleaned = suffix.strip().strip(".").lower()
    if cleaned.isascii():
        return cleaned
    try:
        return idna.encode(cleaned, uts46=True).decode("ascii")
    except idna.IDNAError:
        # An unencodable suffix can never equal a normalized name; keep it inert.
        return cleaned


def normalize_domain_name(raw: str, *, reserved_suffixes: Iterable[str] = ()) -> str:
    """Return the canonical A-label form of a certificate name, or raise InvalidDomainName.

    Checks syntax, IDNA 2008, wildcard placement, the Public Suffix List and platform-owned suffixes.
    """
    if not isinstance(raw, str):
        raise InvalidDomainName("not_text", f"A domain name must be text, not {type(raw).__name__}.")
    text = raw.strip()
    if not text:
        raise InvalidDomainName("empty", "The domain name is empty.")
    if len(text) > _MAX_INPUT_CHARS:
        raise InvalidDomainName(
            "name_too_long",
            f"{_quote(text)} is {len(text)} characters long; a domain name can be at most {MAX_NAME_OCTETS}.",
        )
    for ch in text:
        if ch.isspace() or unicodedata.category(ch) in ("Cc", "Zs", "Zl", "Zp"):
            what = "a space" if ch == " " else f"an invisible space or control character ({_char_name(ch)})"
            raise InvalidDomainName(
                "whitespace",
                f"{_quote(text)} contains {what}; a domain name cannot contain spaces or control characters.",
            )

    _reject_ip(text.lower(), text)
    mapped = _remap(text, text)
    # Full-width digits and dots only become an IP address after mapping.
    _reject_ip(mapped, text)

    # Exactly one trailing dot is the DNS root; a second one is an empty label.
    if mapped.endswith("."):
        mapped = mapped[:-1]
    if not mapped:
        raise InvalidDomainName("empty", f"{_quote(text)} does not contain a domain name.")
    labels = mapped.split(".")

    encoded: list[str] = []
    for index, label in enumerate(labels):
        if not label:
            raise InvalidDomainName(
                "empty_label",
                f"{_quote(text)} has an empty part: two dots in a row, or a dot at the start or end.",
            )
        if "*" in label:
            if label == "*" and index == 0 and len(labels) > 1:
                encoded.append(label)
                continue
            raise InvalidDomainName(
                "wildcard",
                f'{_quote(text)}: "*" is only allowed as the whole first part of a name, '
                'as in "*.example.com".',
            )
        encoded.append(_encode_label(label, text))

    name = ".".join(encoded)
    if len(name) > MAX_NAME_OCTETS:
        raise InvalidDomainName(
            "name_too_long",
            f"{_quote(text)} is {len(name)} characters long once encoded; a domain name can be at most "
            f"{MAX_NAME_OCTETS}.",
        )
    if len(encoded) > MAX_LABELS:
        raise InvalidDomainName(
            "too_many_labels",
            f"{_quote(text)} has {len(encoded)} parts separated by dots; "
            f"Let's Encrypt accepts at most {MAX_LABELS}.",
        )

    full_psl = _full_psl()
    if len(encoded) == 1:
        if full_psl.is_public(name):
            raise _public_suffix(text, name)
        raise InvalidDomainName(
            "single_label",
            f'{_quote(text)} is not a full domain name; it needs at least one dot, as in "example.com".',
        )

    if isinstance(reserved_suffixes, str):
        # A bare string is a single suffix, not an iterable of one-character suffixes.
        reserved_suffixes = (reserved_suffixes,)
    for suffix in reserved_suffixes:
        reserved = _normalize_suffix(suffix)
        if reserved and (name == reserved or name.endswith("." + reserved)):
            raise InvalidDomainName(
                "platform_name",
                f"{_quote(text)} belongs to the platform ({_quote(reserved)}) and cannot be used "
                "as a custom domain.",
            )

    tld = encoded[-1]
    if tld in _UNISSUABLE_TLDS:
        raise InvalidDomainName(
            "unknown_tld",
            f'{_quote(text)} ends in ".{tld}", which is reserved for special uses outside the public DNS; '
            "no public certificate authority issues certificates for it.",
        )
    if not _icann_psl().is_public(tld):
        raise InvalidDomainName(
            "unknown_tld",
            f'{_quote(text)} ends in ".{tld}", which is not a public top-level domain; '
            "no public certificate authority issues certificates for it.",
        )

    wildcard = encoded[0] == "*"
    base = ".".join(encoded[1:]) if wildcard else name
    if full_psl.is_public(base):
        if wildcard:
            raise InvalidDomainName(
                "wildcard_public_suffix",
                f"{_quote(text)} is a wildcard directly over the public suffix {_quote(base)}, which is "
                'shared by many owners; a wildcard must be under your own domain, as in "*.example.com".',
            )
        raise _public_suffix(text, name)
    return name


def registered_domain(name: str) -> str | None:
    """Return the registrable domain of a normalized name (PSL incl. private section), or None.

    Unknown TLDs count as one-label public suffixes, like Let's Encrypt's publicsuffix-go default rule.
    """
    base = name[2:] if name.startswith("*.") else name
    return _full_psl().privatesuffix(base.lower(), accept_unknown=True)


def is_wildcard(name: str) -> bool:
    """Return True for a wildcard name such as "*.example.com"."""
    return name.startswith("*.")


def to_unicode(name: str) -> str:
    """Return the name with A-labels shown as Unicode for display; never raises (returns input instead)."""
    try:
        labels = [idna.ulabel(label) if label[:4].lower() == "xn--" else label for label in name.split(".")]
        return ".".join(labels)
    except Exception:
        # Display code must not fail on stored or foreign data; the raw form is still correct.
        return name
