"""Resumable uploads' state: on the file's own record while it is ``resumable``, and their locks.

A resumable (tus) upload is a file record in ``files`` with ``status: "resumable"`` (never served,
like ``pending``) and these fields besides the record's own: ``length`` (the declared plaintext
size), ``offset`` (plaintext bytes stored, always the end of a stored segment), ``segments`` (how
many ciphertext chunks are stored), ``stored_size`` (their bytes), ``header`` (the ciphertext
header, chosen at creation: segments sealed in later requests need its salt and nonce prefix) and
``expires_at``. Its chunks are written under the record's id, as any upload's, and it becomes an
ordinary complete file through ``FileRecords.complete``.

``upload_locks``: ``_id`` and ``file`` = the upload's id (``file``: removed with the record, as
grants and events are), ``token`` (random, one per request), ``at`` (renewed as
the request stores segments). One request at a time appends to an upload. The lock is taken by
inserting its document, because FerretDB enforces a unique ``_id`` but applies a conditional
update as read, modify, write back (see ``links.py``): two requests that both "set the lock if
free" could both succeed, two inserts cannot. A lock whose ``at`` is older than the stale limit
belongs to a request that died (a killed worker), and the next request takes it over.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from bson.binary import Binary
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from cryptofiles.storage.errors import _mapped_errors
from cryptofiles.storage.records import FileRecord, _servable

RESUMABLE = "resumable"


@dataclasses.dataclass(frozen=True)
class UploadRecord:
    """A resumable upload as stored: the file record it will become, and how far it got."""

    file: FileRecord
    length: int
    offset: int
    segments: int
    stored_size: int
    header: bytes = dataclasses.field(repr=False)
    expires_at: datetime | None  # None once complete
    complete: bool

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> UploadRecord:
        complete = doc.get("status") == "complete"
        length = int(doc.get("length", doc.get("size", 0)))
        return cls(
            file=FileRecord.from_doc(doc),
            length=length,
            offset=length if complete else int(doc["offset"]),
            segments=int(doc.get("segments", 0)),
            stored_size=int(doc.get("stored_size", 0)),
            header=bytes(doc["header"]),
            expires_at=None if complete else doc["expires_at"],
            complete=complete,
        )


class Uploads:
    """Resumable uploads: ``storage.uploads``."""

    def __init__(self, db: Database[dict[str, Any]]) -> None:
        self.records = db["files"]
        self.locks = db["upload_locks"]

    def ensure_indexes(self) -> None:
        with _mapped_errors():
            self.records.create_index([("status", 1), ("expires_at", 1)], name="files_by_expiry")

    def create(
        self, record: FileRecord, *, length: int, header: bytes, expires_at: datetime
    ) -> None:
        doc = dataclasses.asdict(record)
        doc["_id"] = doc.pop("id")
        doc["wrapped_key"] = Binary(record.wrapped_key)
        doc.update(
            status=RESUMABLE,
            length=length,
            offset=0,
            segments=0,
            stored_size=0,
            header=Binary(header),
            expires_at=expires_at,
        )
        with _mapped_errors():
            self.records.insert_one(doc)

    def get(self, upload_id: str) -> UploadRecord | None:
        """The upload, unfinished or complete (a complete one is an ordinary file); else None."""
        with _mapped_errors():
            doc = self.records.find_one({"_id": upload_id})  # by _id alone: see records.complete
        if doc is None or "header" not in doc:
            return None
        if doc.get("status") == RESUMABLE and "wrapped_key" in doc:
            return UploadRecord.from_doc(doc)
        if _servable(doc) and "length" in doc:  # a finished resumable upload, not a POST /upload
            return UploadRecord.from_doc(doc)
        return None

    def advance(self, upload_id: str, segments: int, offset: int, stored_size: int) -> bool:
        """Record segments stored; False if the upload is no longer there (deleted meanwhile)."""
        with _mapped_errors():
            result = self.records.update_one(
                {"_id": upload_id, "status": RESUMABLE},
                {"$set": {"segments": segments, "offset": offset, "stored_size": stored_size}},
            )
        return result.matched_count == 1

    def expired(self, now: datetime) -> list[str]:
        """Ids of unfinished uploads past their expiry."""
        with _mapped_errors():
            cursor = self.records.find(
                {"status": RESUMABLE, "expires_at": {"$lt": now}}, {"_id": 1}
            )
            return [doc["_id"] for doc in cursor]

    # -- the one-request-at-a-time lock ----------------------------------------------------------

    def lock(self, upload_id: str, token: str, now: datetime, stale_before: datetime) -> bool:
        """Take the upload's lock for ``token``; False while another live request holds it."""
        doc = {"_id": upload_id, "file": upload_id, "token": token, "at": now}
        with _mapped_errors():
            for _ in range(2):
                try:
                    self.locks.insert_one(doc)
                    return True
                except DuplicateKeyError:
                    held = self.locks.find_one({"_id": upload_id})
                    if held is not None and held["at"] >= stale_before:
                        return False
                    if held is not None:  # its request died: free the lock, then race for it
                        self.locks.delete_one({"_id": upload_id, "token": held["token"]})
        return False

    def renew(self, upload_id: str, token: str, now: datetime) -> bool:
        """Keep the lock alive; False if it was taken over (this request then must stop)."""
        with _mapped_errors():
            result = self.locks.update_one(
                {"_id": upload_id, "token": token}, {"$set": {"at": now}}
            )
        return result.matched_count == 1

    def unlock(self, upload_id: str, token: str) -> None:
        with _mapped_errors():
            self.locks.delete_one({"_id": upload_id, "token": token})
