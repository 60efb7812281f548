"""Encrypted files: the service behind /upload and /files/..., callable without HTTP.

Composes ``crypto`` (per-file key, streaming encryption, key ring) and ``storage`` (records and
GridFS chunks). Every file gets a fresh random key; its content is encrypted segment by segment
before any byte reaches the database; the key is stored only wrapped under the master key ring.
Memory use does not grow with file size: at most one segment is held at a time.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
import uuid
from collections.abc import Iterable, Iterator
from datetime import timedelta

from cryptofiles import crypto
from cryptofiles.auth import Clock
from cryptofiles.storage import FileRecord, Storage

log = logging.getLogger(__name__)

# An upload refreshes its record this often; a pending record whose heartbeat is older than
# STALE_UPLOAD is taken for the leftover of a crashed upload and swept.
HEARTBEAT_SECONDS = 10
STALE_UPLOAD = timedelta(minutes=2)


class FileError(Exception):
    """Base of this module's errors; the message is safe to show to the client."""


class EmptyUpload(FileError):
    pass


class UploadTooLarge(FileError):
    pass


class UploadInterrupted(FileError):
    """The client stopped sending before the end of the body."""


class NoSuchFile(FileError):
    """Unknown, malformed, incomplete, or somebody else's: one answer for all, so ids can't be probed."""


@dataclasses.dataclass(frozen=True)
class ByteRange:
    start: int
    stop: int  # exclusive

    @property
    def length(self) -> int:
        return self.stop - self.start


class FileService:
    def __init__(
        self, storage: Storage, key_ring: crypto.KeyRing, clock: Clock, max_upload_bytes: int
    ) -> None:
        self.storage = storage
        self.key_ring = key_ring
        self.clock = clock
        self.max_upload_bytes = max_upload_bytes

    def upload(
        self,
        owner: str,
        body: Iterable[bytes],
        *,
        name: str | None = None,
        content_type: str | None = None,
    ) -> FileRecord:
        """Encrypt and store ``body``; the record is visible only once everything is stored."""
        blocks = iter(body)
        first = next((block for block in blocks if block), None)
        if first is None:  # nothing stored yet, nothing to undo
            raise EmptyUpload("The request body is empty: send the file's bytes as the body.")

        file_id = str(uuid.uuid4())
        key = crypto.new_file_key()
        kek_id, wrapped_key = self.key_ring.wrap(key, crypto.wrap_aad(file_id, owner))
        now = self.clock()
        record = FileRecord(file_id, owner, name, content_type, wrapped_key, kek_id, now)
        self.storage.insert_pending_file(record, now)
        counter = _SizeGuard(self.max_upload_bytes)
        stored_size = 0
        try:
            with self.storage.chunk_writer(file_id) as write_chunk:
                plaintext = counter.count(itertools.chain([first], blocks))
                for segment in crypto.encrypt_stream(key, self._heartbeat(file_id, plaintext)):
                    write_chunk(segment)
                    stored_size += len(segment)
            self.storage.complete_file(file_id, counter.total, stored_size)
        except BaseException:
            # Client gone, over the limit, database error, worker stopping: leave nothing behind.
            self._discard_quietly(file_id)
            raise
        return dataclasses.replace(record, size=counter.total, stored_size=stored_size)

    def _heartbeat(self, file_id: str, blocks: Iterable[bytes]) -> Iterator[bytes]:
        last = time.monotonic()
        for block in blocks:
            if time.monotonic() - last >= HEARTBEAT_SECONDS:
                self.storage.touch_pending_file(file_id, self.clock())
                last = time.monotonic()
            yield block

    def _discard_quietly(self, file_id: str) -> None:
        try:
            self.storage.discard_file(file_id)
        except Exception:
            # The record stays pending, is never served, and the next sweep removes it.
            log.warning("could not discard failed upload %s; the sweep will", file_id)

    def get(self, file_id: str, *, owner: str | None = None) -> FileRecord:
        """The complete file ``file_id``; with ``owner``, only if it is theirs. Else NoSuchFile."""
        try:
            canonical = str(uuid.UUID(file_id))
        except ValueError:
            raise NoSuchFile("No such file.") from None
        record = self.storage.complete_file_by_id(canonical) if canonical == file_id else None
        if record is None or (owner is not None and record.owner != owner):
            raise NoSuchFile("No such file.")
        return record

    def key(self, record: FileRecord) -> bytes:
        aad = crypto.wrap_aad(record.id, record.owner)
        return self.key_ring.unwrap(record.kek_id, record.wrapped_key, aad)

    def ciphertext(
        self, record: FileRecord, byte_range: ByteRange | None = None
    ) -> Iterator[bytes]:
        """The stored (encrypted) bytes, or a range of them, read chunk by chunk."""
        span = byte_range or ByteRange(0, record.stored_size)
        if span.length <= 0:
            return
        chunk = self.storage.chunk_size
        first, last = span.start // chunk, (span.stop - 1) // chunk
        for n, data in enumerate(self.storage.read_chunks(record.id, first, last), first):
            lo = span.start - n * chunk if n == first else 0
            hi = span.stop - n * chunk if n == last else len(data)
            yield data[lo:hi] if (lo, hi) != (0, len(data)) else data

    def sweep(self) -> int:
        """Remove uploads that a crash left pending; returns how many."""
        stale = self.storage.stale_pending_files(self.clock() - STALE_UPLOAD)
        for file_id in stale:
            self.storage.discard_file(file_id)
        if stale:
            log.info("swept %d incomplete upload(s)", len(stale))
        return len(stale)


class _SizeGuard:
    """Counts plaintext bytes and stops the upload as soon as they pass the limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0

    def count(self, blocks: Iterable[bytes]) -> Iterator[bytes]:
        for block in blocks:
            self.total += len(block)
            if self.total > self.limit:
                raise UploadTooLarge(f"The file is larger than the limit of {self.limit} bytes.")
            yield block
