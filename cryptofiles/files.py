"""Encrypted files: the service behind /upload and /files/..., callable without HTTP.

Composes ``crypto`` (per-file key, streaming encryption, key ring) and ``storage`` (records and
GridFS chunks). Every file gets a fresh random key; its content is encrypted segment by segment
before any byte reaches the database; the key is stored only wrapped under the master key ring.
Memory use does not grow with file size: at most one segment is held at a time.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import itertools
import logging
import re
import time
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta

from cryptofiles import crypto
from cryptofiles.audit import security_event
from cryptofiles.clock import Clock
from cryptofiles.storage import FileRecord, Storage, UploadLost, UsageHead, UsageRepair

log = logging.getLogger(__name__)

# An upload refreshes its record this often; a pending record whose heartbeat is older than
# STALE_UPLOAD is taken for the leftover of a crashed upload and swept.
HEARTBEAT_SECONDS = 10
STALE_UPLOAD = timedelta(minutes=2)
# What _encode_cursor writes: ASCII digits (int() would also take other scripts' digits, and a
# 5000-digit number), then a file id.
CURSOR_RE = re.compile(r"(?P<millis>-?[0-9]{1,16})/(?P<id>[0-9a-f-]{36})")


class FileError(Exception):
    """Base of this module's errors; the message is safe to show to the client."""


class EmptyUpload(FileError):
    pass


class UploadTooLarge(FileError):
    pass


class QuotaExceeded(UploadTooLarge):
    """The owner's stored files plus this one would pass the per-user quota."""


class UploadInterrupted(FileError):
    """The client stopped sending before the end of the body."""


class InvalidCursor(FileError):
    pass


class OwnerGone(FileError):
    """The uploader's account was deleted, or its deletion began, before the upload completed."""


class NoSuchFile(FileError):
    """Unknown, malformed, incomplete, or somebody else's: one answer for all, so ids can't be probed."""


@dataclasses.dataclass(frozen=True)
class SweepReport:
    unfinished: int  # pending uploads whose heartbeat stopped, and interrupted deletions
    orphans: int  # GridFS data with no file record
    ownerless: int = 0  # files whose owner no longer exists
    usage: tuple[UsageRepair, ...] = ()  # usage totals set back to the sum of the owner's files
    sharing: int = 0  # grants and events of files or users gone, events past retention


@dataclasses.dataclass
class RewrapReport:
    rewrapped: int = 0
    skipped: int = 0
    failed: int = 0


@dataclasses.dataclass(frozen=True)
class ByteRange:
    start: int
    stop: int  # exclusive

    @property
    def length(self) -> int:
        return self.stop - self.start


