"""Tests of cryptofiles.crypto, with Tink as the independent oracle for the file format.

Organised by failure class: interoperability with Tink, output shape and size
arithmetic, tampering/truncation/reordering, range decryption, the key ring, and
the standalone recovery script.
"""

from __future__ import annotations

import base64
import copy
import os
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from cryptofiles import crypto
from cryptofiles.crypto import (
    HEADER_SIZE,
    SEGMENT_SIZE,
    TAG_SIZE,
    CryptoError,
    DecryptionError,
    Encryptor,
    KeyRing,
    KeyRingError,
)
from cryptofiles.dev.tink_oracle import TinkError, tink_decrypt, tink_encrypt

MiB = 1 << 20
FIRST = SEGMENT_SIZE - HEADER_SIZE - TAG_SIZE  # plaintext capacity of segment 0: 1_048_520
PLAIN = SEGMENT_SIZE - TAG_SIZE  # plaintext capacity of later segments: 1_048_560
FIRST_CT = SEGMENT_SIZE - HEADER_SIZE  # ciphertext length of a full segment 0 (no header)

SIZES = [
    0,
    1,
    1000,
    FIRST - 1,
    FIRST,
    FIRST + 1,
    FIRST + PLAIN - 1,
    FIRST + PLAIN,
    FIRST + PLAIN + 1,
    7 * MiB // 2,
]
SIZE_IDS = [f"{n}B" for n in SIZES]

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "decrypt_file.py"


def data(n: int) -> bytes:
    return os.urandom(n)


def ours_encrypt(key: bytes, plaintext: bytes) -> bytes:
    return b"".join(crypto.encrypt_stream(key, [plaintext]))


def ours_decrypt(key: bytes, ciphertext: bytes, chunk: int | None = None) -> bytes:
    if chunk is None:
        return b"".join(crypto.decrypt_stream(key, [ciphertext]))
    pieces = (ciphertext[i : i + chunk] for i in range(0, len(ciphertext), chunk))
    return b"".join(crypto.decrypt_stream(key, pieces))


def split_segments(ciphertext: bytes) -> tuple[bytes, list[bytes]]:
    """(header, [segment 0 without header, segment 1, ...]) by the format's layout."""
    header, body = ciphertext[:HEADER_SIZE], ciphertext[HEADER_SIZE:]
    segments = [body[:FIRST_CT]]
    segments += [body[i : i + SEGMENT_SIZE] for i in range(FIRST_CT, len(body), SEGMENT_SIZE)]
    return header, segments


@pytest.fixture
def key() -> bytes:
    return crypto.new_file_key()


# ----------------------------------------------------------- interoperability with Tink


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
def test_round_trip_ours(key: bytes, size: int) -> None:
    plaintext = data(size)
    assert ours_decrypt(key, ours_encrypt(key, plaintext)) == plaintext


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
def test_tink_decrypts_ours(key: bytes, size: int) -> None:
    plaintext = data(size)
    assert tink_decrypt(key, ours_encrypt(key, plaintext)) == plaintext


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
def test_we_decrypt_tink(key: bytes, size: int) -> None:
    plaintext = data(size)
    ciphertext = tink_encrypt(key, plaintext)
    assert ours_decrypt(key, ciphertext) == plaintext
    assert ours_decrypt(key, ciphertext, chunk=65_537) == plaintext  # chunks straddle segments


def test_header_layout_and_injected_randomness(key: bytes) -> None:
    stream = iter([b"\x11" * 32, b"\x22" * 7])
    ciphertext = Encryptor(key, urandom=lambda n: next(stream)).finish()
    assert ciphertext[:HEADER_SIZE] == bytes([HEADER_SIZE]) + b"\x11" * 32 + b"\x22" * 7
    assert tink_decrypt(key, ciphertext) == b""


def test_fresh_header_per_file(key: bytes) -> None:
    assert ours_encrypt(key, b"same")[:HEADER_SIZE] != ours_encrypt(key, b"same")[:HEADER_SIZE]


def test_new_file_key() -> None:
    keys = {crypto.new_file_key() for _ in range(4)}
    assert len(keys) == 4 and all(len(k) == crypto.KEY_SIZE for k in keys)


