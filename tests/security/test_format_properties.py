"""Properties of the file format and the key wrap, with Tink as the oracle (ASVS 5.0 V11 cryptography).

tests/test_crypto.py proves with hypothesis that files of sizes near the first three segment ends
round-trip under fixed-size chunking, and checks a fixed list of tamperings on one sample. Here
hypothesis goes further: sizes around the ends of the first five segments and around the header
and tag sizes, arbitrary (also empty) chunk cuts and buffer types, random plaintext ranges; the key
wrap under random file ids, owners and key rings; and tampering anywhere (any bit, any dropped byte
range, any truncation or extension, any duplicated or reordered segment), which both our decryption
and Tink must refuse. Range decryption must refuse a tampered segment exactly when the range needs
it.
"""

from __future__ import annotations

import base64
import itertools
import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cryptofiles import crypto
from cryptofiles.crypto import HEADER_SIZE, SEGMENT_SIZE, TAG_SIZE, DecryptionError, KeyRing
from cryptofiles.dev.tink_oracle import TinkError, tink_decrypt

FIRST = SEGMENT_SIZE - HEADER_SIZE - TAG_SIZE  # plaintext held by segment 0
PLAIN = SEGMENT_SIZE - TAG_SIZE  # plaintext held by every later segment
FIRST_CT = SEGMENT_SIZE - HEADER_SIZE  # segment 0's ciphertext, header excluded
# The plaintext sizes at which a segment is exactly full: where off-by-ones live.
SEGMENT_ENDS = [0, FIRST, *(FIRST + k * PLAIN for k in range(1, 5))]
DELTAS = st.one_of(
    st.integers(-3, 3),
    st.sampled_from([-TAG_SIZE, TAG_SIZE, -HEADER_SIZE, HEADER_SIZE, -4096, 4096]),
)


def bounded(examples: int) -> settings:
    return settings(
        max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )


def split(data: bytes, cuts: list[int], kinds: list[int]) -> Iterator[crypto.Buffer]:
    """``data`` cut at ``cuts`` (any order, repeats give empty pieces), as assorted buffer types."""
    points = sorted(min(c, len(data)) for c in cuts)
    for n, (a, b) in enumerate(itertools.pairwise([0, *points, len(data)])):
        piece = data[a:b]
        kind = kinds[n % len(kinds)] if kinds else 0
        yield (piece, bytearray(piece), memoryview(piece))[kind]


def segments_of(ciphertext: bytes) -> list[bytes]:
    """The stored pieces: segment 0 with the header in front, then each later segment."""
    return [ciphertext[:SEGMENT_SIZE]] + [
        ciphertext[i : i + SEGMENT_SIZE] for i in range(SEGMENT_SIZE, len(ciphertext), SEGMENT_SIZE)
    ]


def ours_decrypt(key: bytes, ciphertext: bytes, chunk: int) -> bytes:
    pieces = (ciphertext[i : i + chunk] for i in range(0, len(ciphertext), chunk))
    return b"".join(crypto.decrypt_stream(key, pieces))


# -- round trips -------------------------------------------------------------------------------------


@bounded(30)
@given(
    end=st.sampled_from(SEGMENT_ENDS),
    delta=DELTAS,
    cuts=st.lists(st.integers(0, 5 * SEGMENT_SIZE), max_size=6),
    kinds=st.lists(st.integers(0, 2), max_size=4),
    out_chunk=st.sampled_from([1, 15, 4096, FIRST_CT, SEGMENT_SIZE, SEGMENT_SIZE + 1, 1 << 23]),
)
def test_round_trip_at_every_segment_end(
    end: int, delta: int, cuts: list[int], kinds: list[int], out_chunk: int
) -> None:
    size = max(0, end + delta)
    assume(out_chunk > 15 or size < 100_000)  # byte-sized reads only on small files
    key = crypto.new_file_key()
    plaintext = os.urandom(size)
    pieces = list(crypto.encrypt_stream(key, split(plaintext, cuts, kinds)))
    ciphertext = b"".join(pieces)
    assert len(ciphertext) == crypto.ciphertext_size(size)
    assert crypto.plaintext_size(len(ciphertext)) == size
    assert crypto.segment_count(len(ciphertext)) == len(pieces)
    assert all(len(piece) == SEGMENT_SIZE for piece in pieces[:-1])  # piece i is GridFS chunk i
    assert ours_decrypt(key, ciphertext, out_chunk) == plaintext
    assert tink_decrypt(key, ciphertext) == plaintext


@pytest.fixture(scope="module")
def sample() -> tuple[bytes, bytes, bytes]:
    """(key, plaintext, ciphertext): four full segments and a short fifth."""
    key = crypto.new_file_key()
    plaintext = os.urandom(FIRST + 3 * PLAIN + 777)
    return key, plaintext, b"".join(crypto.encrypt_stream(key, [plaintext]))


