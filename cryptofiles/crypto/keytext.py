"""Keys written as text: the one reader of a 32-byte key in base64.

File keys reach people as base64 (the ``/files/<id>/key`` answer, which the CLI's ``key``,
``download --decrypt`` and ``decrypt`` read back) and master keys are configured as base64
(``MASTER_KEYS``). Both are read here, so both accept the same forms: the standard or the URL-safe
alphabet (a key that went through a URL, say), with or without padding.
"""

from __future__ import annotations

import base64
import binascii
import re

from cryptofiles.crypto.errors import KeyFormatError
from cryptofiles.crypto.layout import KEY_SIZE

__all__ = ["decode_key"]

# Either alphabet, padding only at the end; whitespace is the caller's to remove (a config value
# is stripped, a pasted key may be wrapped), so that it is never silently part of a key here.
_BASE64 = re.compile(r"[A-Za-z0-9+/_-]+={0,2}")


def decode_key(text: str) -> bytes:
    """The ``KEY_SIZE``-byte key that ``text`` encodes in base64, else ``KeyFormatError``.

    The error says what is wrong ("key is not valid base64", "key must decode to 32 bytes, got
    16") and never repeats the text, which may be a key pasted in the wrong place.
    """
    if not _BASE64.fullmatch(text):
        raise KeyFormatError("key is not valid base64")
    unpadded = text.rstrip("=").replace("-", "+").replace("_", "/")
    try:
        key = base64.b64decode(unpadded + "=" * (-len(unpadded) % 4), validate=True)
    except (binascii.Error, ValueError):  # e.g. a length that no byte string encodes to
        raise KeyFormatError("key is not valid base64") from None
    if len(key) != KEY_SIZE:
        raise KeyFormatError(f"key must decode to {KEY_SIZE} bytes, got {len(key)}")
    return key