def test_empty_final_segment_after_full_segment_is_accepted_like_tink(key: bytes) -> None:
    # Neither Tink nor we ever *write* an empty final segment after a full segment 0,
    # but Tink's reader accepts one; built here by hand from the published spec.
    salt, prefix = os.urandom(32), os.urandom(7)
    aead = AESGCM(HKDF(hashes.SHA256(), 32, salt, b"").derive(key))
    plaintext = data(FIRST)
    ciphertext = (
        bytes([HEADER_SIZE])
        + salt
        + prefix
        + aead.encrypt(prefix + struct.pack(">IB", 0, 0), plaintext, None)
        + aead.encrypt(prefix + struct.pack(">IB", 1, 1), b"", None)
    )
    assert tink_decrypt(key, ciphertext) == plaintext
    assert ours_decrypt(key, ciphertext) == plaintext
    assert crypto.plaintext_size(len(ciphertext)) == FIRST
    assert crypto.segment_count(len(ciphertext)) == 2


# ------------------------------------------------------------- output shape and sizes


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
def test_encrypt_stream_yields_whole_segments(key: bytes, size: int) -> None:
    # Feed in awkward chunks so piece boundaries cannot just mirror the input.
    plaintext = data(size)
    chunks = [plaintext[i : i + 300_001] for i in range(0, size, 300_001)]
    pieces = list(crypto.encrypt_stream(key, chunks))
    assert all(len(p) == SEGMENT_SIZE for p in pieces[:-1])
    assert 0 < len(pieces[-1]) <= SEGMENT_SIZE
    total = sum(map(len, pieces))
    assert total == crypto.ciphertext_size(size)
    assert crypto.plaintext_size(total) == size
    assert crypto.segment_count(total) == len(pieces)
    assert tink_decrypt(key, b"".join(pieces)) == plaintext


@pytest.mark.parametrize(
    ("size", "chunk"),
    [(FIRST + 3, 1), (FIRST + PLAIN + 10, 7), (3 * MiB, 3 * MiB), (FIRST, FIRST), (5000, 4096)],
    ids=["1-byte", "7-byte", "3MiB-at-once", "exact-first-segment", "small"],
)
def test_encryptor_odd_chunking(key: bytes, size: int, chunk: int) -> None:
    plaintext = data(size)
    encryptor = Encryptor(key)
    outputs = [encryptor.feed(plaintext[i : i + chunk]) for i in range(0, size, chunk)]
    final = encryptor.finish()
    assert all(len(out) % SEGMENT_SIZE == 0 for out in outputs)  # whole segments only
    ciphertext = b"".join(outputs) + final
    assert len(ciphertext) == crypto.ciphertext_size(size)
    assert tink_decrypt(key, ciphertext) == plaintext


def test_encryptor_accepts_buffers_and_copies_what_it_keeps(key: bytes) -> None:
    plaintext = data(FIRST + 100)
    buffer = bytearray(plaintext[:1000])
    encryptor = Encryptor(key)
    out = [encryptor.feed(buffer)]
    buffer[:] = b"\0" * 1000  # caller reuses its buffer; the held-back bytes must be ours
    out.append(encryptor.feed(memoryview(plaintext)[1000:]))
    out.append(encryptor.finish())
    assert tink_decrypt(key, b"".join(out)) == plaintext


def test_encryptor_single_use(key: bytes) -> None:
    encryptor = Encryptor(key)
    encryptor.finish()
    with pytest.raises(CryptoError):
        encryptor.feed(b"x")
    with pytest.raises(CryptoError):
        encryptor.finish()


@pytest.mark.parametrize("bad", [b"", b"k" * 16, b"k" * 33])
def test_wrong_key_length_rejected_up_front(bad: bytes) -> None:
    with pytest.raises(ValueError):
        Encryptor(bad)
    with pytest.raises(ValueError):
        crypto.encrypt_stream(bad, [])
    with pytest.raises(ValueError):
        crypto.decrypt_stream(bad, [])


IMPOSSIBLE_SIZES = [
    0,
    1,
    HEADER_SIZE,  # header only
    HEADER_SIZE + TAG_SIZE - 1,  # segment 0 shorter than a tag
    SEGMENT_SIZE + 1,  # a final segment shorter than a tag after a full one
    SEGMENT_SIZE + TAG_SIZE - 1,
    3 * SEGMENT_SIZE + 1,
]


@pytest.mark.parametrize("size", IMPOSSIBLE_SIZES)
def test_impossible_ciphertext_sizes(size: int) -> None:
    with pytest.raises(DecryptionError):
        crypto.plaintext_size(size)
    with pytest.raises(DecryptionError):
        crypto.segment_count(size)


