"""All cryptography of the service: per-file streaming encryption and the master key ring.

This module owns two things, and it is the only module of the service that imports
AEAD or KDF primitives (everything else calls the functions below; the standalone
recovery tool ``scripts/decrypt_file.py`` deliberately re-implements decryption so
that it works without this package):

1. **Per-file streaming encryption.**  Every stored file is encrypted under its own
   random 32-byte *file key* in Tink's published AES-GCM-HKDF streaming format,
   byte-for-byte compatible with Tink's key template ``AES256_GCM_HKDF_1MB``
   (associated data empty).  Using a published format instead of a home-grown one
   means any Tink implementation (or ``scripts/decrypt_file.py``) can recover a file
   given its key, and the format has a published security analysis.

   Layout (sizes in bytes)::

       header    = 0x28 (header length, 40) || salt (32, random) || nonce prefix (7, random)
       key       = HKDF-SHA256(ikm=file key, salt=salt, info=b"", length=32)
       segment i = AES-256-GCM(key, nonce = prefix || uint32_be(i) || last_flag, aad=b"")
       file      = header || segment 0 || segment 1 || ... || segment n-1

   Ciphertext segments are exactly ``SEGMENT_SIZE`` (1 MiB) long except the last
   one; segment 0 is 40 bytes shorter so that header + segment 0 also fill exactly
   1 MiB.  That alignment is why the GridFS chunk size equals ``SEGMENT_SIZE``:
   GridFS chunk i *is* ciphertext segment i (chunk 0 starting with the header), so a
   plaintext byte range can be served by fetching and decrypting only the chunks it
   touches (see ``decrypt_segments``).

   The segment index in the nonce stops reordering/dropping/duplicating segments,
   the last-segment flag stops truncation at a segment boundary and appending, and
   the per-file random salt gives every file a fresh derived key (so nonces never
   repeat across files even though the prefix is only 7 bytes).

2. **The master key ring** (envelope encryption).  File keys are never stored in
   the clear: they are wrapped with AES-256-GCM under a master key ("KEK") from
   ``KeyRing``, with associated data binding the wrap to the file id and owner
   (``wrap_aad``), so a wrapped key copied onto another file record does not unwrap.
   Several KEKs can be configured so that a new one can be made active (used for
   all new wraps) while the old ones still unwrap existing files.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "ALGORITHM",
    "FORMAT",
    "HEADER_SIZE",
    "KEY_SIZE",
    "SEGMENT_SIZE",
    "TAG_SIZE",
    "CryptoError",
    "DecryptionError",
    "Encryptor",
    "KeyRing",
    "KeyRingError",
    "ciphertext_size",
    "decrypt_segments",
    "decrypt_stream",
    "encrypt_stream",
    "new_file_key",
    "plaintext_offset_of_segment",
    "plaintext_segment_range",
    "plaintext_size",
    "segment_count",
    "wrap_aad",
]

# --------------------------------------------------------------------------- constants

SEGMENT_SIZE: Final = 1 << 20  # ciphertext segment size; the GridFS chunk size equals it
KEY_SIZE: Final = 32  # file keys, derived keys and KEKs are all AES-256 keys
TAG_SIZE: Final = 16  # AES-GCM tag appended to every segment
NONCE_PREFIX_SIZE: Final = 7  # Tink fixes this; 7 + 4 (index) + 1 (last flag) = 12-byte GCM nonce
HEADER_SIZE: Final = 1 + KEY_SIZE + NONCE_PREFIX_SIZE  # 40: length byte || salt || nonce prefix
FORMAT: Final = "tink-aes-gcm-hkdf-streaming"  # format name reported to clients
ALGORITHM: Final = "AES256_GCM_HKDF_1MB"  # Tink key template name

# Plaintext capacity of segment 0 and of every later segment.
_FIRST_PLAIN: Final = SEGMENT_SIZE - HEADER_SIZE - TAG_SIZE  # 1_048_520
_PLAIN: Final = SEGMENT_SIZE - TAG_SIZE  # 1_048_560
# Ciphertext length of a full segment 0 (header excluded) and of a full later segment.
_FIRST_CIPHER: Final = SEGMENT_SIZE - HEADER_SIZE
# The segment index is a 32-bit counter in the nonce; beyond it nonces would repeat.
_MAX_SEGMENTS: Final = 1 << 32

_NONCE_TAIL = struct.Struct(">IB")  # segment index (uint32 BE) || last-segment flag
_WRAP_NONCE_SIZE: Final = 12
_WRAPPED_SIZE: Final = _WRAP_NONCE_SIZE + KEY_SIZE + TAG_SIZE


# ------------------------------------------------------------------------------ errors


class CryptoError(Exception):
    """Base class of this module's errors."""


