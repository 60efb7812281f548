"""Sealing file keys to a user's own public keys with age (https://age-encryption.org/v1).

The only module that touches age, through ``pyrage`` (Python bindings of rage, the Rust
implementation): X25519 recipients (``age1...``), identities (``AGE-SECRET-KEY-1...``), encryption to
several recipients at once, in binary or ASCII-armored form. Nothing here implements X25519 or
ChaCha20-Poly1305 itself. What we seal is readable by any age implementation (the stock ``age``
CLI opens it in the tests), and what any of them seals we can open.

Errors never carry the text they reject: a recipient or identity may be long, or a secret pasted
into the wrong field.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import pyrage
from pyrage import x25519

from cryptofiles.crypto.errors import DecryptionError, IdentityError, RecipientError

__all__ = ["NewIdentity", "new_identity", "parse_recipient", "seal", "unseal"]

# An X25519 recipient is 62 characters; anything much longer is refused before it is parsed.
MAX_RECIPIENT_CHARS = 100
# An identity file holds one key a line (74 characters) and comments: a few KiB is plenty.
MAX_IDENTITY_CHARS = 64 * 1024
SECRET_KEY_PREFIX = "AGE-SECRET-KEY-1"  # noqa: S105 - the format's prefix, not a secret


@dataclasses.dataclass(frozen=True)
class NewIdentity:
    secret: str = dataclasses.field(repr=False)  # AGE-SECRET-KEY-1...
    recipient: str  # age1...


def parse_recipient(text: str) -> str:
    """The canonical form of an X25519 age recipient (``age1...``, lower case); RecipientError
    for anything else (another recipient type, an identity, a typo). Surrounding whitespace, as
    a pasted ``age-keygen -y`` line has, is ignored."""
    text = text.strip()
    if len(text) > MAX_RECIPIENT_CHARS or not text.lower().startswith("age1"):
        raise RecipientError("not an age X25519 recipient (age1...)")
    try:
        return str(x25519.Recipient.from_str(text))
    except pyrage.RecipientError:
        raise RecipientError("not an age X25519 recipient (age1...)") from None


def seal(data: bytes, recipients: Iterable[str], *, armor: bool) -> bytes:
    """An age file of ``data`` that each of ``recipients`` can open; ASCII-armored with ``armor``
    (PEM-like text, ``-----BEGIN AGE ENCRYPTED FILE-----``), else the binary format."""
    parsed = [x25519.Recipient.from_str(parse_recipient(r)) for r in recipients]
    if not parsed:
        raise RecipientError("sealing needs at least one recipient")
    return pyrage.encrypt(data, parsed, armored=armor)


def unseal(sealed: bytes, identity_text: str) -> bytes:
    """Open an age file (binary or armored) with the identities of an age identity file (one
    ``AGE-SECRET-KEY-1...`` a line, ``#`` comments). IdentityError for a file with none or a
    broken one; DecryptionError when none of them opens it, or it was altered."""
    identities = parse_identities(identity_text)
    try:
        return pyrage.decrypt(sealed, identities)
    except pyrage.DecryptError:
        raise DecryptionError(
            "the sealed key does not open with this identity, or it was altered"
        ) from None


def parse_identities(text: str) -> list[x25519.Identity]:
    if len(text) > MAX_IDENTITY_CHARS:
        raise IdentityError("an age identity file is a few lines; this one is far longer")
    identities = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not line.startswith(SECRET_KEY_PREFIX):
            raise IdentityError(
                f"line {number} is not an X25519 age identity (AGE-SECRET-KEY-1...)"
            )
        try:
            identities.append(x25519.Identity.from_str(line))
        except pyrage.IdentityError:
            raise IdentityError(f"line {number} is not a valid age identity") from None
    if not identities:
        raise IdentityError("the file holds no age identity (AGE-SECRET-KEY-1...)")
    return identities


def new_identity() -> NewIdentity:
    """A fresh X25519 identity and its recipient."""
    identity = x25519.Identity.generate()
    return NewIdentity(str(identity), str(identity.to_public()))