def test_size_functions_are_inverse_across_range() -> None:
    for n in [*SIZES, 10 * PLAIN, 10 * PLAIN + FIRST, 1 << 40]:
        assert crypto.plaintext_size(crypto.ciphertext_size(n)) == n
    with pytest.raises(ValueError):
        crypto.ciphertext_size(-1)


# ------------------------------------------------------------------- failure classes

# Four segments: full 0, full 1, full 2, short 3 -- so middle segments can be swapped.
TAMPER_SIZE = FIRST + 2 * PLAIN + 1000


@pytest.fixture(scope="module")
def sample() -> tuple[bytes, bytes, bytes]:
    key = crypto.new_file_key()
    plaintext = data(TAMPER_SIZE)
    return key, plaintext, ours_encrypt(key, plaintext)


def flip(ciphertext: bytes, position: int) -> bytes:
    out = bytearray(ciphertext)
    out[position] ^= 0x01
    return bytes(out)


def segs(ct: bytes) -> list[bytes]:
    header, segments = split_segments(ct)
    return [header + segments[0], *segments[1:]]  # as stored: piece 0 carries the header


MUTATIONS: dict[str, Callable[[bytes], bytes]] = {
    # bit flips
    "header-length-byte": lambda ct: flip(ct, 0),
    "header-salt": lambda ct: flip(ct, 5),
    "header-nonce-prefix": lambda ct: flip(ct, HEADER_SIZE - 1),
    "segment0-body": lambda ct: flip(ct, HEADER_SIZE + 10),
    "segment1-body": lambda ct: flip(ct, SEGMENT_SIZE + 12345),
    "final-segment-body": lambda ct: flip(ct, 3 * SEGMENT_SIZE + 1),
    "segment0-tag": lambda ct: flip(ct, SEGMENT_SIZE - 1),
    "final-tag": lambda ct: flip(ct, len(ct) - 1),
    # truncation
    "drop-final-segment": lambda ct: ct[: 3 * SEGMENT_SIZE],
    "cut-mid-segment": lambda ct: ct[: SEGMENT_SIZE + 1000],
    "cut-last-byte": lambda ct: ct[:-1],
    "cut-to-tag-only": lambda ct: ct[: 3 * SEGMENT_SIZE + TAG_SIZE],
    "cut-to-header": lambda ct: ct[:HEADER_SIZE],
    "cut-inside-header": lambda ct: ct[: HEADER_SIZE - 1],
    "empty": lambda ct: b"",
    # reordering / splicing
    "swap-segments-1-2": lambda ct: b"".join(segs(ct)[i] for i in (0, 2, 1, 3)),
    "drop-middle-segment": lambda ct: b"".join(segs(ct)[i] for i in (0, 2, 3)),
    "duplicate-segment": lambda ct: b"".join(segs(ct)[i] for i in (0, 1, 1, 2, 3)),
    "final-replaced-by-non-final": lambda ct: b"".join(segs(ct)[i] for i in (0, 1, 2, 1)),
    # extension
    "trailing-byte": lambda ct: ct + b"\0",
    "trailing-tag-sized": lambda ct: ct + bytes(TAG_SIZE),
    "trailing-copy-of-final": lambda ct: ct + segs(ct)[3],
    "two-files-concatenated": lambda ct: ct + ct,
}


@pytest.mark.parametrize("mutation", MUTATIONS.values(), ids=MUTATIONS.keys())
def test_tampering_rejected(
    sample: tuple[bytes, bytes, bytes], mutation: Callable[[bytes], bytes]
) -> None:
    key, _, ciphertext = sample
    bad = mutation(ciphertext)
    assert bad != ciphertext
    with pytest.raises(TinkError):  # the oracle agrees it is invalid
        tink_decrypt(key, bad)
    with pytest.raises(DecryptionError) as info:
        ours_decrypt(key, bad)
    assert key.hex() not in str(info.value)
    with pytest.raises(DecryptionError):
        ours_decrypt(key, bad, chunk=99_991)


def test_non_ciphertext_fails_at_first_byte(key: bytes) -> None:
    # Garbage input is rejected as soon as the header's length byte is seen, without
    # reading (possibly unbounded) further input.
    def garbage() -> Iterator[bytes]:
        yield b"\x00"
        raise AssertionError("read past the bad header byte")

    with pytest.raises(DecryptionError, match="header"):
        next(crypto.decrypt_stream(key, garbage()))


