"""Private keys at rest: sealed with MultiFernet from KEY_ENCRYPTION_KEYS (the first key seals, all open).

A sealed value is a `SealedSecret`, whose repr and str never show the plaintext nor the token, so a
model instance can be logged, printed or rendered without leaking. Only `reveal()` gives the bytes.
"""

from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.db import models


class SecretUnreadable(Exception):
    """A sealed value that none of KEY_ENCRYPTION_KEYS opens (a key was dropped too early)."""


@lru_cache(maxsize=4)
def _multifernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key) for key in keys])


def _current() -> MultiFernet:
    return _multifernet(tuple(settings.KEY_ENCRYPTION_KEYS))


class SealedSecret:
    """Ciphertext of a secret; the plaintext is only ever returned by `reveal()`."""

    __slots__ = ("token",)

    def __init__(self, token: str) -> None:
        self.token = token

    def __repr__(self) -> str:
        return "SealedSecret(<hidden>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SealedSecret) and other.token == self.token

    def __hash__(self) -> int:
        return hash(self.token)

    def reveal(self) -> bytes:
        """The plaintext; raises SecretUnreadable when no configured key opens it."""
        try:
            return _current().decrypt(self.token.encode("ascii"))
        except InvalidToken:
            raise SecretUnreadable(
                "a stored private key cannot be decrypted with any key in KEY_ENCRYPTION_KEYS"
            ) from None

    def sealed_with_newest_key(self) -> SealedSecret:
        """The same secret sealed with the first key of KEY_ENCRYPTION_KEYS."""
        try:
            return SealedSecret(_current().rotate(self.token.encode("ascii")).decode("ascii"))
        except InvalidToken:
            raise SecretUnreadable(
                "a stored private key cannot be decrypted with any key in KEY_ENCRYPTION_KEYS"
            ) from None


def seal(plaintext: bytes) -> SealedSecret:
    """Encrypts `plaintext` with the newest key."""
    if not isinstance(plaintext, bytes):
        raise TypeError("seal() takes bytes")
    return SealedSecret(_current().encrypt(plaintext).decode("ascii"))


class SealedSecretField(models.TextField):
    """A column holding a Fernet token; the Python value is a SealedSecret, never plaintext.

    Assigning anything but a SealedSecret (or None) raises, so plaintext cannot be written by mistake.
    Not editable: no admin form or model form renders it.
    """

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("editable", False)
        super().__init__(*args, **kwargs)

    def from_db_value(self, value, expression, connection):
        return None if value is None else SealedSecret(value)

    def to_python(self, value):
        if value is None or isinstance(value, SealedSecret):
            return value
        if isinstance(value, str):
            return SealedSecret(value)
        raise TypeError("a SealedSecretField holds SealedSecret values")

    def get_prep_value(self, value):
        if value is None:
            return None
        if isinstance(value, SealedSecret):
            return value.token
        raise TypeError("refusing to store a plaintext secret: seal() it first")

    def value_to_string(self, obj) -> str:
        # Serialization (dumpdata) must not export secrets either.
        return ""
