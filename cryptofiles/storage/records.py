"""The ``files`` collection: one record per file, which names its chunks and holds its wrapped key.

``files``: ``_id`` (UUIDv4 text, the public file id), ``owner`` (user public id), ``name``,
``content_type``, ``size`` (plaintext), ``stored_size`` (ciphertext), ``wrapped_key``, ``kek_id``,
``status`` (``pending`` while uploading, ``complete`` once stored, ``deleting`` once shredded),
``created_at``, ``heartbeat_at`` (refreshed while an upload runs). A record without ``wrapped_key``
is shredded whatever its status says, and never served.

The record is written first (pending) and removed last (``discard``, after the chunks), so that the
sweep (``unfinished``, ``ownerless``) finds every file a crash left half-written or half-removed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import datetime
from typing import Any, TypeGuard

from bson.binary import Binary
from pymongo import ReturnDocument
from pymongo.collection import Collection
from pymongo.database import Database

from cryptofiles.storage.chunks import Chunks
from cryptofiles.storage.errors import UploadLost, _mapped_errors

# What a servable record looks like: complete, and not shredded (an upload completing after its
# record was shredded sets the status back to complete, but cannot bring the key back).
SERVABLE: dict[str, Any] = {"status": "complete", "wrapped_key": {"$exists": True}}


@dataclasses.dataclass(frozen=True)
class FileRecord:
    id: str
    owner: str
    name: str | None
    content_type: str | None
    wrapped_key: bytes = dataclasses.field(repr=False)
    kek_id: str
    created_at: datetime
    size: int = 0
    stored_size: int = 0
    # The ciphertext's header (also the start of chunk 0), kept so that a plaintext range need
    # not read chunk 0: an engine that narrows {files_id, n: 0} by files_id alone reads the
    # whole file for it. None for files stored before it was kept.
    header: bytes | None = dataclasses.field(default=None, repr=False)

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> FileRecord:
        return cls(
            id=doc["_id"],
            owner=doc["owner"],
            name=doc.get("name"),
            content_type=doc.get("content_type"),
            wrapped_key=bytes(doc["wrapped_key"]),
            kek_id=doc["kek_id"],
            created_at=doc["created_at"],
            size=doc.get("size", 0),
            stored_size=doc.get("stored_size", 0),
            header=bytes(doc["header"]) if doc.get("header") is not None else None,
        )


class FileRecords:
    """The file records: ``storage.files``."""

    def __init__(
        self,
        db: Database[dict[str, Any]],
        chunks: Chunks,
        users: Collection[dict[str, Any]],
        dependents: tuple[Collection[dict[str, Any]], ...] = (),
    ) -> None:
        self.collection = db["files"]
        self._chunks = chunks  # removed before the record that names them
        self._users = users  # read only, to find records whose owner is gone
        # Rows about a file by its ``file`` field (grants, events): removed with it, before it.
        self._dependents = dependents

    def ensure_indexes(self) -> None:
        with _mapped_errors():
            self.collection.create_index([("owner", 1), ("created_at", -1)], name="files_by_owner")
            self.collection.create_index(
                [("status", 1), ("heartbeat_at", 1)], name="files_by_status"
            )

    # -- an upload's record: pending, then complete ------------------------------------------------

    def insert_pending(self, record: FileRecord, now: datetime) -> None:
        doc = dataclasses.asdict(record)
        doc["_id"] = doc.pop("id")
        doc["wrapped_key"] = Binary(record.wrapped_key)
        doc.pop("header")  # known once the first segment is written: set at completion
        doc.update(status="pending", heartbeat_at=now)
        with _mapped_errors():
            self.collection.insert_one(doc)

    def touch_pending(self, file_id: str, now: datetime) -> None:
        """Tell sweepers in every instance that this upload is still alive."""
        with _mapped_errors():
            self.collection.update_one({"_id": file_id}, {"$set": {"heartbeat_at": now}})

    def complete(self, file_id: str, size: int, stored_size: int, header: bytes) -> bool:
        """Mark an upload's record complete; whether it is servable now (it counts in the quota).

        One round trip: the update answers the record as it left it.
        """
        with _mapped_errors():
            # By _id alone (see Users.create): other filters make FerretDB read the whole
            # collection. Meanwhile a sweep may have deleted the record (then nothing matches), or
            # an account deletion shredded it: marked complete, it still has no key and is never
            # served (see _servable), and the upload's owner check then removes it.
            doc = self.collection.find_one_and_update(
                {"_id": file_id},
                {"$set": {"status": "complete", "size": size, "stored_size": stored_size,
                          "header": Binary(header)},
                 "$unset": {"heartbeat_at": ""}},
                # No projection: FerretDB 1.24 refuses one on findAndModify (records are small).
                return_document=ReturnDocument.AFTER,
            )  # fmt: skip
        if doc is None:
            # A sweeper took this upload for a dead one (it stalled past STALE_UPLOAD): its record
            # is gone, so it must not be reported as stored.
            raise UploadLost(f"{file_id}: the pending record disappeared before completion")
        return _servable(doc)

    def discard(self, file_id: str) -> None:
        """Remove a file's GridFS entry, its chunks, its grants and events, and last its record.
        Idempotent; a crash before the last step leaves the record for the sweep to finish."""
        with _mapped_errors():
            self._chunks.remove(file_id)
            for dependent in self._dependents:
                dependent.delete_many({"file": file_id})
            self.collection.delete_one({"_id": file_id})

    # -- reading -----------------------------------------------------------------------------------

    def complete_by_id(self, file_id: str) -> FileRecord | None:
        """The record of a completely stored file; pending or missing files are None alike."""
        with _mapped_errors():
            doc = self.collection.find_one({"_id": file_id})  # by _id alone: see complete
        return FileRecord.from_doc(doc) if _servable(doc) else None

    def list_files(
        self, owner: str, *, limit: int, after: tuple[datetime, str] | None
    ) -> list[FileRecord]:
        """The owner's complete files, newest first, starting after ``(created_at, id)``."""
        query: dict[str, Any] = {"owner": owner, **SERVABLE}
        if after is not None:
            created_at, file_id = after
            query["$or"] = [
                {"created_at": {"$lt": created_at}},
                {"created_at": created_at, "_id": {"$lt": file_id}},
            ]
        with _mapped_errors():
            cursor = self.collection.find(
                query, sort=[("created_at", -1), ("_id", -1)], limit=limit
            )
            return [FileRecord.from_doc(doc) for doc in cursor]

    def bytes_used(self, owner: str) -> int:
        """Plaintext bytes of the owner's complete files: a scan of them, for the sweep's repair
        (the quota reads the running total, ``storage.usage``)."""
        with _mapped_errors():
            docs = self.collection.find({"owner": owner, **SERVABLE}, {"size": 1})
            return sum(int(doc.get("size", 0)) for doc in docs)

    # -- removal and the sweep ---------------------------------------------------------------------

    def shred(self, file_id: str, now: datetime) -> tuple[str, int] | None:
        """Make a file unservable and unreadable at once: drop its wrapped key, mark it deleting.

        ``(owner, size)`` if the file was servable until now (its size leaves the owner's quota),
        else None: the update answers the record as it found it, in the same round trip.
        """
        with _mapped_errors():
            doc = self.collection.find_one_and_update(
                {"_id": file_id},
                {
                    "$set": {"status": "deleting", "heartbeat_at": now},
                    "$unset": {"wrapped_key": ""},
                },
                return_document=ReturnDocument.BEFORE,  # no projection: see complete
            )
        return (doc["owner"], int(doc.get("size", 0))) if _servable(doc) else None

    def sizes_by_owner(self) -> dict[str, int]:
        """Plaintext bytes of every owner's complete files (a full scan: for the sweep's repair)."""
        totals: dict[str, int] = {}
        with _mapped_errors():
            for doc in self.collection.find(SERVABLE, {"owner": 1, "size": 1}, batch_size=1000):
                totals[doc["owner"]] = totals.get(doc["owner"], 0) + int(doc.get("size", 0))
        return totals

    def owned_by(self, owner: str) -> list[tuple[str, str]]:
        """``(id, status)`` of every record of ``owner``, whatever its status (pending included)."""
        with _mapped_errors():
            cursor = self.collection.find({"owner": owner}, {"status": 1})
            return [(doc["_id"], doc.get("status", "")) for doc in cursor]

    def ownerless(self) -> list[str]:
        """Ids of the records whose owner has no user document (left by an interrupted account
        deletion, or by an upload that completed as it ran and then crashed before undoing)."""
        with _mapped_errors():
            owners = set(self.collection.distinct("owner"))
            if not owners:
                return []
            known = {
                doc["_id"] for doc in self._users.find({"_id": {"$in": list(owners)}}, {"_id": 1})
            }
            gone = list(owners - known)
            if not gone:
                return []
            cursor = self.collection.find({"owner": {"$in": gone}}, {"_id": 1})
            return [doc["_id"] for doc in cursor]

    def unfinished(self, heartbeat_before: datetime) -> list[str]:
        """Ids of uploads whose heartbeat stopped before then, and of interrupted deletions."""
        with _mapped_errors():
            cursor = self.collection.find(
                {"$or": [
                    {"status": "pending", "heartbeat_at": {"$lt": heartbeat_before}},
                    {"status": "deleting"},
                    # Shredded, then marked complete by an upload finishing meanwhile (see
                    # complete); its account deletion or the upload itself removes it, unless
                    # a crash stopped both.
                    {"status": "complete", "wrapped_key": {"$exists": False}},
                ]},
                {"_id": 1},
            )  # fmt: skip
            return [doc["_id"] for doc in cursor]

    # -- key rotation ------------------------------------------------------------------------------

    def wrapped_keys_not_under(self, kek_id: str) -> Iterator[tuple[str, str, str, bytes]]:
        """``(file id, owner, kek id, wrapped key)`` of every file key not wrapped under ``kek_id``."""
        query = {"kek_id": {"$ne": kek_id}, "wrapped_key": {"$exists": True}}
        projection = {"owner": 1, "kek_id": 1, "wrapped_key": 1}
        with _mapped_errors():
            for doc in self.collection.find(query, projection, batch_size=500):
                yield doc["_id"], doc["owner"], doc["kek_id"], bytes(doc["wrapped_key"])

    def replace_wrapped_key(
        self, file_id: str, old: tuple[str, bytes], new: tuple[str, bytes]
    ) -> bool:
        """Swap one wrapping for another, only if the record still holds ``old`` (compare-and-set)."""
        with _mapped_errors():
            result = self.collection.update_one(
                {"_id": file_id, "kek_id": old[0], "wrapped_key": Binary(old[1])},
                {"$set": {"kek_id": new[0], "wrapped_key": Binary(new[1])}},
            )
        return result.modified_count == 1


def _servable(doc: dict[str, Any] | None) -> TypeGuard[dict[str, Any]]:
    return doc is not None and doc.get("status") == "complete" and "wrapped_key" in doc
