"""Cutting a stream of arbitrary-sized pieces into the format's segments, without copying big pieces.

Used both ways: the encryptor cuts plaintext into segment-sized blocks, the decryptor cuts
ciphertext into whole segments. No cryptography here.
"""

from __future__ import annotations

from collections.abc import Iterator

from cryptofiles.crypto.layout import Buffer

__all__ = ["Segmenter", "as_byte_view"]


def as_byte_view(data: Buffer) -> memoryview:
    """``data`` as a one-dimensional view of bytes."""
    view = memoryview(data)
    # Accept any contiguous buffer (e.g. array('I')) but address it byte-wise.
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


class Segmenter:
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
        view = as_byte_view(data)
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
