"""Names as the feed gives them, and the file names the agent gives them on disk.

A name is a lower-case A-label host name, or `*.` followed by one (a wildcard). Such names hold only
`a-z`, `0-9`, `-` and `.`, so the file name of a wildcard can use a character no host name has:
`*.example.com` is stored as `_wildcard.example.com` and no real name can map to that.
"""

from __future__ import annotations

import re

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_NAME = re.compile(rf"(?:\*\.)?(?:{_LABEL}\.)*{_LABEL}")
WILDCARD_PREFIX = "_wildcard."


class BadName(ValueError):
    """A name the feed sent that is not a lower-case host name or wildcard."""


def check_name(name: object) -> str:
    """`name` if it is a lower-case host name or `*.` + one; else BadName naming it (shortened)."""
    if not isinstance(name, str) or len(name) > 253 or not _NAME.fullmatch(name):
        raise BadName(f"not a host name: {str(name)[:80]!r}")
    return name


def file_stem(name: str) -> str:
    """The file name (without extension) of a checked name: itself, a wildcard's `*.` spelled
    `_wildcard.` (no host name holds an underscore, so it cannot collide)."""
    if name.startswith("*."):
        return WILDCARD_PREFIX + name[2:]
    return name


def name_of_stem(stem: str) -> str:
    """The name a file stem stands for (the inverse of file_stem)."""
    if stem.startswith(WILDCARD_PREFIX):
        return "*." + stem[len(WILDCARD_PREFIX) :]
    return stem


def lookup_order(server_name: str) -> tuple[str, ...]:
    """The names that can serve a TLS server name, best first: itself, then the wildcard one label up."""
    server_name = server_name.strip().rstrip(".").lower()
    if not server_name:
        return ()
    head, dot, parent = server_name.partition(".")
    if dot and parent and head != "*":
        return (server_name, "*." + parent)
    return (server_name,)