class FileService:
    def __init__(
        self,
        storage: Storage,
        key_ring: crypto.KeyRing,
        clock: Clock,
        max_upload_bytes: int,
        quota_bytes: int | None = None,
    ) -> None:
        self.storage = storage
        self.key_ring = key_ring
        self.clock = clock
        self.max_upload_bytes = max_upload_bytes
        self.quota_bytes = quota_bytes

    def upload(
        self,
        owner: str,
        body: Iterable[bytes],
        *,
        name: str | None = None,
        content_type: str | None = None,
        declared_size: int | None = None,
    ) -> FileRecord:
        """Encrypt and store ``body``; the record is visible only once everything is stored.

        A ``declared_size`` (Content-Length) over the size limit or the owner's quota is refused
        before a byte of the body is read; the actual bytes are counted against both as they come.
        """
        # The owner's running total: one read, whatever they store (kept for counting this upload).
        usage, counter = self._room(owner)
        if declared_size is not None:
            counter.check(declared_size)
        blocks = iter(body)
        first = next((block for block in blocks if block), None)
        if first is None:  # nothing stored yet, nothing to undo
            raise EmptyUpload("The request body is empty: send the file's bytes as the body.")

        record, key = self.new_record(owner, name, content_type)
        self.storage.files.insert_pending(record, record.created_at)
        file_id = record.id
        stored_size = 0
        header = b""
        try:
            with self.storage.chunks.writer(file_id, self.clock) as write_chunk:
                plaintext = counter.count(itertools.chain([first], blocks))
                for segment in crypto.encrypt_stream(key, self._heartbeat(file_id, plaintext)):
                    header = header or bytes(segment[: crypto.HEADER_SIZE])
                    write_chunk(segment)
                    stored_size += len(segment)
            self.complete(record, counter.total, stored_size, header, usage)
        except UploadLost:
            self._discard_quietly(file_id)
            # The account deletion removed the pending record: say so, rather than "lost".
            self._check_owner(owner)
            raise
        except BaseException:
            # Client gone, over the limit, database error, worker stopping, owner deleted: leave
            # nothing behind.
            self._discard_quietly(file_id)
            raise
        return dataclasses.replace(record, size=counter.total, stored_size=stored_size)

    # -- the steps every upload takes (POST /upload here, resumable uploads in uploads.py) --------

    def new_record(
        self, owner: str, name: str | None, content_type: str | None
    ) -> tuple[FileRecord, bytes]:
        """A new file's record (not stored yet) and its fresh key, wrapped in the record."""
        file_id = str(uuid.uuid4())
        key = crypto.new_file_key()
        kek_id, wrapped_key = self.key_ring.wrap(key, crypto.wrap_aad(file_id, owner))
        record = FileRecord(file_id, owner, name, content_type, wrapped_key, kek_id, self.clock())
        return record, key

    def check_room(self, owner: str, size: int) -> UsageHead:
        """Refuse a file of ``size`` bytes over the size limit or the owner's quota; the owner's
        running total, to count the file in once stored."""
        usage, counter = self._room(owner)
        counter.check(size)
        return usage

    def _room(self, owner: str) -> tuple[UsageHead, _SizeGuard]:
        usage = self.storage.usage.head(owner)
        room_left = None if self.quota_bytes is None else self.quota_bytes - usage.bytes
        return usage, _SizeGuard(self.max_upload_bytes, room_left)

    def complete(
        self, record: FileRecord, size: int, stored_size: int, header: bytes, usage: UsageHead
    ) -> None:
        """Make a stored upload servable, then check its owner (see ``_check_owner``) and count it
        in their quota."""
        try:
            counts = self.storage.files.complete(record.id, size, stored_size, header)
        except UploadLost:
            self._check_owner(record.owner)  # removed with its account: say so (OwnerGone)
            raise
        self._check_owner(record.owner)
        if counts:
            # After the owner check, so an upload undone by it never counted. Parallel uploads
            # of one owner are not counted in each other's room: they can overshoot the quota
            # by at most their own sizes, as before the running total.
            self.storage.usage.add(record.owner, size, self.clock(), usage)

    def _check_owner(self, owner: str) -> None:
        """After the compare-and-set to complete: fail if the owner is gone or being deleted.

        FerretDB has no transactions, so an upload racing its owner's account deletion is made safe
        by the order of the writes. The deletion (``DELETE /account``) runs M: mark the user as
        being deleted, L: remove every record of the owner whatever its status, U: delete the user.
        The upload runs I: insert the pending record, W: write chunks, C: mark the record complete
        (by id), R: this check, undoing the upload when it fails. Every interleaving leaves nothing:
        - R after M: R sees the mark (or no user) and the upload discards its record and chunks;
          if L removed the record first, C matched nothing (UploadLost) and the same check runs.
          A record that L shredded before C is marked complete by C, but has no key: never served.
        - R before M: then C came before M, so the record was complete when L listed the owner's
          records after M, and L removes it, as for any file uploaded before the deletion.
        A crash between C and R, after U, leaves a complete file of a missing owner: the sweep
        removes those (``sweep``, at start-up and by ``cryptofiles admin sweep``).
        """
        if not self.storage.users.may_own_files(owner):
            raise OwnerGone("This account was deleted while the upload ran; nothing was stored.")

    def _heartbeat(self, file_id: str, blocks: Iterable[bytes]) -> Iterator[bytes]:
        last = time.monotonic()
        for block in blocks:
            if time.monotonic() - last >= HEARTBEAT_SECONDS:
                self.storage.files.touch_pending(file_id, self.clock())
                last = time.monotonic()
            yield block

    def discard(self, file_id: str) -> None:
        """Remove a resumable upload with everything stored for it (a complete one counts out of
        its owner's quota). Its key goes first, as for a deletion: a request still appending to it
        then fails to record its progress, and removes what it stored after this."""
        self._delete(file_id)

    def _discard_quietly(self, file_id: str) -> None:
        try:
            self.storage.files.discard(file_id)
        except Exception:
            # The record stays pending, is never served, and the next sweep removes it.
            log.warning("could not discard failed upload %s; the sweep will", file_id)

    def get(self, file_id: str, *, owner: str | None = None) -> FileRecord:
        """The complete file ``file_id``; with ``owner``, only if it is theirs. Else NoSuchFile."""
        try:
            canonical = str(uuid.UUID(file_id))
        except ValueError:
            raise NoSuchFile("No such file.") from None
        record = self.storage.files.complete_by_id(canonical) if canonical == file_id else None
        if record is not None and owner is not None and record.owner != owner:
            # Someone asked for another user's file by its id: answered as "no such file", logged.
            security_event("file.not_owner", file=record.id)
            record = None
        if record is None:
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
        chunk = self.storage.chunks.chunk_size
        first, last = span.start // chunk, (span.stop - 1) // chunk
        chunks = self.storage.chunks.read(record.id, record.stored_size, first, last)
        for n, data in enumerate(chunks, first):
            lo = span.start - n * chunk if n == first else 0
            hi = span.stop - n * chunk if n == last else len(data)
            yield data[lo:hi] if (lo, hi) != (0, len(data)) else data

    def plaintext(self, record: FileRecord, byte_range: ByteRange | None = None) -> Iterator[bytes]:
        """The decrypted content, or a range of it, decrypting only the segments it touches.

        The key is unwrapped now, so that a key that cannot be unwrapped fails the request before
        any answer starts; the content is decrypted as the iterator is consumed.
        """
        return self._decrypting(self.key(record), record, byte_range)

    def _decrypting(
        self, key: bytes, record: FileRecord, byte_range: ByteRange | None
    ) -> Iterator[bytes]:
        if byte_range is None:
            yield from crypto.decrypt_stream(key, self.ciphertext(record))
            return
        # The format decides which chunks a range needs (chunk i is ciphertext segment i);
        # this service only fetches them.
        read_chunks = functools.partial(self.storage.chunks.read, record.id, record.stored_size)
        yield from crypto.decrypt_range(
            key,
            read_chunks,
            byte_range.start,
            byte_range.stop,
            ciphertext_size=record.stored_size,
            header=record.header,
        )

    def list(
        self, owner: str, *, limit: int, cursor: str | None = None
    ) -> tuple[list[FileRecord], str | None]:
        """One page of the owner's files, newest first, and the cursor of the next page (or None).

        The cursor names the last file of the page (its time and id), so pages stay consistent
        while files are added or deleted: no offsets that shift.
        """
        after = _decode_cursor(cursor) if cursor else None
        records = self.storage.files.list_files(owner, limit=limit + 1, after=after)
        if len(records) <= limit:
            return records, None
        last = records[limit - 1]
        return records[:limit], _encode_cursor(last.created_at, last.id)

    def delete(self, record: FileRecord) -> None:
        self._delete(record.id)

    def _delete(self, file_id: str, *, count: bool = True) -> None:
        """Crypto-shredding: the wrapped key goes first, so whatever a crash leaves is unreadable.

        A file that was servable until the shred leaves its owner's usage total (unless ``count``
        is off: an owner that no longer exists has no total to keep).
        """
        was = self.storage.files.shred(file_id, self.clock())
        if was is not None and count:
            owner, size = was
            self.storage.usage.add(owner, -size, self.clock())
        # Its share links go with it (they already answer 404: the file is no longer servable).
        self.storage.links.remove_for_file(file_id)
        self.storage.files.discard(file_id)

    def delete_all(self, owner: str) -> int:
        """Delete every record of ``owner``, uploads in progress included; returns how many files
        were complete. Call after ``storage.users.mark_deleting`` (see ``_check_owner`` for why
        that order leaves nothing behind). Safe to repeat after a failure.
        """
        deleted = 0
        for file_id, status in self.storage.files.owned_by(owner):
            self._delete(file_id)
            deleted += status == "complete"
        return deleted

    def sweep(self, *, orphans: bool = False, usage: bool = False) -> SweepReport:
        """Remove uploads a crash left pending, deletions it interrupted and files whose owner no
        longer exists; with ``orphans``, also chunks that belong to no record (a full scan of the
        chunk ids); with ``usage``, repair usage totals that drifted from the owners' files (a full
        scan of the records). Both are admin tasks, not start-up.
        """
        stale = self.storage.files.unfinished(self.clock() - STALE_UPLOAD)
        for file_id in stale:
            self.storage.files.discard(file_id)
        ownerless = self.storage.files.ownerless()
        for file_id in ownerless:
            self._delete(file_id, count=False)
        orphan_ids = self.storage.chunks.orphan_owners() if orphans else []
        for file_id in orphan_ids:
            self.storage.files.discard(file_id)
        if stale or ownerless or orphan_ids:
            log.info(
                "swept %d unfinished file(s), %d of deleted owners, %d orphan(s)",
                len(stale),
                len(ownerless),
                len(orphan_ids),
            )
        repairs = self.storage.repair_usage(self.clock()) if usage else []
        sharing = self.storage.remove_dangling_sharing(self.clock())
        return SweepReport(len(stale), len(orphan_ids), len(ownerless), tuple(repairs), sharing)

    def rewrap_all(self) -> RewrapReport:
        """Re-wrap every file key under the active master key; file contents are untouched.

        Each record is swapped with a compare-and-set, so an interrupted run leaves every record
        wrapped under either its old key or the new one (both in the ring), and a re-run finishes.
        """
        active = self.key_ring.active_id
        report = RewrapReport()
        for file_id, owner, kek_id, wrapped in self.storage.files.wrapped_keys_not_under(active):
            aad = crypto.wrap_aad(file_id, owner)
            try:
                key = self.key_ring.unwrap(kek_id, wrapped, aad)
            except crypto.KeyRingError:
                log.error(
                    "file %s: key cannot be unwrapped under %r; left as it is", file_id, kek_id
                )
                report.failed += 1
                continue
            if self.storage.files.replace_wrapped_key(
                file_id, (kek_id, wrapped), self.key_ring.wrap(key, aad)
            ):
                report.rewrapped += 1
            else:
                report.skipped += 1  # changed meanwhile (deleted, or re-wrapped by another run)
        return report


