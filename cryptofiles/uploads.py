"""Resumable uploads (the service behind tus 1.0 at /uploads/), encrypted as they arrive.

An upload is created with its length, then appended to by any number of requests, from any app
instance, until its bytes are all there; it then is an ordinary file (same id, same routes, same
key rules). Nothing is kept between requests but what the database holds, and the database never
holds plaintext: each request seals the plaintext segments it completes (the file format's, see
``crypto.stream``) and stores them as chunks as they arrive. Bytes after the last segment a request
completed are dropped, and the offset the upload reports is the end of its last stored segment:
the client sends them again (tus lets a server accept fewer bytes than were sent). The segment
holding the declared length's last byte is sealed as the last one.

Why a chunk is never sealed twice with other bytes: a segment's nonce is fixed by its index, so
two different ciphertexts of one index at rest would be a reused AES-GCM nonce. A request takes
the upload's lock (``storage.uploads``), so only one appends at a time; a chunk that a dead
request stored without recording it is only ever matched against the same bytes
(``Chunks.put``); other bytes for it end the upload (``UploadConflict``). For the same reason a
PATCH whose checksum fails ends the upload: the bytes it stored cannot be replaced by others.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Iterable
from datetime import datetime, timedelta

from cryptofiles import crypto
from cryptofiles.audit import security_event
from cryptofiles.files import FileError, FileService, NoSuchFile, UploadTooLarge
from cryptofiles.storage import ChunkConflict, Storage, UploadLost, UploadRecord, UsageHead

log = logging.getLogger(__name__)

# A request appending to an upload renews its lock this often while bytes arrive; a lock not
# renewed for LOCK_STALE_SECONDS belongs to a request whose client went silent (a network drop
# the server has not noticed: its read waits for the idle limit) or that died, and the next
# request takes it over. Short, so that tus clients' usual retries (tus-js-client: 0, 1, 3, 5 s)
# get through after a silent drop. Taking over a live but slow request is safe: the two seal the
# same segments, a chunk is stored once (Chunks.put), and the old one stops at its next renewal.
LOCK_RENEW_SECONDS = 2
LOCK_STALE_SECONDS = 8
# How often it records its progress while bytes come (and always when its body ends or breaks).
# A worker killed meanwhile leaves at most this much stored but unrecorded: the client sends it
# again, and it is matched against what is stored (Chunks.put). Recording every segment would
# cost a round trip per MiB.
RECORD_SECONDS = 1
# Expired uploads answer 404 at once; their chunks are removed at start-up, by `admin sweep`, and
# by the first upload created after this long (so a server that runs for weeks reclaims them).
SWEEP_EVERY_SECONDS = 3600


class NoSuchUpload(NoSuchFile):
    """Unknown, expired, or somebody else's: one answer for all."""


class InvalidUpload(FileError):
    """The request breaks a rule of resumable uploads (a 400)."""


class NoProgress(InvalidUpload):
    """A whole body that reached neither a segment's end nor the upload's: nothing stored."""