def plaintext_offsets(size: int) -> st.SearchStrategy[int]:
    near_ends = st.builds(
        lambda end, d: min(max(end + d, 0), size - 1),
        st.sampled_from(SEGMENT_ENDS),
        st.integers(-2, 2),
    )
    return st.one_of(near_ends, st.integers(0, size - 1))


def decrypt_range(key: bytes, ciphertext: bytes, start: int, stop: int) -> bytes:
    """Plaintext bytes start..stop (inclusive) from only the stored pieces that hold them."""
    first, last = crypto.plaintext_segment_range(start, stop)
    pieces = segments_of(ciphertext)
    header = pieces[0][:HEADER_SIZE]
    wanted = [pieces[0][HEADER_SIZE:] if i == 0 else pieces[i] for i in range(first, last + 1)]
    total = crypto.segment_count(len(ciphertext))
    out = b"".join(crypto.decrypt_segments(key, header, first, wanted, total_segments=total))
    skip = start - crypto.plaintext_offset_of_segment(first)
    return out[skip : skip + stop - start + 1]


@bounded(40)
@given(data=st.data())
def test_any_range_decrypts_to_the_same_slice(
    sample: tuple[bytes, bytes, bytes], data: st.DataObject
) -> None:
    key, plaintext, ciphertext = sample
    a = data.draw(plaintext_offsets(len(plaintext)), label="a")
    b = data.draw(plaintext_offsets(len(plaintext)), label="b")
    start, stop = min(a, b), max(a, b)
    assert decrypt_range(key, ciphertext, start, stop) == plaintext[start : stop + 1]


# -- tampering --------------------------------------------------------------------------------------


def refused_by_both(key: bytes, bad: bytes, chunk: int = 99_991) -> None:
    with pytest.raises(DecryptionError) as info:
        ours_decrypt(key, bad, chunk)
    assert key.hex() not in str(info.value)
    with pytest.raises(TinkError):
        tink_decrypt(key, bad)


@bounded(40)
@given(position=st.data(), bit=st.integers(0, 7))
def test_any_flipped_bit_is_refused(
    sample: tuple[bytes, bytes, bytes], position: st.DataObject, bit: int
) -> None:
    key, _, ciphertext = sample
    where = position.draw(
        st.one_of(
            st.integers(0, len(ciphertext) - 1),
            st.integers(0, HEADER_SIZE - 1),  # the header: length byte, salt, nonce prefix
            st.sampled_from([SEGMENT_SIZE * k - 1 for k in range(1, 5)]),  # tags' last bytes
        ),
        label="position",
    )
    bad = bytearray(ciphertext)
    bad[where] ^= 1 << bit
    refused_by_both(key, bytes(bad))


@bounded(30)
@given(data=st.data())
def test_any_dropped_byte_range_is_refused(
    sample: tuple[bytes, bytes, bytes], data: st.DataObject
) -> None:
    key, _, ciphertext = sample
    start = data.draw(st.integers(0, len(ciphertext) - 1), label="start")
    length = data.draw(
        st.one_of(
            st.integers(1, 64),
            st.sampled_from([TAG_SIZE, SEGMENT_SIZE]),
            st.integers(1, len(ciphertext) - start),
        ),
        label="length",
    )
    refused_by_both(key, ciphertext[:start] + ciphertext[start + length :])


@bounded(30)
@given(data=st.data())
def test_any_truncation_or_extension_is_refused(
    sample: tuple[bytes, bytes, bytes], data: st.DataObject
) -> None:
    key, _, ciphertext = sample
    if data.draw(st.booleans(), label="truncate"):
        cut = data.draw(
            st.one_of(
                st.integers(0, len(ciphertext) - 1),
                st.sampled_from([HEADER_SIZE, *(k * SEGMENT_SIZE for k in range(1, 5))]),
            ),
            label="keep",
        )
        bad = ciphertext[:cut]
    else:
        tail = data.draw(
            st.one_of(st.binary(min_size=1, max_size=64), st.just(segments_of(ciphertext)[-1])),
            label="appended",
        )
        bad = ciphertext + tail
    refused_by_both(key, bad)


@bounded(30)
@given(data=st.data())
def test_any_duplicated_or_reordered_segment_is_refused(
    sample: tuple[bytes, bytes, bytes], data: st.DataObject
) -> None:
    key, _, ciphertext = sample
    pieces = segments_of(ciphertext)
    # Segment 0 keeps the header in front: moving it elsewhere is a dropped-range case anyway.
    body = pieces[1:]
    order = list(range(len(body)))
    if data.draw(st.booleans(), label="duplicate"):
        which = data.draw(st.sampled_from(order), label="segment")
        at = data.draw(st.integers(0, len(order)), label="at")
        order.insert(at, which)
    else:
        order = data.draw(st.permutations(order), label="order")
        assume(order != sorted(order))
    refused_by_both(key, pieces[0] + b"".join(body[i] for i in order))


