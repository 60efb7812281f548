"""The file format: Tink's AES-GCM-HKDF streaming encryption, one random key per file.

Every stored file is encrypted under its own random 32-byte *file key* in Tink's published
AES-GCM-HKDF streaming format, byte-for-byte compatible with Tink's key template
``AES256_GCM_HKDF_1MB`` (associated data empty).  Using a published format instead of a
home-grown one means any Tink implementation (or ``scripts/decrypt_file.py``) can recover a
file given its key, and the format has a published security analysis.

Layout (sizes in bytes; the arithmetic lives in ``layout.py``)::

    header    = 0x28 (header length, 40) || salt (32, random) || nonce prefix (7, random)
    key       = HKDF-SHA256(ikm=file key, salt=salt, info=b"", length=32)
    segment i = AES-256-GCM(key, nonce = prefix || uint32_be(i) || last_flag, aad=b"")
    file      = header || segment 0 || segment 1 || ... || segment n-1

Ciphertext segments are exactly ``SEGMENT_SIZE`` (1 MiB) long except the last one; segment 0
is 40 bytes shorter so that header + segment 0 also fill exactly 1 MiB.  That alignment is why
the GridFS chunk size equals ``SEGMENT_SIZE``: GridFS chunk i *is* ciphertext segment i (chunk
0 starting with the header), so a plaintext byte range can be served by fetching and
decrypting only the chunks it touches (see ``decrypt_range``).

The segment index in the nonce stops reordering/dropping/duplicating segments, the
last-segment flag stops truncation at a segment boundary and appending, and the per-file
random salt gives every file a fresh derived key (so nonces never repeat across files even
though the prefix is only 7 bytes).
"""

from __future__ import annotations

import itertools
import os
import struct
from collections.abc import Callable, Iterable, Iterator

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from cryptofiles.crypto.errors import CryptoError, DecryptionError
from cryptofiles.crypto.layout import (
    FIRST_CIPHER,
    FIRST_PLAIN,
    HEADER_SIZE,
    KEY_SIZE,
    MAX_SEGMENTS,
    NONCE_PREFIX_SIZE,
    PLAIN,
    SEGMENT_SIZE,
    TAG_SIZE,
    Buffer,
    check_key,
    plaintext_offset_of_segment,
    plaintext_segment_range,
    segment_count,
)
from cryptofiles.crypto.segmenter import Segmenter, as_byte_view

__all__ = [
    "Encryptor",
    "ReadPieces",
    "SegmentSealer",
    "decrypt_range",
    "decrypt_segments",
    "decrypt_stream",
    "encrypt_stream",
    "new_file_key",
]

_NONCE_TAIL = struct.Struct(">IB")  # segment index (uint32 BE) || last-segment flag


def new_file_key() -> bytes:
    """Return a fresh random 32-byte file key (from the OS CSPRNG)."""
    return os.urandom(KEY_SIZE)


def _derive_segment_aead(file_key: bytes, salt: bytes) -> AESGCM:
    # info = associated data, which is empty for every file we write (as in Tink with
    # associated_data=b"").  Binding a file to its record is done by the key wrap instead.
    derived = HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=salt, info=b"").derive(file_key)
    return AESGCM(derived)


# --------------------------------------------------------------------------- encryption


class SegmentSealer:
    """Seals the segments of one file, each by its index: the one place a segment nonce is made.

    ``Encryptor`` seals a stream in one go with it; a resumable upload, whose segments arrive over
    several requests (and processes), rebuilds one from the file key and the header stored with
    the upload. The caller must seal each index at most once with a given plaintext: sealing
    another plaintext under an index already stored would reuse an AES-GCM nonce.
    """

    __slots__ = ("_aead", "_prefix", "header")

    def __init__(self, key: bytes, header: Buffer) -> None:
        key = check_key(key)
        header = bytes(header)
        if len(header) != HEADER_SIZE or header[0] != HEADER_SIZE:
            raise CryptoError("not a tink-aes-gcm-hkdf-streaming header")
        self.header = header
        self._prefix = header[1 + KEY_SIZE :]
        self._aead = _derive_segment_aead(key, header[1 : 1 + KEY_SIZE])

    @classmethod
    def fresh(cls, key: bytes, *, urandom: Callable[[int], bytes] = os.urandom) -> SegmentSealer:
        """A sealer for a new file: a random salt and nonce prefix make its header."""
        salt = urandom(KEY_SIZE)
        prefix = urandom(NONCE_PREFIX_SIZE)
        if len(salt) != KEY_SIZE or len(prefix) != NONCE_PREFIX_SIZE:
            raise CryptoError("urandom returned the wrong number of bytes")
        return cls(key, bytes([HEADER_SIZE]) + salt + prefix)

    def seal(self, index: int, plaintext: Buffer, *, last: bool) -> bytes:
        """Ciphertext segment ``index`` (segment 0 preceded by the header)."""
        if not 0 <= index < MAX_SEGMENTS:
            # 2**32 segments of 1 MiB is 4 PiB; beyond that the nonce counter would wrap.
            raise CryptoError("file too large for this format")
        nonce = self._prefix + _NONCE_TAIL.pack(index, last)
        sealed = self._aead.encrypt(nonce, plaintext, None)
        if index == 0:
            sealed = self.header + sealed  # one extra 1 MiB copy per file, not per segment
        return sealed


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

    __slots__ = ("_done", "_index", "_sealer", "_segmenter")

    def __init__(self, key: bytes, *, urandom: Callable[[int], bytes] = os.urandom) -> None:
        self._sealer = SegmentSealer.fresh(key, urandom=urandom)
        self._index = 0
        self._segmenter = Segmenter(FIRST_PLAIN, PLAIN)
        self._done = False

    def _seal(self, plaintext: memoryview, last: bool) -> bytes:
        sealed = self._sealer.seal(self._index, plaintext, last=last)
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
        if index >= MAX_SEGMENTS:
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
    key = check_key(key)
    return _decrypt_pieces(key, chunks)


