"""Where every byte of the streaming format lives: its constants and its size arithmetic.

Pure arithmetic, no cryptography: sizes of ciphertexts and plaintexts, how many segments a
file has, and which segment holds a plaintext offset (the format itself is described in
``stream.py``). The key ring shares the key and tag sizes, so they are declared here once.
"""

from __future__ import annotations

from typing import Final

from cryptofiles.crypto.errors import DecryptionError

__all__ = [
    "ALGORITHM",
    "FIRST_CIPHER",
    "FIRST_PLAIN",
    "FORMAT",
    "HEADER_SIZE",
    "KEY_SIZE",
    "MAX_SEGMENTS",
    "NONCE_PREFIX_SIZE",
    "PLAIN",
    "SEGMENT_SIZE",
    "TAG_SIZE",
    "Buffer",
    "check_key",
    "ciphertext_size",
    "plaintext_offset_of_segment",
    "plaintext_segment_range",
    "plaintext_segment_size",
    "plaintext_size",
    "segment_count",
]

SEGMENT_SIZE: Final = 1 << 20  # ciphertext segment size; the GridFS chunk size equals it
KEY_SIZE: Final = 32  # file keys, derived keys and KEKs are all AES-256 keys
TAG_SIZE: Final = 16  # AES-GCM tag appended to every segment
NONCE_PREFIX_SIZE: Final = 7  # Tink fixes this; 7 + 4 (index) + 1 (last flag) = 12-byte GCM nonce
HEADER_SIZE: Final = 1 + KEY_SIZE + NONCE_PREFIX_SIZE  # 40: length byte || salt || nonce prefix
FORMAT: Final = "tink-aes-gcm-hkdf-streaming"  # format name reported to clients
ALGORITHM: Final = "AES256_GCM_HKDF_1MB"  # Tink key template name

# The format's inner sizes, used by stream.py (not re-exported by the package).
# Plaintext capacity of segment 0 and of every later segment.
FIRST_PLAIN: Final = SEGMENT_SIZE - HEADER_SIZE - TAG_SIZE  # 1_048_520
PLAIN: Final = SEGMENT_SIZE - TAG_SIZE  # 1_048_560
# Ciphertext length of a full segment 0 (header excluded) and of a full later segment.
FIRST_CIPHER: Final = SEGMENT_SIZE - HEADER_SIZE
# The segment index is a 32-bit counter in the nonce; beyond it nonces would repeat.
MAX_SEGMENTS: Final = 1 << 32

Buffer = bytes | bytearray | memoryview


def check_key(key: Buffer, what: str = "key") -> bytes:
    """``key`` as bytes, if it is a buffer of ``KEY_SIZE`` bytes (for file keys and wraps)."""
    # A wrong-length key is a programming error, not a decryption failure, so it is a
    # ValueError rather than DecryptionError.  The message carries only the length.
    if not isinstance(key, bytes | bytearray | memoryview):
        raise TypeError(f"{what} must be bytes")
    key = bytes(key)
    if len(key) != KEY_SIZE:
        raise ValueError(f"{what} must be {KEY_SIZE} bytes, got {len(key)}")
    return key


def _segments_for_plaintext(size: int) -> int:
    if size <= FIRST_PLAIN:
        return 1
    return 1 + -(-(size - FIRST_PLAIN) // PLAIN)  # ceiling division


def ciphertext_size(plaintext_size: int) -> int:
    """Exact ciphertext length produced for ``plaintext_size`` bytes of plaintext."""
    if plaintext_size < 0:
        raise ValueError("plaintext_size must be >= 0")
    return HEADER_SIZE + plaintext_size + TAG_SIZE * _segments_for_plaintext(plaintext_size)


def _layout(ciphertext_size: int) -> tuple[int, int]:
    """(segment count, plaintext size) of a ciphertext of this length, or DecryptionError."""
    body = ciphertext_size - HEADER_SIZE
    if body < TAG_SIZE:
        raise DecryptionError(f"ciphertext of {ciphertext_size} bytes is too short to be valid")
    if body <= FIRST_CIPHER:
        return 1, body - TAG_SIZE
    rest = body - FIRST_CIPHER
    count = 1 + -(-rest // SEGMENT_SIZE)
    last = rest - (count - 2) * SEGMENT_SIZE
    # A final segment with empty plaintext after a full segment is never *written*
    # (Tink's writer and ours hold a full segment back until more data arrives), but
    # Tink's reader accepts it, so we do too: plaintext_size(ciphertext_size(n)) == n
    # always, while the converse fails only for such never-produced lengths.
    if last < TAG_SIZE:
        raise DecryptionError(f"ciphertext of {ciphertext_size} bytes has an impossible length")
    return count, body - count * TAG_SIZE


def plaintext_size(ciphertext_size: int) -> int:
    """Plaintext length of a ciphertext of ``ciphertext_size`` bytes.

    Raises DecryptionError if no ciphertext in this format can have that length
    (e.g. a truncated upload), so callers can reject it before touching any data.
    """
    return _layout(ciphertext_size)[1]


def segment_count(ciphertext_size: int) -> int:
    """Segments in a ciphertext of ``ciphertext_size`` bytes (DecryptionError if impossible)."""
    return _layout(ciphertext_size)[0]


def plaintext_offset_of_segment(i: int) -> int:
    """Offset in the plaintext of the first byte held by segment ``i``."""
    if i < 0:
        raise ValueError("segment index must be >= 0")
    return 0 if i == 0 else FIRST_PLAIN + (i - 1) * PLAIN


def plaintext_segment_size(i: int) -> int:
    """Plaintext bytes a full segment ``i`` holds (segment 0 shares its room with the header)."""
    if i < 0:
        raise ValueError("segment index must be >= 0")
    return FIRST_PLAIN if i == 0 else PLAIN


def _segment_of_offset(offset: int) -> int:
    return 0 if offset < FIRST_PLAIN else 1 + (offset - FIRST_PLAIN) // PLAIN


def plaintext_segment_range(start: int, end_inclusive: int) -> tuple[int, int]:
    """(first, last) segment indices (inclusive) holding plaintext bytes start..end_inclusive."""
    if start < 0 or end_inclusive < start:
        raise ValueError("need 0 <= start <= end_inclusive")
    return _segment_of_offset(start), _segment_of_offset(end_inclusive)