def test_wrong_key_rejected(sample: tuple[bytes, bytes, bytes]) -> None:
    _, _, ciphertext = sample
    with pytest.raises(DecryptionError):
        ours_decrypt(crypto.new_file_key(), ciphertext)


def test_plaintext_released_only_segment_by_segment(sample: tuple[bytes, bytes, bytes]) -> None:
    # A truncated stream yields the authentic segments before it, then fails -- never
    # unauthenticated bytes, and never a silent success.
    key, plaintext, ciphertext = sample
    stream = crypto.decrypt_stream(key, [ciphertext[: 2 * SEGMENT_SIZE + 5]])
    assert next(stream) == plaintext[:FIRST]
    assert next(stream) == plaintext[FIRST : FIRST + PLAIN]
    with pytest.raises(DecryptionError):
        next(stream)


# ------------------------------------------------------------------ range decryption

RANGES = [
    (0, 0),
    (0, TAMPER_SIZE - 1),
    (FIRST - 1, FIRST),
    (FIRST, FIRST + PLAIN - 1),
    (FIRST + 5, FIRST + 2 * PLAIN + 5),
    (FIRST + 2 * PLAIN - 1, FIRST + 2 * PLAIN),
    (TAMPER_SIZE - 1, TAMPER_SIZE - 1),
]


@pytest.mark.parametrize(("start", "end"), RANGES)
def test_decrypt_segments_range(sample: tuple[bytes, bytes, bytes], start: int, end: int) -> None:
    key, plaintext, ciphertext = sample
    header, segments = split_segments(ciphertext)
    first, last = crypto.plaintext_segment_range(start, end)
    out = b"".join(
        crypto.decrypt_segments(
            key,
            header,
            first,
            segments[first : last + 1],
            total_segments=crypto.segment_count(len(ciphertext)),
        )
    )
    offset = crypto.plaintext_offset_of_segment(first)
    assert out[start - offset : end - offset + 1] == plaintext[start : end + 1]
    assert len(out) >= end - start + 1


# case -> (first index, which stored segments to pass, claimed total, header byte to
# flip or None, expected message).  The stored file has 4 segments.
RANGE_REJECTS: dict[str, tuple[int, list[int], int, int | None, str]] = {
    "total-too-small": (2, [2], 3, None, "authentication"),  # 2 decrypted as the last one
    "total-too-large": (3, [3], 5, None, "wrong length"),  # short 3 claimed non-final
    "wrong-index": (1, [2], 4, None, "authentication"),  # segment 2 offered as 1
    "beyond-end": (3, [3, 3], 4, None, "beyond the end"),
    "short-middle": (1, [-1], 4, None, "wrong length"),  # -1: segment 1 minus a byte
    "bad-salt": (0, [0], 4, 3, "authentication"),
    "bad-length-byte": (0, [0], 4, 0, "header"),
}


@pytest.mark.parametrize("case", RANGE_REJECTS.values(), ids=RANGE_REJECTS.keys())
def test_decrypt_segments_rejects(
    sample: tuple[bytes, bytes, bytes], case: tuple[int, list[int], int, int | None, str]
) -> None:
    key, _, ciphertext = sample
    first, which, total, header_flip, message = case
    header, segments = split_segments(ciphertext)
    chosen = [segments[1][:-1] if i < 0 else segments[i] for i in which]
    if header_flip is not None:
        header = flip(header, header_flip)
    with pytest.raises(DecryptionError, match=message):
        for _ in crypto.decrypt_segments(key, header, first, chosen, total_segments=total):
            pass


def test_decrypt_segments_argument_checks(key: bytes) -> None:
    header = bytes([HEADER_SIZE]) + bytes(39)
    for first, total in [(0, 0), (-1, 3), (3, 3)]:
        with pytest.raises(ValueError):
            crypto.decrypt_segments(key, header, first, [], total_segments=total)


def stored_pieces(ciphertext: bytes) -> list[bytes]:
    """The ciphertext cut as it is stored: piece i is segment i, piece 0 with the header."""
    return [ciphertext[i : i + SEGMENT_SIZE] for i in range(0, len(ciphertext), SEGMENT_SIZE)]