def _decrypt_pieces(key: bytes, chunks: Iterable[Buffer]) -> Iterator[bytes]:
    header = bytearray()
    opener: _SegmentOpener | None = None
    segmenter = Segmenter(FIRST_CIPHER, SEGMENT_SIZE)
    index = 0
    for chunk in chunks:
        view = as_byte_view(chunk)
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
    key = check_key(key)
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
        data = as_byte_view(segment)
        full = FIRST_CIPHER if index == 0 else SEGMENT_SIZE
        last = index == total - 1
        if len(data) > full or (not last and len(data) != full):
            raise DecryptionError(f"segment {index} has the wrong length ({len(data)} bytes)")
        yield opener.open(index, data, last)
        index += 1


# ------------------------------------------------------------------------ ranged decryption

ReadPieces = Callable[[int, int], Iterable[Buffer]]
"""Reads stored pieces ``first``..``last`` (inclusive), in order.

Piece i is what ``encrypt_stream`` yielded as piece i: ciphertext segment i, with piece 0
starting with the header (so with the GridFS chunk size equal to ``SEGMENT_SIZE``, piece i is
chunk i).
"""


def decrypt_range(
    key: bytes,
    read_pieces: ReadPieces,
    start: int,
    stop: int,
    *,
    ciphertext_size: int,
    header: bytes | None = None,
) -> Iterator[bytes]:
    """Plaintext bytes ``start`` up to ``stop`` (exclusive) of a stored file, read piecewise.

    Reads only the pieces the range touches, plus piece 0 for the header when the range starts
    later (as age's ``DecryptReaderAt`` does), so the caller only fetches what it is asked for
    and never needs to know the layout. ``ciphertext_size`` (the stored length) says which
    segment is the last one; see ``decrypt_segments`` for why trusting it is safe. ``header``, the
    file's header kept elsewhere, saves reading piece 0 for a range that starts later (a header
    that is not the file's fails authentication like any damaged piece). Nothing is read before
    the first item is asked for; an empty range reads nothing.
    """
    key = check_key(key)
    if stop <= start:
        return iter(())
    first, last = plaintext_segment_range(start, stop - 1)
    skip = start - plaintext_offset_of_segment(first)
    if header is not None and len(header) != HEADER_SIZE:
        raise ValueError(f"a header is {HEADER_SIZE} bytes")
    return _decrypt_range(
        key, read_pieces, (first, last), skip, stop - start, ciphertext_size, header
    )


def _decrypt_range(
    key: bytes,
    read_pieces: ReadPieces,
    span: tuple[int, int],
    skip: int,
    remaining: int,
    ciphertext_size: int,
    known_header: bytes | None,
) -> Iterator[bytes]:
    first, last = span
    segments: Iterator[Buffer]
    if first == 0:  # piece 0 holds the header, then segment 0
        pieces = iter(read_pieces(0, last))
        piece0 = next(pieces)
        header = bytes(piece0[:HEADER_SIZE])
        segments = itertools.chain([piece0[HEADER_SIZE:]], pieces)
    elif known_header is not None:
        header = known_header
        segments = iter(read_pieces(first, last))
    else:
        header = bytes(next(iter(read_pieces(0, 0)))[:HEADER_SIZE])
        segments = iter(read_pieces(first, last))
    total = segment_count(ciphertext_size)
    for plain in decrypt_segments(key, header, first, segments, total_segments=total):
        piece = plain[skip : skip + remaining]
        skip = 0
        remaining -= len(piece)
        yield piece
        if remaining <= 0:
            return