@bounded(40)
@given(data=st.data(), bit=st.integers(0, 7))
def test_range_decryption_refuses_exactly_the_ranges_that_need_a_tampered_segment(
    sample: tuple[bytes, bytes, bytes], data: st.DataObject, bit: int
) -> None:
    key, plaintext, ciphertext = sample
    where = data.draw(st.integers(HEADER_SIZE, len(ciphertext) - 1), label="flipped byte")
    bad = bytearray(ciphertext)
    bad[where] ^= 1 << bit
    tampered = where // SEGMENT_SIZE  # stored piece i is segment i
    a = data.draw(plaintext_offsets(len(plaintext)), label="a")
    b = data.draw(plaintext_offsets(len(plaintext)), label="b")
    start, stop = min(a, b), max(a, b)
    first, last = crypto.plaintext_segment_range(start, stop)
    if first <= tampered <= last:
        with pytest.raises(DecryptionError):
            decrypt_range(key, bytes(bad), start, stop)
    else:  # segments are authenticated one by one: the others stay readable
        assert decrypt_range(key, bytes(bad), start, stop) == plaintext[start : stop + 1]


@bounded(20)
@given(where=st.integers(0, HEADER_SIZE - 1), bit=st.integers(0, 7), data=st.data())
def test_a_tampered_header_refuses_every_range(
    sample: tuple[bytes, bytes, bytes], where: int, bit: int, data: st.DataObject
) -> None:
    key, plaintext, ciphertext = sample
    bad = bytearray(ciphertext)
    bad[where] ^= 1 << bit
    start = data.draw(plaintext_offsets(len(plaintext)), label="start")
    with pytest.raises(DecryptionError):
        decrypt_range(key, bytes(bad), start, start)


# -- the key wrap ------------------------------------------------------------------------------------

TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)  # ids and owners
KEK_IDS = st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True)


def ring(entries: list[tuple[str, bytes]]) -> KeyRing:
    return KeyRing.parse(
        ",".join(f"{kek}:{base64.b64encode(key).decode()}" for kek, key in entries)
    )


KEY_RINGS = st.lists(
    st.tuples(KEK_IDS, st.binary(min_size=32, max_size=32).filter(any)),
    min_size=1,
    max_size=3,
    unique_by=lambda entry: entry[0],
)


@bounded(50)
@given(entries=KEY_RINGS, file_id=TEXT, owner=TEXT, new_kek=KEK_IDS)
def test_wrap_round_trips_and_survives_rotation(
    entries: list[tuple[str, bytes]], file_id: str, owner: str, new_kek: str
) -> None:
    assume(new_kek not in {kek for kek, _ in entries})
    file_key = crypto.new_file_key()
    aad = crypto.wrap_aad(file_id, owner)
    kek_id, wrapped = ring(entries).wrap(file_key, aad)
    assert kek_id == entries[0][0]
    assert ring(entries).unwrap(kek_id, wrapped, aad) == file_key
    rotated = ring([(new_kek, os.urandom(32)), *entries])
    assert rotated.unwrap(kek_id, wrapped, aad) == file_key  # old wraps still open
    assert rotated.wrap(file_key, aad)[0] == new_kek  # new wraps use the new key


@bounded(100)
@given(a=st.tuples(TEXT, TEXT), b=st.tuples(TEXT, TEXT))
def test_the_wrap_is_bound_to_its_file_and_owner(a: tuple[str, str], b: tuple[str, str]) -> None:
    assume(a != b)
    assert crypto.wrap_aad(*a) != crypto.wrap_aad(*b)  # no two (file, owner) pairs collide
    keys = ring([("k1", os.urandom(32))])
    kek_id, wrapped = keys.wrap(crypto.new_file_key(), crypto.wrap_aad(*a))
    with pytest.raises(crypto.KeyRingError):
        keys.unwrap(kek_id, wrapped, crypto.wrap_aad(*b))


@bounded(100)
@given(data=st.data())
def test_any_change_to_a_wrapped_key_is_refused(data: st.DataObject) -> None:
    keys = ring([("k1", os.urandom(32)), ("k0", os.urandom(32))])
    aad = crypto.wrap_aad("file", "owner")
    kek_id, wrapped = keys.wrap(crypto.new_file_key(), aad)
    how = data.draw(st.sampled_from(["flip", "truncate", "extend", "other-kek"]), label="how")
    if how == "flip":
        bad = bytearray(wrapped)
        bad[data.draw(st.integers(0, len(wrapped) - 1), label="byte")] ^= 1 << data.draw(
            st.integers(0, 7), label="bit"
        )
        kek, blob = kek_id, bytes(bad)
    elif how == "truncate":
        kek, blob = kek_id, wrapped[: data.draw(st.integers(0, len(wrapped) - 1), label="keep")]
    elif how == "extend":
        kek, blob = kek_id, wrapped + data.draw(st.binary(min_size=1, max_size=16), label="tail")
    else:
        kek, blob = "k0", wrapped
    with pytest.raises(crypto.KeyRingError) as info:
        keys.unwrap(kek, blob, aad)
    assert wrapped.hex() not in str(info.value)