def _encode_cursor(created_at: datetime, file_id: str) -> str:
    millis = int(created_at.timestamp() * 1000)  # BSON dates have millisecond precision
    return base64.urlsafe_b64encode(f"{millis}/{file_id}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The ``(created_at, id)`` a cursor names; InvalidCursor for anything else, whatever fails.

    A cursor is client input: besides broken base64 or UTF-8 (ValueError), its time may be out of
    datetime's range (ValueError, OverflowError or OSError, depending on the platform's C library).
    """
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        match = CURSOR_RE.fullmatch(text)
        if match is None:
            raise ValueError("not millis/uuid")
        created_at = datetime.fromtimestamp(int(match["millis"]) / 1000, UTC)
        return created_at, str(uuid.UUID(match["id"]))
    except (ValueError, OverflowError, OSError):  # ValueError covers binascii and Unicode errors
        raise InvalidCursor("The cursor is invalid; start again without one.") from None


class _SizeGuard:
    """Counts plaintext bytes and stops the upload as soon as they pass a limit."""

    def __init__(self, limit: int, room_left: int | None = None) -> None:
        self.limit = limit
        self.room_left = room_left
        self.total = 0

    def count(self, blocks: Iterable[bytes]) -> Iterator[bytes]:
        for block in blocks:
            self.total += len(block)
            self.check(self.total)
            yield block

    def check(self, size: int) -> None:
        if size > self.limit:
            raise UploadTooLarge(f"The file is larger than the limit of {self.limit} bytes.")
        if self.room_left is not None and size > self.room_left:
            left = max(self.room_left, 0)
            raise QuotaExceeded(f"The file does not fit in your storage quota ({left} bytes left).")