@pytest.mark.parametrize("header_known", [False, True], ids=["header-read", "header-known"])
@pytest.mark.parametrize(("start", "end"), [*RANGES, (3, 2)])
def test_decrypt_range_reads_only_what_it_needs(
    sample: tuple[bytes, bytes, bytes], start: int, end: int, header_known: bool
) -> None:
    """Only the pieces the range touches, plus piece 0 for the header unless the caller has it."""
    key, plaintext, ciphertext = sample
    pieces = stored_pieces(ciphertext)
    reads: list[tuple[int, int]] = []

    def read_pieces(first: int, last: int) -> Iterator[bytes]:
        reads.append((first, last))
        return iter(pieces[first : last + 1])

    header = ciphertext[:HEADER_SIZE] if header_known else None
    stream = crypto.decrypt_range(
        key, read_pieces, start, end + 1, ciphertext_size=len(ciphertext), header=header
    )
    assert reads == []  # nothing is fetched before the first byte is asked for
    assert b"".join(stream) == plaintext[start : end + 1]
    if end < start:
        assert reads == []
        return
    first, last = crypto.plaintext_segment_range(start, end)
    if first == 0 or header_known:
        assert reads == [(first, last)]
    else:
        assert reads == [(0, 0), (first, last)]


def test_decrypt_range_with_a_wrong_header_fails(sample: tuple[bytes, bytes, bytes]) -> None:
    key, _, ciphertext = sample
    pieces = stored_pieces(ciphertext)
    wrong = bytearray(ciphertext[:HEADER_SIZE])
    wrong[5] ^= 1  # a salt byte: another key for every segment

    def read_pieces(first: int, last: int) -> Iterator[bytes]:
        return iter(pieces[first : last + 1])

    size = len(ciphertext)
    with pytest.raises(DecryptionError):
        b"".join(
            crypto.decrypt_range(
                key, read_pieces, FIRST, FIRST + 1, ciphertext_size=size, header=bytes(wrong)
            )
        )
    with pytest.raises(ValueError):
        crypto.decrypt_range(key, read_pieces, FIRST, FIRST + 1, ciphertext_size=size, header=b"x")


def test_decrypt_range_rejects_a_wrong_key_or_length(sample: tuple[bytes, bytes, bytes]) -> None:
    key, _, ciphertext = sample
    pieces = stored_pieces(ciphertext)

    def read_pieces(first: int, last: int) -> Iterator[bytes]:
        return iter(pieces[first : last + 1])

    for wrong_key, size in [
        (crypto.new_file_key(), len(ciphertext)),
        (key, crypto.ciphertext_size(FIRST + 10)),
    ]:
        # A stored length of two segments makes segment 1 the last one: its tag check fails.
        with pytest.raises(DecryptionError):
            b"".join(
                crypto.decrypt_range(wrong_key, read_pieces, FIRST, FIRST + 1, ciphertext_size=size)
            )
    with pytest.raises(ValueError):
        crypto.decrypt_range(bytes(5), read_pieces, 0, 1, ciphertext_size=len(ciphertext))


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (0, 0, (0, 0)),
        (FIRST - 1, FIRST - 1, (0, 0)),
        (FIRST, FIRST, (1, 1)),
        (FIRST - 1, FIRST, (0, 1)),
        (FIRST + PLAIN - 1, FIRST + PLAIN, (1, 2)),
        (0, FIRST + 5 * PLAIN, (0, 6)),
    ],
)
def test_plaintext_segment_range(start: int, end: int, expected: tuple[int, int]) -> None:
    assert crypto.plaintext_segment_range(start, end) == expected


def test_segment_offsets() -> None:
    assert [crypto.plaintext_offset_of_segment(i) for i in range(4)] == [
        0,
        FIRST,
        FIRST + PLAIN,
        FIRST + 2 * PLAIN,
    ]
    for x in [0, 1, FIRST - 1, FIRST, FIRST + 1, FIRST + PLAIN - 1, FIRST + PLAIN, 10**12]:
        i, _ = crypto.plaintext_segment_range(x, x)
        assert (
            crypto.plaintext_offset_of_segment(i) <= x < crypto.plaintext_offset_of_segment(i + 1)
        )
    with pytest.raises(ValueError):
        crypto.plaintext_offset_of_segment(-1)
    for bad in [(-1, 0), (5, 4)]:
        with pytest.raises(ValueError):
            crypto.plaintext_segment_range(*bad)


# --------------------------------------------------------------------------- key ring


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@pytest.fixture
def kek_pair() -> tuple[bytes, bytes]:
    return os.urandom(32), os.urandom(32)