class DecryptionError(CryptoError):
    """Ciphertext rejected: tampered, truncated, reordered, wrong key or bad header.

    Messages describe *where* decryption failed, never key material or plaintext.
    The causes are deliberately not distinguished further: with AEAD a wrong key and
    a modified segment look identical, and callers must treat both the same way.
    """


class KeyRingError(CryptoError):
    """Bad key ring configuration, unknown KEK id, or a wrapped key that fails to unwrap."""


# ------------------------------------------------------------------------ small helpers

Buffer = bytes | bytearray | memoryview


def new_file_key() -> bytes:
    """Return a fresh random 32-byte file key (from the OS CSPRNG)."""
    return os.urandom(KEY_SIZE)


def _check_key(key: Buffer, what: str = "key") -> bytes:
    # A wrong-length key is a programming error, not a decryption failure, so it is a
    # ValueError rather than DecryptionError.  The message carries only the length.
    if not isinstance(key, bytes | bytearray | memoryview):
        raise TypeError(f"{what} must be bytes")
    key = bytes(key)
    if len(key) != KEY_SIZE:
        raise ValueError(f"{what} must be {KEY_SIZE} bytes, got {len(key)}")
    return key


def _derive_segment_aead(file_key: bytes, salt: bytes) -> AESGCM:
    # info = associated data, which is empty for every file we write (as in Tink with
    # associated_data=b"").  Binding a file to its record is done by the key wrap instead.
    derived = HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=salt, info=b"").derive(file_key)
    return AESGCM(derived)


def _as_byte_view(data: Buffer) -> memoryview:
    view = memoryview(data)
    # Accept any contiguous buffer (e.g. array('I')) but address it byte-wise.
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


# ---------------------------------------------------------------------- size arithmetic


