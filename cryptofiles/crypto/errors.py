"""The errors of the crypto package: one base class, one error per thing that can be rejected."""

from __future__ import annotations

__all__ = [
    "CryptoError",
    "DecryptionError",
    "IdentityError",
    "KeyFormatError",
    "KeyRingError",
    "RecipientError",
]


class CryptoError(Exception):
    """Base class of the crypto package's errors."""


class DecryptionError(CryptoError):
    """Ciphertext rejected: tampered, truncated, reordered, wrong key or bad header.

    Messages describe *where* decryption failed, never key material or plaintext.
    The causes are deliberately not distinguished further: with AEAD a wrong key and
    a modified segment look identical, and callers must treat both the same way.
    """


class KeyFormatError(CryptoError):
    """Text that is not a key in base64, or encodes a key of the wrong length.

    Messages say which, never the text itself.
    """


class KeyRingError(CryptoError):
    """Bad key ring configuration, unknown KEK id, or a wrapped key that fails to unwrap."""


class RecipientError(CryptoError):
    """Text that is not an X25519 age recipient (``age1...``); the message never repeats it."""


class IdentityError(CryptoError):
    """An age identity file that holds no usable X25519 identity; the message never repeats it."""