def test_wrap_round_trip(kek_pair: tuple[bytes, bytes]) -> None:
    ring = KeyRing.parse(f"k1:{b64(kek_pair[0])}")
    file_key = crypto.new_file_key()
    aad = crypto.wrap_aad("file-1", "alice")
    kek_id, wrapped = ring.wrap(file_key, aad)
    assert kek_id == "k1" == ring.active_id
    assert len(wrapped) == 12 + 32 + 16
    assert ring.unwrap(kek_id, wrapped, aad) == file_key


def test_two_wraps_use_fresh_nonces(kek_pair: tuple[bytes, bytes]) -> None:
    ring = KeyRing({"k": kek_pair[0]}, "k")
    file_key, aad = crypto.new_file_key(), crypto.wrap_aad("f", "o")
    assert ring.wrap(file_key, aad)[1] != ring.wrap(file_key, aad)[1]


@pytest.mark.parametrize(
    ("file_id", "owner"),
    [("file-2", "alice"), ("file-1", "bob"), ("file-1alice", ""), ("", "file-1alice")],
)
def test_unwrap_bound_to_file_and_owner(
    kek_pair: tuple[bytes, bytes], file_id: str, owner: str
) -> None:
    ring = KeyRing({"k": kek_pair[0]}, "k")
    kek_id, wrapped = ring.wrap(crypto.new_file_key(), crypto.wrap_aad("file-1", "alice"))
    with pytest.raises(KeyRingError):
        ring.unwrap(kek_id, wrapped, crypto.wrap_aad(file_id, owner))


def test_wrap_aad_unambiguous() -> None:
    assert crypto.wrap_aad("ab", "c") != crypto.wrap_aad("a", "bc")
    assert crypto.wrap_aad("a", "b") == crypto.wrap_aad("a", "b")
    assert crypto.wrap_aad("x", "y") != crypto.wrap_aad("y", "x")


@pytest.mark.parametrize("case", ["unknown-id", "flipped", "truncated", "extended"])
def test_unwrap_failures(kek_pair: tuple[bytes, bytes], case: str) -> None:
    ring = KeyRing({"k": kek_pair[0]}, "k")
    aad = crypto.wrap_aad("f", "o")
    kek_id, wrapped = ring.wrap(crypto.new_file_key(), aad)
    if case == "unknown-id":
        kek_id = "other"
    elif case == "flipped":
        wrapped = flip(wrapped, 20)
    elif case == "truncated":
        wrapped = wrapped[:-1]
    else:
        wrapped += b"\0"
    with pytest.raises(KeyRingError):
        ring.unwrap(kek_id, wrapped, aad)


def test_rotation_keeps_old_keys_for_unwrapping(kek_pair: tuple[bytes, bytes]) -> None:
    old_raw, new_raw = kek_pair
    old_ring = KeyRing.parse(f"k1:{b64(old_raw)}")
    aad = crypto.wrap_aad("f", "o")
    file_key = crypto.new_file_key()
    kek_id, wrapped = old_ring.wrap(file_key, aad)
    rotated = KeyRing.parse(f"k2:{b64(new_raw)}, k1:{b64(old_raw)}")
    assert rotated.active_id == "k2" and rotated.ids() == ["k2", "k1"]
    assert rotated.unwrap(kek_id, wrapped, aad) == file_key
    assert rotated.wrap(file_key, aad)[0] == "k2"
    with pytest.raises(KeyRingError):  # a wrap under the wrong KEK id does not unwrap
        rotated.unwrap("k2", wrapped, aad)


def test_parse_tolerates_whitespace_and_base64_variants(kek_pair: tuple[bytes, bytes]) -> None:
    a, b = kek_pair
    urlsafe_unpadded = base64.urlsafe_b64encode(b).decode().rstrip("=")
    ring = KeyRing.parse(f"\n  key.A : {b64(a)} ,\n\t key_B:{urlsafe_unpadded}\n")
    assert ring.ids() == ["key.A", "key_B"] and ring.active_id == "key.A"
    aad = crypto.wrap_aad("f", "o")
    assert KeyRing({"key.A": a}, "key.A").unwrap(*ring.wrap(b"\1" * 32, aad), aad) == b"\1" * 32


def test_generate_entry() -> None:
    entry = KeyRing.generate_entry("k-2024.1")
    assert entry.startswith("k-2024.1:")
    assert len(base64.b64decode(entry.split(":", 1)[1])) == 32
    assert KeyRing.parse(entry).active_id == "k-2024.1"
    assert KeyRing.generate_entry("x") != KeyRing.generate_entry("x")
    with pytest.raises(KeyRingError):
        KeyRing.generate_entry("bad id")