def _segments_for_plaintext(size: int) -> int:
    if size <= _FIRST_PLAIN:
        return 1
    return 1 + -(-(size - _FIRST_PLAIN) // _PLAIN)  # ceiling division


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
    if body <= _FIRST_CIPHER:
        return 1, body - TAG_SIZE
    rest = body - _FIRST_CIPHER
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
    return 0 if i == 0 else _FIRST_PLAIN + (i - 1) * _PLAIN


def _segment_of_offset(offset: int) -> int:
    return 0 if offset < _FIRST_PLAIN else 1 + (offset - _FIRST_PLAIN) // _PLAIN


def plaintext_segment_range(start: int, end_inclusive: int) -> tuple[int, int]:
    """(first, last) segment indices (inclusive) holding plaintext bytes start..end_inclusive."""
    if start < 0 or end_inclusive < start:
        raise ValueError("need 0 <= start <= end_inclusive")
    return _segment_of_offset(start), _segment_of_offset(end_inclusive)


# --------------------------------------------------------------------------- segmenting


class _Segmenter:
    """Cuts a stream of arbitrary-sized pieces into segments, holding back the last one.

    Whether a segment is the final one is part of its nonce, so a full segment can
    only be released once at least one byte *beyond* it has arrived; until then it
    waits in a buffer of at most one segment.  Data that arrives in big pieces is
    sliced straight out of the caller's buffer without copying; only a partial
    segment is ever copied, so memory stays at one segment and work stays linear in
    the input size (no repeated concatenation or front-deletion of big buffers).

    The views yielded by ``push`` are only valid until the generator is resumed.
    """

    __slots__ = ("_buf", "_cap", "_fill", "_need", "_size")

    def __init__(self, first_size: int, size: int) -> None:
        self._cap = max(first_size, size)
        self._buf = bytearray()
        self._fill = 0
        self._need = first_size
        self._size = size

    def _hold(self, data: memoryview) -> None:
        """Append ``data`` to the held-back bytes."""
        end = self._fill + len(data)
        if end > len(self._buf):
            # Grow by *replacing* the buffer, never resizing it in place: a view handed
            # out earlier may still be alive, and resizing an exported bytearray fails.
            # Doubling keeps copying linear; starting small keeps memory proportional
            # to the file for small files instead of a full segment per stream.
            grown = bytearray(min(self._cap, max(end, 2 * len(self._buf), 4096)))
            grown[: self._fill] = memoryview(self._buf)[: self._fill]
            self._buf = grown
        self._buf[self._fill : end] = data  # equal-length slice assignment: a memcpy
        self._fill = end

    def push(self, data: Buffer) -> Iterator[memoryview]:
        view = _as_byte_view(data)
        n = len(view)
        if n == 0:
            return
        pos = 0
        if self._fill:
            pos = min(self._need - self._fill, n)
            self._hold(view[:pos])
            if pos == n:  # all absorbed; cannot tell yet whether the buffer is the last segment
                return
            # pos < n implies the buffer is full, and more data follows it.
            yield memoryview(self._buf)[: self._fill]
            self._fill = 0
            self._need = self._size
        # Strictly greater: a piece that ends exactly on a boundary keeps its last
        # segment back, since it may turn out to be the final one.
        while n - pos > self._need:
            yield view[pos : pos + self._need]
            pos += self._need
            self._need = self._size
        self._hold(view[pos:])

    def tail(self) -> memoryview:
        """The held-back data: the final segment once the input has ended."""
        return memoryview(self._buf)[: self._fill]


# --------------------------------------------------------------------------- encryption


class Encryptor:
    """Incremental encryptor.

    feed() returns ciphertext that is ready (may be b''); finish() returns the rest.

    Concatenated, the outputs are the Tink ciphertext.  Every piece returned by
    ``feed`` is a whole number of 1 MiB ciphertext segments (the first non-empty one
    starts with the header); ``finish`` returns the final, possibly short, segment
    (preceded by the header if nothing was returned before).  Memory is bounded: at
    most one segment of plaintext is held between calls.

    Throughput: feeding at most ``SEGMENT_SIZE`` bytes per call (or using
    ``encrypt_stream``) is the fast path.  A feed that completes several segments has
    to join them into one ``bytes`` object, which costs an extra copy and, with
    glibc's malloc, sometimes page faults for the large short-lived allocations.

    ``urandom`` is injectable only so tests can make the header deterministic; in
    production it must stay ``os.urandom``.
    """

    __slots__ = ("_aead", "_done", "_header", "_index", "_prefix", "_segmenter")

    def __init__(self, key: bytes, *, urandom: Callable[[int], bytes] = os.urandom) -> None:
        key = _check_key(key)
        salt = urandom(KEY_SIZE)
        prefix = urandom(NONCE_PREFIX_SIZE)
        if len(salt) != KEY_SIZE or len(prefix) != NONCE_PREFIX_SIZE:
            raise CryptoError("urandom returned the wrong number of bytes")
        self._header = bytes([HEADER_SIZE]) + salt + prefix
        self._prefix = prefix
        self._aead = _derive_segment_aead(key, salt)
        self._index = 0
        self._segmenter = _Segmenter(_FIRST_PLAIN, _PLAIN)
        self._done = False

    def _seal(self, plaintext: memoryview, last: bool) -> bytes:
        if self._index >= _MAX_SEGMENTS:
            # 2**32 segments of 1 MiB is 4 PiB; beyond that the nonce counter would wrap.
            raise CryptoError("file too large for this format")
        nonce = self._prefix + _NONCE_TAIL.pack(self._index, last)
        sealed = self._aead.encrypt(nonce, plaintext, None)
        if self._index == 0:
            sealed = self._header + sealed  # one extra 1 MiB copy per file, not per segment
        self._index += 1
        return sealed

    def _segments(self, data: Buffer) -> Iterator[bytes]:
        if self._done:
            raise CryptoError("Encryptor already finished")
        try:
            for plain in self._segmenter.push(data):
                yield self._seal(plain, False)
        except BaseException:
            # State may be half-updated; refuse further use rather than risk emitting
            # a stream with a gap or a reused nonce.
            self._done = True
            raise

    def feed(self, data: Buffer) -> bytes:
        """Encrypt more plaintext; returns the whole segments now complete (possibly b'')."""
        pieces = list(self._segments(data))
        if not pieces:
            return b""
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def finish(self) -> bytes:
        """Encrypt the final segment (possibly empty); the Encryptor cannot be used afterwards."""
        if self._done:
            raise CryptoError("Encryptor already finished")
        self._done = True
        return self._seal(self._segmenter.tail(), True)


def encrypt_stream(
    key: bytes, chunks: Iterable[Buffer], *, urandom: Callable[[int], bytes] = os.urandom
) -> Iterator[bytes]:
    """Encrypt an iterable of plaintext chunks; yields one ciphertext segment per piece.

    Piece 0 is header + segment 0 and is exactly ``SEGMENT_SIZE`` bytes unless it is
    also the last; every later piece but the last is exactly ``SEGMENT_SIZE``.  So
    piece i can be stored directly as GridFS chunk i.
    """
    encryptor = Encryptor(key, urandom=urandom)  # validate the key now, not on first next()
    return _encrypt_pieces(encryptor, chunks)


def _encrypt_pieces(encryptor: Encryptor, chunks: Iterable[Buffer]) -> Iterator[bytes]:
    for chunk in chunks:
        yield from encryptor._segments(chunk)
    yield encryptor.finish()


# --------------------------------------------------------------------------- decryption


class _SegmentOpener:
    """Decrypts individual segments of one file, given its header."""

    __slots__ = ("_aead", "_prefix")

    def __init__(self, key: bytes, header: Buffer) -> None:
        header = bytes(header)
        if len(header) != HEADER_SIZE or header[0] != HEADER_SIZE:
            raise DecryptionError("not a tink-aes-gcm-hkdf-streaming ciphertext (bad header)")
        # The salt and prefix are not authenticated directly: altering them changes
        # the derived key or the nonces, so segment 0 then fails its tag check.
        self._prefix = header[1 + KEY_SIZE :]
        self._aead = _derive_segment_aead(key, header[1 : 1 + KEY_SIZE])

    def open(self, index: int, ciphertext: memoryview | bytes, last: bool) -> bytes:
        if index >= _MAX_SEGMENTS:
            raise DecryptionError("too many segments")
        if len(ciphertext) < TAG_SIZE:
            raise DecryptionError(f"segment {index} is truncated")
        nonce = self._prefix + _NONCE_TAIL.pack(index, last)
        try:
            return self._aead.decrypt(nonce, ciphertext, None)
        except InvalidTag:
            # from None: the chained InvalidTag adds nothing and keeps tracebacks short.
            raise DecryptionError(
                f"segment {index} failed authentication "
                "(wrong key, or data tampered with, truncated, reordered or extended)"
            ) from None


def decrypt_stream(key: bytes, chunks: Iterable[Buffer]) -> Iterator[bytes]:
    """Decrypt a ciphertext given as arbitrary-sized chunks; yields plaintext one segment at a time.

    Raises DecryptionError (from the iterator) on any tampering, truncation, trailing
    data, reordering or a wrong key.

    Streaming caveat: each yielded segment is authentic and in its right place, but
    truncation of the *whole* stream is only detected at the end, so plaintext must
    not be acted on as complete until the iterator finishes without error.
    """
    key = _check_key(key)
    return _decrypt_pieces(key, chunks)


def _decrypt_pieces(key: bytes, chunks: Iterable[Buffer]) -> Iterator[bytes]:
    header = bytearray()
    opener: _SegmentOpener | None = None
    segmenter = _Segmenter(_FIRST_CIPHER, SEGMENT_SIZE)
    index = 0
    for chunk in chunks:
        view = _as_byte_view(chunk)
        if opener is None:
            take = min(HEADER_SIZE - len(header), len(view))
            header += view[:take]
            view = view[take:]
            if header and header[0] != HEADER_SIZE:  # fail fast on non-ciphertext input
                raise DecryptionError("not a tink-aes-gcm-hkdf-streaming ciphertext (bad header)")
            if len(header) < HEADER_SIZE:
                continue
            opener = _SegmentOpener(key, header)
        for segment in segmenter.push(view):
            yield opener.open(index, segment, False)
            index += 1
    if opener is None:
        raise DecryptionError("ciphertext is truncated (incomplete header)")
    tail = segmenter.tail()
    if not tail:
        # Only reachable with a header and nothing after it: the segmenter always
        # holds back at least one byte once it has seen any.
        raise DecryptionError("ciphertext is truncated (no segments)")
    yield opener.open(index, tail, True)


def decrypt_segments(
    key: bytes,
    header: bytes,
    first_index: int,
    segments: Iterable[Buffer],
    *,
    total_segments: int,
) -> Iterator[bytes]:
    """Decrypt whole ciphertext segments ``first_index, first_index+1, ...`` of a file.

    For serving plaintext ranges: fetch only the GridFS chunks a range touches (see
    ``plaintext_segment_range``), strip the header off chunk 0, and pass them here.
    ``total_segments`` (from ``segment_count`` of the stored length) says which
    segment carries the last-segment flag.  Each item must be exactly one segment:
    ``SEGMENT_SIZE`` bytes (``SEGMENT_SIZE - HEADER_SIZE`` for segment 0), the final
    segment may be shorter.  Fewer segments than remain in the file is fine; more
    is a DecryptionError.

    Safety note: the stored length (hence ``total_segments``) is not itself secret-
    protected, but it is authenticated indirectly: if it is wrong, the segment that
    gets the last flag (or the one that should have had it) fails its tag check.
    """
    key = _check_key(key)
    if total_segments < 1 or not 0 <= first_index < total_segments:
        raise ValueError("need total_segments >= 1 and 0 <= first_index < total_segments")
    opener = _SegmentOpener(key, header)
    return _decrypt_segment_list(opener, first_index, segments, total_segments)


def _decrypt_segment_list(
    opener: _SegmentOpener, index: int, segments: Iterable[Buffer], total: int
) -> Iterator[bytes]:
    for segment in segments:
        if index >= total:
            raise DecryptionError(
                f"segment {index} is beyond the end of the file ({total} segments)"
            )
        data = _as_byte_view(segment)
        full = _FIRST_CIPHER if index == 0 else SEGMENT_SIZE
        last = index == total - 1
        if len(data) > full or (not last and len(data) != full):
            raise DecryptionError(f"segment {index} has the wrong length ({len(data)} bytes)")
        yield opener.open(index, data, last)
        index += 1


# ---------------------------------------------------------------------------- key ring

_KEK_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_B64 = re.compile(r"[A-Za-z0-9+/_-]+={0,2}")
_WRAP_AAD_LABEL: Final = b"cryptofiles/file-key-wrap/v1"


def wrap_aad(file_id: str, owner: str) -> bytes:
    """Associated data for wrapping a file key: binds the wrap to this file and owner.

    Each field is length-prefixed (4-byte big-endian) so that no two (file_id, owner)
    pairs encode alike (("ab", "c") vs ("a", "bc")); the versioned label keeps these
    bytes from ever colliding with associated data used for any other purpose.
    """
    parts = [_WRAP_AAD_LABEL, file_id.encode("utf-8"), owner.encode("utf-8")]
    return b"".join(struct.pack(">I", len(p)) + p for p in parts)


def _describe_entry(position: int, kek_id: str | None) -> str:
    # Ids are not secret, but a malformed "id" may really be a key pasted in the wrong
    # place (e.g. "KEY:id").  A 32-byte key in base64 is at least 43 characters, so
    # only ids that are valid *and* shorter than that are echoed back.
    if kek_id is not None and len(kek_id) < 43 and _KEK_ID.fullmatch(kek_id):
        return f"key ring entry {position} (id {kek_id!r})"
    return f"key ring entry {position}"


def _decode_key(text: str) -> bytes | None:
    """Standard or URL-safe base64, padding optional; None if it is not valid base64."""
    if not _B64.fullmatch(text):
        return None
    text = text.rstrip("=").replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


class KeyRing:
    """Master keys: {kek_id: 32-byte key}; one active for wrapping, all accepted for unwrapping.

    Only AESGCM objects are kept, never the raw key bytes as attributes, so neither
    repr(), logging, nor a debugger's object view can show them.

    Random 96-bit wrap nonces are safe for about 2**32 wraps per KEK (NIST SP 800-38D);
    one wrap per uploaded file keeps us far below that, and rotation resets the count.
    """

    __slots__ = ("_aeads", "active_id")

    active_id: str

    def __init__(self, keys: Mapping[str, bytes], active_id: str) -> None:
        if not keys:
            raise KeyRingError("key ring is empty")
        aeads: dict[str, AESGCM] = {}
        for position, (kek_id, key) in enumerate(keys.items(), start=1):
            where = _describe_entry(position, kek_id if isinstance(kek_id, str) else None)
            if not isinstance(kek_id, str) or not _KEK_ID.fullmatch(kek_id):
                raise KeyRingError(
                    f"{where}: invalid id (use 1-64 characters from A-Z a-z 0-9 _ . -)"
                )
            if not isinstance(key, bytes | bytearray) or len(key) != KEY_SIZE:
                raise KeyRingError(f"{where}: key must be exactly {KEY_SIZE} bytes")
            if not any(key):
                raise KeyRingError(f"{where}: key is all zero bytes")
            aeads[kek_id] = AESGCM(bytes(key))
        if active_id not in aeads:
            raise KeyRingError("active key id is not in the key ring")
        self._aeads = aeads
        self.active_id = active_id

    @classmethod
    def parse(cls, text: str) -> KeyRing:
        """Parse "id1:BASE64KEY,id0:BASE64KEY"; the FIRST entry is the active one.

        Whitespace around entries, ids and keys is ignored.  Errors name the entry
        (position, and id when safe to show) and the problem, never the key text.
        """
        entries = text.split(",")
        if not text.strip():
            raise KeyRingError("key ring is empty (expected 'id:base64key[,id:base64key...]')")
        keys: dict[str, bytes] = {}
        for position, raw in enumerate(entries, start=1):
            entry = raw.strip()
            if not entry:
                raise KeyRingError(f"key ring entry {position} is empty (stray comma?)")
            kek_id, sep, encoded = entry.partition(":")
            kek_id, encoded = kek_id.strip(), encoded.strip()
            where = _describe_entry(position, kek_id if sep else None)
            if not sep:
                raise KeyRingError(f"{where}: expected 'id:base64key' (no ':' found)")
            if not _KEK_ID.fullmatch(kek_id):
                raise KeyRingError(
                    f"{where}: invalid id (use 1-64 characters from A-Z a-z 0-9 _ . -)"
                )
            if kek_id in keys:
                raise KeyRingError(f"{where}: duplicate id")
            key = _decode_key(encoded)
            if key is None:
                raise KeyRingError(f"{where}: key is not valid base64")
            if len(key) != KEY_SIZE:
                raise KeyRingError(f"{where}: key must decode to {KEY_SIZE} bytes, got {len(key)}")
            keys[kek_id] = key
        return cls(keys, next(iter(keys)))

    @staticmethod
    def generate_entry(kek_id: str) -> str:
        """A new "id:base64" entry holding a fresh random key (for the launcher / setup)."""
        if not _KEK_ID.fullmatch(kek_id):
            raise KeyRingError("invalid id (use 1-64 characters from A-Z a-z 0-9 _ . -)")
        return f"{kek_id}:{base64.b64encode(os.urandom(KEY_SIZE)).decode('ascii')}"

    def ids(self) -> list[str]:
        """KEK ids, active first when built by parse() (configuration order)."""
        return list(self._aeads)

    def wrap(self, file_key: bytes, associated_data: bytes) -> tuple[str, bytes]:
        """Encrypt a file key under the active KEK: (kek_id, nonce(12) || ciphertext || tag)."""
        file_key = _check_key(file_key, "file key")
        nonce = os.urandom(_WRAP_NONCE_SIZE)
        sealed = self._aeads[self.active_id].encrypt(nonce, file_key, associated_data)
        return self.active_id, nonce + sealed

    def unwrap(self, kek_id: str, wrapped: bytes, associated_data: bytes) -> bytes:
        """Recover a file key; KeyRingError on unknown kek id or failed authentication."""
        aead = self._aeads.get(kek_id)
        if aead is None:
            # The id is echoed only if it is well-formed (it comes from the database).
            shown = (
                repr(kek_id)
                if isinstance(kek_id, str) and _KEK_ID.fullmatch(kek_id)
                else "(malformed)"
            )
            raise KeyRingError(f"unknown key id {shown}: is the master key ring complete?")
        if len(wrapped) != _WRAPPED_SIZE:
            raise KeyRingError("wrapped key has the wrong length")
        try:
            return aead.decrypt(
                wrapped[:_WRAP_NONCE_SIZE], wrapped[_WRAP_NONCE_SIZE:], associated_data
            )
        except InvalidTag:
            raise KeyRingError(
                f"wrapped key failed to unwrap under {kek_id!r} "
                "(tampered with, or bound to another file/owner)"
            ) from None

    def __repr__(self) -> str:
        return f"KeyRing(active_id={self.active_id!r}, ids={self.ids()!r})"

    # AESGCM objects cannot be pickled or copied (so the raw keys never get serialised);
    # the ring is immutable in practice, so copies can share it.  This keeps
    # copy.deepcopy / dataclasses.asdict of a config holding a KeyRing working.
    def __copy__(self) -> KeyRing:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> KeyRing:
        return self