class OffsetMismatch(FileError):
    """The client's Upload-Offset is not the upload's (a 409)."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


class UploadBusy(FileError):
    """Another request is appending to this upload (a 409)."""


class UploadConflict(FileError):
    """Bytes sent for a part already stored differ from it: the upload was ended (a 409)."""


class ChecksumMismatch(FileError):
    """The body does not match its Upload-Checksum: the upload was ended (a 460)."""


@dataclasses.dataclass(frozen=True)
class UploadStatus:
    id: str
    length: int
    offset: int
    expires_at: datetime | None  # None once complete
    name: str | None
    content_type: str | None

    @property
    def complete(self) -> bool:
        return self.expires_at is None

    @classmethod
    def of(cls, upload: UploadRecord) -> UploadStatus:
        return cls(
            upload.file.id,
            upload.length,
            upload.offset,
            upload.expires_at,
            upload.file.name,
            upload.file.content_type,
        )


class ResumableUploads:
    def __init__(
        self,
        storage: Storage,
        files: FileService,
        *,
        expiry: timedelta,
        lock_stale: timedelta = timedelta(seconds=LOCK_STALE_SECONDS),
    ) -> None:
        self.storage = storage
        self.files = files
        self.clock = files.clock
        self.expiry = expiry
        self.lock_stale = lock_stale
        self._swept = time.monotonic()

    def create(
        self, owner: str, length: int, *, name: str | None, content_type: str | None
    ) -> UploadStatus:
        if length < 1:
            raise InvalidUpload("Upload-Length must be at least 1: empty files are not stored.")
        self.files.check_room(owner, length)
        if time.monotonic() - self._swept >= SWEEP_EVERY_SECONDS:
            self.sweep()
        record, key = self.files.new_record(owner, name, content_type)
        sealer = crypto.SegmentSealer.fresh(key)
        expires_at = record.created_at + self.expiry
        self.storage.uploads.create(
            record, length=length, header=sealer.header, expires_at=expires_at
        )
        return UploadStatus(record.id, length, 0, expires_at, name, content_type)

    def status(self, upload_id: str, owner: str) -> UploadStatus:
        return UploadStatus.of(self._get(upload_id, owner))

    def _get(self, upload_id: str, owner: str) -> UploadRecord:
        upload = self.storage.uploads.get(upload_id)
        if upload is not None and upload.file.owner != owner:
            security_event("upload.not_owner", upload=upload_id)
            upload = None
        if upload is None or (upload.expires_at is not None and upload.expires_at <= self.clock()):
            raise NoSuchUpload("No such upload.")
        return upload

    def append(
        self,
        upload_id: str,
        owner: str,
        offset: int,
        body: Iterable[bytes],
        *,
        declared_size: int | None = None,
        checksum: tuple[str, bytes] | None = None,
        creating: bool = False,
    ) -> UploadStatus:
        """Store the segments that ``body`` (the upload's bytes from ``offset``) completes.

        With ``checksum`` (an algorithm of hashlib's and the body's digest), nothing is recorded
        unless the body matches it. Returns the upload as it now is: its offset is the end of the last segment
        stored, or its length once complete. ``creating``: the body came with the creation
        (creation-with-upload), whose answer tells the client where the upload is: so a body
        that stores nothing is no error, and a failure removes the upload, which the client
        could not resume without its location.
        """
        if creating:
            try:
                return self.append(
                    upload_id, owner, offset, body, declared_size=declared_size, checksum=checksum
                )
            except InvalidUpload as exc:
                if not isinstance(exc, NoProgress):
                    self.files.discard(upload_id)
                    raise
                return self.status(upload_id, owner)
            except BaseException:
                self.files.discard(upload_id)
                raise
        upload = self._get(upload_id, owner)
        if upload.offset != offset:
            raise OffsetMismatch(
                f"Upload-Offset is {offset}, the upload's is {upload.offset}: "
                "resume from the offset HEAD gives.",
                upload.offset,
            )
        if upload.complete:
            if declared_size:
                raise InvalidUpload("The upload is complete; it takes no more bytes.")
            return UploadStatus.of(upload)
        if declared_size is not None and offset + declared_size > upload.length:
            raise InvalidUpload(self._past_end(upload))
        usage = self.files.check_room(owner, upload.length)  # the quota may have filled since
        token = secrets.token_hex(16)
        now = self.clock()
        if not self.storage.uploads.lock(upload_id, token, now, now - self.lock_stale):
            raise UploadBusy(
                "Another request is sending bytes to this upload; "
                "wait for it to end, then resume from the offset HEAD gives."
            )
        try:
            upload = self._get(upload_id, owner)  # as it is now that we hold the lock
            if upload.offset != offset:
                raise OffsetMismatch(
                    f"Upload-Offset is {offset}, the upload's is {upload.offset}: "
                    "resume from the offset HEAD gives.",
                    upload.offset,
                )
            appender = _Appender(self, upload, token, checksum[0] if checksum else None)
            digest = appender.feed(body)
            if checksum is not None and not hmac.compare_digest(digest, checksum[1]):
                self.files.discard(upload_id)
                raise ChecksumMismatch(
                    "The body does not match Upload-Checksum. The upload was ended, since the "
                    "parts it stored cannot be replaced by other bytes: start a new upload."
                )
            upload = appender.record()
            if upload.offset == upload.length:
                self._finish(upload, usage)
                upload = dataclasses.replace(upload, expires_at=None, complete=True)
            elif appender.whole_body and upload.offset == offset:
                raise NoProgress(
                    "The body ended before the next segment boundary, so nothing could be "
                    "stored: send at least "
                    f"{min(crypto.plaintext_segment_size(upload.segments), upload.length - offset)}"
                    " bytes from this offset (or the rest of the file) in one PATCH."
                )
        except ChunkConflict:
            self.files.discard(upload_id)
            raise UploadConflict(
                "The bytes sent differ from the ones already stored for that part of the upload. "
                "The upload was ended: start a new one."
            ) from None
        finally:
            self.storage.uploads.unlock(upload_id, token)
        return UploadStatus.of(upload)

    def _finish(self, upload: UploadRecord, usage: UsageHead) -> None:
        self.storage.chunks.add_entry(upload.file.id, upload.stored_size, self.clock())
        try:
            self.files.complete(
                upload.file, upload.length, upload.stored_size, upload.header, usage
            )
        except UploadLost:  # terminated, or swept, as its last bytes arrived
            self.files.discard(upload.file.id)
            raise NoSuchUpload("No such upload.") from None
        except BaseException:
            self.files.discard(upload.file.id)
            raise

    def terminate(self, upload_id: str, owner: str) -> None:
        """Remove an unfinished upload with all it stored; a complete one is a file: deleted."""
        self._get(upload_id, owner)
        self.files.discard(upload_id)

    def sweep(self) -> int:
        """Remove the unfinished uploads past their expiry, with their chunks."""
        self._swept = time.monotonic()
        expired = self.storage.uploads.expired(self.clock())
        for upload_id in expired:
            self.files.discard(upload_id)
        if expired:
            log.info("swept %d expired resumable upload(s)", len(expired))
        return len(expired)

    @staticmethod
    def _past_end(upload: UploadRecord) -> str:
        return (
            f"The body goes past Upload-Length ({upload.length}); "
            f"send at most {upload.length - upload.offset} bytes from offset {upload.offset}."
        )


class _Appender:
    """One request's appending: cuts the body into the segments the upload still needs, seals
    and stores each as it completes, and records the progress (unless verifying a checksum, when
    the progress is recorded at the end, once the body matched it)."""

    def __init__(
        self, service: ResumableUploads, upload: UploadRecord, token: str, algorithm: str | None
    ) -> None:
        self.service = service
        self.storage = service.storage
        self.upload = upload
        self.token = token
        self.algorithm = algorithm
        self.verify = algorithm is not None
        self.sealer = crypto.SegmentSealer(service.files.key(upload.file), upload.header)
        self.segments = upload.segments
        self.offset = upload.offset
        self.stored_size = upload.stored_size
        self.whole_body = False
        self.renewed = self.recorded = time.monotonic()
        self.recorded_segments = upload.segments

    def _need(self) -> int:
        """Plaintext bytes of the next segment: a full one, or what is left of the file."""
        left = self.upload.length - self.offset
        return min(crypto.plaintext_segment_size(self.segments), left)

    def feed(self, body: Iterable[bytes]) -> bytes:
        """Store what ``body`` completes; the whole body's digest (b"" if not verifying).

        Without a checksum, what was stored is recorded even when the body breaks off (a client
        gone, a stall): the client resumes from there.
        """
        digest = hashlib.new(self.algorithm) if self.algorithm else None
        # The format's own cutter (as POST /upload's): whole segments are sliced out of the
        # request's blocks without a copy; only a segment spanning two blocks is assembled.
        cutter = crypto.Segmenter(self._need(), crypto.plaintext_segment_size(self.segments + 1))
        received = self.offset
        blocks = iter(body)
        try:
            while True:
                try:
                    block = next(blocks)
                except StopIteration:
                    self.whole_body = True
                    break
                except BaseException:  # the body broke off: what is whole is still stored
                    self._store_if_whole(cutter.tail())
                    raise
                self._renew()
                if digest is not None:
                    digest.update(block)
                received += len(block)
                if received > self.upload.length:
                    raise InvalidUpload(ResumableUploads._past_end(self.upload))
                for plaintext in cutter.push(block):
                    self._store(plaintext)
            # The cutter holds a segment back until a byte after it arrives: the last one here.
            self._store_if_whole(cutter.tail())
        finally:
            if not self.verify and self.recorded_segments != self.segments:
                self._record()
        return digest.digest() if digest is not None else b""

    def _store_if_whole(self, plaintext: memoryview) -> None:
        if plaintext and len(plaintext) == self._need():
            self._store(plaintext)

    def _store(self, plaintext: memoryview) -> None:
        last = self.offset + len(plaintext) == self.upload.length
        sealed = self.sealer.seal(self.segments, plaintext, last=last)
        self.storage.chunks.put(self.upload.file.id, self.segments, sealed)
        self.segments += 1
        self.offset += len(plaintext)
        self.stored_size += len(sealed)
        if not self.verify and time.monotonic() - self.recorded >= RECORD_SECONDS:
            self._record()

    def _renew(self, *, now: bool = False) -> None:
        """Keep the lock (every LOCK_RENEW_SECONDS, or ``now``); stop if it was taken over."""
        if now or time.monotonic() - self.renewed >= LOCK_RENEW_SECONDS:
            upload_id = self.upload.file.id
            if not self.storage.uploads.renew(upload_id, self.token, self.service.clock()):
                if self.storage.uploads.get(upload_id) is None:
                    # Removed with its lock (DELETE, expiry, account deletion): what this request
                    # stored since must not stay behind.
                    self.service.files.discard(upload_id)
                    raise NoSuchUpload("No such upload.")
                raise UploadBusy(
                    "Another request took this upload over; resume from the offset HEAD gives."
                )
            self.renewed = time.monotonic()

    def _record(self) -> None:
        # Only while holding the lock: a request taken over must neither move the offset back
        # under its successor's feet nor remove an upload its successor completed.
        self._renew(now=True)
        if not self.storage.uploads.advance(
            self.upload.file.id, self.segments, self.offset, self.stored_size
        ):
            # Terminated or swept meanwhile: the chunks just stored must not stay behind.
            self.service.files.discard(self.upload.file.id)
            raise NoSuchUpload("No such upload.")
        self.recorded = time.monotonic()
        self.recorded_segments = self.segments

    def record(self) -> UploadRecord:
        """The upload with this request's progress, recorded now (and the lock still ours)."""
        if self.recorded_segments != self.segments:
            self._record()
        else:
            self._renew(now=True)
        return dataclasses.replace(
            self.upload,
            segments=self.segments,
            offset=self.offset,
            stored_size=self.stored_size,
        )


__all__ = [
    "ChecksumMismatch",
    "InvalidUpload",
    "NoProgress",
    "NoSuchUpload",
    "OffsetMismatch",
    "ResumableUploads",
    "UploadBusy",
    "UploadConflict",
    "UploadStatus",
    "UploadTooLarge",
]