SECRET = os.urandom(32)
SECRET_B64 = b64(SECRET)

PARSE_ERRORS = {
    "empty": "",
    "blank": "  \n ",
    "only-comma": ",",
    "stray-comma": f"k1:{SECRET_B64},",
    "no-colon": SECRET_B64,
    "bad-base64": "k1:" + SECRET_B64[:20] + "!!" + SECRET_B64[22:],
    "short-key": f"k1:{b64(SECRET[:16])}",
    "long-key": f"k1:{b64(SECRET + b'x')}",
    "zero-key": f"k1:{b64(bytes(32))}",
    "duplicate-id": f"k1:{SECRET_B64},k1:{b64(os.urandom(32))}",
    "bad-id-chars": f"k 1:{SECRET_B64}",
    "empty-id": f":{SECRET_B64}",
    "id-too-long": f"{'a' * 65}:{SECRET_B64}",
    "key-and-id-swapped": f"{SECRET_B64}:k1",
    "urlsafe-key-as-id": f"{base64.urlsafe_b64encode(SECRET).decode().rstrip('=')}:k1",
}


@pytest.mark.parametrize("text", PARSE_ERRORS.values(), ids=PARSE_ERRORS.keys())
def test_parse_errors_do_not_leak_keys(text: str) -> None:
    with pytest.raises(KeyRingError) as info:
        KeyRing.parse(text)
    message = str(info.value)
    assert message
    for secret_text in (SECRET_B64, SECRET_B64.rstrip("="), SECRET_B64[:20], SECRET.hex()):
        assert secret_text not in message
    urlsafe = base64.urlsafe_b64encode(SECRET).decode()
    assert urlsafe[:20] not in message
    assert info.value.__cause__ is None  # no chained exception carrying the input


def test_parse_error_names_the_entry() -> None:
    with pytest.raises(KeyRingError, match=r"entry 2 \(id 'old'\).*32 bytes"):
        KeyRing.parse(f"new:{SECRET_B64}, old:{b64(SECRET[:31])}")


def test_decode_key_accepts_both_alphabets_with_or_without_padding() -> None:
    urlsafe = base64.urlsafe_b64encode(SECRET).decode()
    for text in (SECRET_B64, SECRET_B64.rstrip("="), urlsafe, urlsafe.rstrip("=")):
        assert crypto.decode_key(text) == SECRET


DECODE_ERRORS = {
    "empty": ("", "not valid base64"),
    "whitespace": (f" {SECRET_B64}", "not valid base64"),
    "bad-character": (SECRET_B64[:20] + "!" + SECRET_B64[21:], "not valid base64"),
    "padding-inside": (SECRET_B64[:20] + "=" + SECRET_B64[21:], "not valid base64"),
    "too-much-padding": (SECRET_B64 + "==", "not valid base64"),
    "impossible-length": ("A" * 45, "not valid base64"),  # 45 characters encode no byte string
    "short": (b64(SECRET[:16]), "must decode to 32 bytes, got 16"),
    "long": (b64(SECRET + b"x"), "must decode to 32 bytes, got 33"),
}


@pytest.mark.parametrize(("text", "message"), DECODE_ERRORS.values(), ids=DECODE_ERRORS.keys())
def test_decode_key_says_what_is_wrong_without_the_text(text: str, message: str) -> None:
    with pytest.raises(crypto.KeyFormatError, match=message) as info:
        crypto.decode_key(text)
    assert text.strip() not in str(info.value) or not text.strip()


@pytest.mark.parametrize(
    ("keys", "active"),
    [({}, "a"), ({"a": SECRET}, "b"), ({"a": SECRET[:31]}, "a"), ({"a b": SECRET}, "a b")],
)
def test_constructor_validation(keys: dict[str, bytes], active: str) -> None:
    with pytest.raises(KeyRingError):
        KeyRing(keys, active)


def test_repr_hides_keys() -> None:
    ring = KeyRing({"k1": SECRET, "k0": os.urandom(32)}, "k1")
    for text in (repr(ring), str(ring), f"{ring!r}"):
        assert "k1" in text
        for leak in (SECRET_B64[:12], SECRET.hex()[:16], repr(SECRET)[2:20]):
            assert leak not in text
    assert not hasattr(ring, "__dict__")  # nowhere for raw key bytes to hide
    assert copy.deepcopy(ring) is ring  # shareable, e.g. through dataclasses.asdict


# ----------------------------------------------------------------- property test

BOUNDARIES = [0, FIRST, FIRST + PLAIN, FIRST + 2 * PLAIN]


@settings(max_examples=25, deadline=None)
@given(
    base=st.sampled_from(BOUNDARIES),
    delta=st.integers(min_value=-20, max_value=20),
    in_chunk=st.integers(min_value=1_000, max_value=3 * MiB),
    out_chunk=st.integers(min_value=1_000, max_value=3 * MiB),
)
def test_round_trip_property(base: int, delta: int, in_chunk: int, out_chunk: int) -> None:
    size = max(0, base + delta)
    key = crypto.new_file_key()
    plaintext = data(size)
    chunks: Iterator[bytes] = (plaintext[i : i + in_chunk] for i in range(0, size, in_chunk))
    ciphertext = b"".join(crypto.encrypt_stream(key, chunks))
    assert len(ciphertext) == crypto.ciphertext_size(size)
    assert ours_decrypt(key, ciphertext, chunk=out_chunk) == plaintext
    assert tink_decrypt(key, ciphertext) == plaintext


# ------------------------------------------------------- standalone recovery script


def run_script(*args: str, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    # -I (isolated): no cwd or PYTHONPATH on sys.path, so the script cannot lean on
    # the cryptofiles package even by accident.
    return subprocess.run(
        [sys.executable, "-I", str(SCRIPT), *args], cwd=cwd, capture_output=True, timeout=60
    )


@pytest.fixture(scope="module")
def script_sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes, bytes]:
    directory = tmp_path_factory.mktemp("script")
    key = crypto.new_file_key()
    plaintext = data(FIRST + PLAIN + 777)  # three segments
    (directory / "file.enc").write_bytes(ours_encrypt(key, plaintext))
    return directory, key, plaintext


def test_script_decrypts(script_sample: tuple[Path, bytes, bytes]) -> None:
    directory, key, plaintext = script_sample
    result = run_script("file.enc", b64(key), "-o", "out.bin", cwd=directory)
    assert result.returncode == 0, result.stderr
    assert (directory / "out.bin").read_bytes() == plaintext


def test_script_key_file_and_stdout(script_sample: tuple[Path, bytes, bytes]) -> None:
    directory, key, plaintext = script_sample
    (directory / "key.txt").write_text(b64(key) + "\n")
    result = run_script("file.enc", "--key-file", "key.txt", "-o", "-", cwd=directory)
    assert result.returncode == 0, result.stderr
    assert result.stdout == plaintext


def test_script_decrypts_tink_output(tmp_path: Path, key: bytes) -> None:
    plaintext = data(FIRST)
    (tmp_path / "tink.enc").write_bytes(tink_encrypt(key, plaintext))
    result = run_script("tink.enc", b64(key), "-o", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out").read_bytes() == plaintext


@pytest.mark.parametrize("case", ["flipped-last-segment", "truncated", "wrong-key"])
def test_script_rejects_without_leaving_plaintext(
    script_sample: tuple[Path, bytes, bytes], tmp_path: Path, case: str
) -> None:
    source, key, _ = script_sample
    ciphertext = (source / "file.enc").read_bytes()
    if case == "flipped-last-segment":  # segments 0 and 1 are fine and already decrypted
        ciphertext = flip(ciphertext, len(ciphertext) - 5)
    elif case == "truncated":
        ciphertext = ciphertext[: 2 * SEGMENT_SIZE]
    else:
        key = crypto.new_file_key()
    (tmp_path / "bad.enc").write_bytes(ciphertext)
    (tmp_path / "out.bin").write_bytes(b"previous contents")
    result = run_script("bad.enc", b64(key), "-o", "out.bin", cwd=tmp_path)
    assert result.returncode == 1
    assert b"error" in result.stderr and b64(key).encode() not in result.stderr
    assert (tmp_path / "out.bin").read_bytes() == b"previous contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.enc", "out.bin"]  # no temp left


def test_script_usage_errors(script_sample: tuple[Path, bytes, bytes]) -> None:
    directory, _, _ = script_sample
    assert run_script("file.enc", cwd=directory).returncode == 2  # no key at all
    bad_key = run_script("file.enc", "not-a-key", cwd=directory)
    assert bad_key.returncode == 1 and b"key" in bad_key.stderr
