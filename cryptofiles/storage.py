"""Storage: everything the service keeps, in MongoDB, through pymongo.

Collections:
- ``users``: ``_id`` (ObjectId), ``public_id`` (UUIDv4 text, the JWT subject), ``name`` (unique),
  ``name_key`` (the name in lower case, unique: names differing only in case are one name),
  ``password_hash``, ``created_at``, ``deleting`` (true once the account's deletion has begun).
- ``revoked_tokens``: ``_id`` = the token's ``jti``, ``expires_at``. A TTL index lets MongoDB drop a
  row once the token would have expired anyway. FerretDB 1.x has no TTL indexes: there we keep a plain
  index and purge expired rows ourselves whenever a token is revoked.
- ``files``: one record per file: ``_id`` (UUIDv4 text, the public file id), ``owner`` (user public
  id), ``name``, ``content_type``, ``size`` (plaintext), ``stored_size`` (ciphertext), ``wrapped_key``,
  ``kek_id``, ``status`` (``pending`` while uploading, ``complete`` once stored, ``deleting`` once
  shredded), ``created_at``, ``heartbeat_at`` (refreshed while an upload runs). A record without
  ``wrapped_key`` is shredded whatever its status says, and never served.
- GridFS bucket ``ciphertext`` (``ciphertext.files``, ``ciphertext.chunks``): the encrypted bytes, in
  1 MiB chunks, under the same id as the record.

Write order, because GridFS cannot join a transaction (and FerretDB has none): the record first
(pending), then the chunks, then the record is marked complete. Removal goes the other way: chunks
first, the record last. So chunks never exist without a record that names them, only complete
records are served, and a sweep of stale pending records finishes any removal a crash interrupted.
Deleting an account marks the user first, then removes every record of the owner; an upload that
completes re-checks its owner afterwards (see ``FileService._check_owner``); the sweep removes the files
of owners that no longer exist.

Only this module imports pymongo. It raises its own small exception family, which the app maps to HTTP
answers in one place.
"""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any, TypeGuard

import pymongo
from bson.binary import Binary
from pymongo import ReturnDocument
from pymongo.errors import ConnectionFailure, DuplicateKeyError, OperationFailure, PyMongoError


class StorageError(Exception):
    """Base of this module's errors."""


class DatabaseUnavailable(StorageError):
    """The database could not be reached or failed; the request may be retried later."""


# Chunks per server reply when reading a file: bounded memory, few round trips.
CHUNK_BATCH = 4

NOT_IMPLEMENTED = 238
OUT_OF_DISK_SPACE = 14031  # MongoDB's error code for an unsupported feature


class NameTaken(StorageError):
    """A user with this name already exists."""


class StorageFull(StorageError):
    """The database has run out of disk space."""


class UploadLost(StorageError):
    """An upload's pending record was swept before the upload completed."""


class CorruptFile(StorageError):
    """A stored file's chunks are missing or of the wrong size."""


def name_key(name: str) -> str:
    """What makes two user names the same name: letter case does not count (names are ASCII)."""
    return name.lower()


@dataclasses.dataclass(frozen=True)
class User:
    public_id: str
    name: str
    password_hash: str = dataclasses.field(repr=False)
    created_at: datetime
    # Bumped when the password changes: tokens carry the generation they were issued in.
    token_generation: int = 0

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> User:
        return cls(
            doc["public_id"],
            doc["name"],
            doc["password_hash"],
            doc["created_at"],
            doc.get("token_generation", 0),
        )


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
        )


# Database connections per app (per gunicorn worker): the most operations it runs at once.
POOL_SIZE = 16


class Storage:
    """The service's database. One instance per app; pymongo's client is thread-safe and pooled."""

    def __init__(
        self,
        uri: str,
        db_name: str,
        *,
        timeout_ms: int = 5000,
        chunk_size: int = 1 << 20,
        write_concern: str | int = "majority",
    ) -> None:
        # Short timeouts: when the database is gone a request should fail fast with 503, not hang a
        # worker thread for pymongo's 30 s default.
        self.client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
            uri,
            serverSelectionTimeoutMS=timeout_ms,
            connectTimeoutMS=timeout_ms,
            # A server that stops answering (paused, hung) on an open connection is only noticed
            # by the monitor's heartbeat, which then fails the waiting operations. pymongo's 10 s
            # default would hold every worker thread that long; check as often as we time out.
            heartbeatFrequencyMS=max(500, timeout_ms),
            # An acknowledged upload must survive a primary's crash: majority and journaled, where
            # the server honours it (a replica set; FerretDB accepts and ignores write concern).
            w=write_concern,
            journal=True,
            tz_aware=True,
            appname="crypto-files-server",
            # gevent workers run any number of requests at once; the database should not see them
            # all at once (FerretDB on SQLite answered hundreds of simultaneous writes with lock
            # errors). Requests beyond the pool wait in pymongo's queue, as they waited for a
            # worker thread before.
            maxPoolSize=POOL_SIZE,
        )
        self.db = self.client[db_name]
        self.users = self.db["users"]
        self.revoked_tokens = self.db["revoked_tokens"]
        self.ttl_supported = True  # until the server says otherwise
        self.rate_counters = self.db["rate_counters"]
        self.files = self.db["files"]
        self.chunk_size = chunk_size
        self.chunks = self.db["ciphertext.chunks"]
        self.gridfs_files = self.db["ciphertext.files"]

    def close(self) -> None:
        self.client.close()

    def ensure_indexes(self) -> None:
        """Create the indexes the rules depend on. Idempotent: safe at every start-up."""
        with _mapped_errors():
            self.users.create_index("name", unique=True, name="unique_name")
            self.users.create_index("public_id", unique=True, name="unique_public_id")
            self._backfill_name_keys()
            self.users.create_index("name_key", unique=True, name="unique_name_key")
            try:
                self.revoked_tokens.create_index(
                    "expires_at", expireAfterSeconds=0, name="expire_revoked_tokens"
                )
                self.rate_counters.create_index(
                    "expire_at", expireAfterSeconds=0, name="expire_rate_counters"
                )
            except OperationFailure as exc:
                if exc.code != NOT_IMPLEMENTED:
                    raise
                # FerretDB: no TTL. Revocations are purged on revoke, ended windows on their next hit.
                self.ttl_supported = False
                self.revoked_tokens.create_index("expires_at", name="revoked_tokens_expiry")
            self.files.create_index([("owner", 1), ("created_at", -1)], name="files_by_owner")
            self.files.create_index([("status", 1), ("heartbeat_at", 1)], name="files_by_status")
            # GridFS's own index; pymongo creates it on first write, we create it up front.
            self.chunks.create_index(
                [("files_id", 1), ("n", 1)], unique=True, name="files_id_1_n_1"
            )

    def _backfill_name_keys(self) -> None:
        """Give users made before ``name_key`` theirs. Idempotent; a scan only while some lack it.

        Names that already differ only in case (made before the rule) keep their accounts: one
        takes the folded name, the others ``<folded>#<id>``, which no name folds to ('#' is not a
        name character), so that every further variant stays refused.
        """
        missing = list(self.users.find({"name_key": {"$exists": False}}, {"name": 1}))
        if not missing:
            return
        taken = {d["name_key"] for d in self.users.find({"name_key": {"$exists": True}})}
        for doc in missing:
            folded = name_key(doc["name"])
            for key in (folded, f"{folded}#{doc['_id']}"):
                if key in taken:
                    continue
                try:
                    self.users.update_one(
                        {"_id": doc["_id"], "name_key": {"$exists": False}},
                        {"$set": {"name_key": key}},
                    )
                except DuplicateKeyError:  # the index exists and a registration took it meanwhile
                    continue
                taken.add(key)
                break

    def ping(self) -> None:
        with _mapped_errors():
            self.client.admin.command("ping")

    # -- users ---------------------------------------------------------------------------------

    def create_user(self, name: str, password_hash: str, now: datetime) -> User:
        public_id = str(uuid.uuid4())
        doc = {
            # The public id is the _id too: FerretDB's SQLite backend looks documents up directly
            # only by _id (any other filter reads the whole collection), and every request with a
            # token looks its user up by this id.
            "_id": public_id,
            "public_id": public_id,
            "name": name,
            # Unique, so that "ADMIN" cannot be registered beside "admin" (a lookalike), even by
            # two registrations at once; the database decides, as for the exact name.
            "name_key": name_key(name),
            "password_hash": password_hash,
            "created_at": now,
        }
        with _mapped_errors():
            try:
                self.users.insert_one(doc)
            except DuplicateKeyError:
                raise NameTaken(name) from None
        return User.from_doc(doc)

    def user_by_name(self, name: str) -> User | None:
        with _mapped_errors():
            doc = self.users.find_one({"name": name})
        return User.from_doc(doc) if doc else None

    def user_by_public_id(self, public_id: str) -> User | None:
        with _mapped_errors():
            doc = self.users.find_one({"_id": public_id})
        return User.from_doc(doc) if doc else None

    def mark_user_deleting(self, public_id: str) -> None:
        """The first step of deleting an account: uploads completing from now on undo themselves."""
        with _mapped_errors():
            self.users.update_one({"_id": public_id}, {"$set": {"deleting": True}})

    def may_own_files(self, public_id: str) -> bool:
        """Whether the user exists and is not being deleted (what a completed upload re-checks)."""
        with _mapped_errors():
            doc = self.users.find_one({"_id": public_id}, {"deleting": 1})
        return doc is not None and not doc.get("deleting", False)

    def password_hash_methods(self) -> set[str]:
        """The methods of the stored password hashes ("scrypt:16384:8:1"): a full scan, for start-up."""
        with _mapped_errors():
            cursor = self.users.find({}, {"password_hash": 1}, batch_size=1000)
            return {doc["password_hash"].split("$", 1)[0] for doc in cursor}

    def set_password_hash(self, public_id: str, verified_hash: str, password_hash: str) -> bool:
        """Replace the hash of the same password (a cost upgrade): tokens stay valid.

        Only if the stored hash is still ``verified_hash`` (compare-and-set): a password change
        that landed since the login verified the old one must not be overwritten by it.
        """
        with _mapped_errors():
            result = self.users.update_one(
                {"_id": public_id, "password_hash": verified_hash},
                {"$set": {"password_hash": password_hash}},
            )
        return result.modified_count == 1

    # -- files ---------------------------------------------------------------------------------

    def insert_pending_file(self, record: FileRecord, now: datetime) -> None:
        doc = dataclasses.asdict(record)
        doc["_id"] = doc.pop("id")
        doc["wrapped_key"] = Binary(record.wrapped_key)
        doc.update(status="pending", heartbeat_at=now)
        with _mapped_errors():
            self.files.insert_one(doc)

    def touch_pending_file(self, file_id: str, now: datetime) -> None:
        """Tell sweepers in every instance that this upload is still alive."""
        with _mapped_errors():
            self.files.update_one({"_id": file_id}, {"$set": {"heartbeat_at": now}})

    @contextlib.contextmanager
    def chunk_writer(self, file_id: str, now: datetime) -> Iterator[Callable[[bytes], None]]:
        """Write a GridFS file chunk by chunk; if the block fails, its chunks are removed.

        We write the GridFS layout (``ciphertext.chunks`` documents, then the ``ciphertext.files``
        entry) ourselves rather than through pymongo's GridIn, which holds up to 48 MB of chunks
        before its first insert: per concurrent upload, that is memory we promised not to use.
        Each chunk goes to the database as soon as it is written. (Batching four per insert was
        measured at about +30 % upload speed on FerretDB, for 4 MiB more per upload; we keep
        chunk-by-chunk writes, the design's promise of one segment in memory per upload.)
        """
        state = {"n": 0, "length": 0, "short": False}

        def write(data: bytes) -> None:
            if state["short"] or len(data) > self.chunk_size:
                # Only the last chunk may be short: anything else breaks the chunk = segment rule.
                raise ValueError("GridFS chunks must be full except the last")
            self.chunks.insert_one({"files_id": file_id, "n": state["n"], "data": Binary(data)})
            state["n"] += 1
            state["length"] += len(data)
            state["short"] = len(data) < self.chunk_size

        try:
            with _mapped_errors():
                yield write
                self.gridfs_files.insert_one(
                    {"_id": file_id, "length": state["length"], "chunkSize": self.chunk_size,
                     "uploadDate": now, "filename": file_id}
                )  # fmt: skip
        except BaseException:
            with contextlib.suppress(PyMongoError):
                self.chunks.delete_many({"files_id": file_id})
            raise

    def complete_file(self, file_id: str, size: int, stored_size: int) -> None:
        with _mapped_errors():
            # By _id alone (see create_user): other filters make FerretDB read the whole
            # collection. Meanwhile a sweep may have deleted the record (then nothing matches), or
            # an account deletion shredded it: marked complete, it still has no key and is never
            # served (see _servable), and the upload's owner check then removes it.
            result = self.files.update_one(
                {"_id": file_id},
                {"$set": {"status": "complete", "size": size, "stored_size": stored_size},
                 "$unset": {"heartbeat_at": ""}},
            )  # fmt: skip
        if result.matched_count != 1:
            # A sweeper took this upload for a dead one (it stalled past STALE_UPLOAD): its record
            # is gone, so it must not be reported as stored.
            raise UploadLost(f"{file_id}: the pending record disappeared before completion")

    def discard_file(self, file_id: str) -> None:
        """Remove a file's chunks, its GridFS entry, and last its record. Idempotent."""
        with _mapped_errors():
            self.chunks.delete_many({"files_id": file_id})
            self.gridfs_files.delete_one({"_id": file_id})
            self.files.delete_one({"_id": file_id})

    def complete_file_by_id(self, file_id: str) -> FileRecord | None:
        """The record of a completely stored file; pending or missing files are None alike."""
        with _mapped_errors():
            doc = self.files.find_one({"_id": file_id})  # by _id alone: see create_user
        return FileRecord.from_doc(doc) if _servable(doc) else None

    def read_chunks(self, file_id: str, length: int, first: int, last: int) -> Iterator[bytes]:
        """Chunks ``first``..``last`` (inclusive) of a stored file of ``length`` bytes, in order.

        Every chunk is checked for its number and its size, so a damaged file is never sent
        whole. We read ``ciphertext.chunks`` directly rather than through GridOut: this serves byte
        ranges from only the chunks they touch, and the small batch size keeps every server reply
        (and our memory) to a few chunks. Without it FerretDB answers a whole file in one reply.
        """
        expected = first
        with _mapped_errors():
            cursor = self.chunks.find(
                {"files_id": file_id, "n": {"$gte": first, "$lte": last}},
                sort=[("n", 1)],
                batch_size=CHUNK_BATCH,
            )
            with cursor:
                for chunk in cursor:
                    size = min(self.chunk_size, length - expected * self.chunk_size)
                    if chunk["n"] != expected or len(chunk["data"]) != size:
                        raise CorruptFile(f"{file_id}: chunk {expected} is missing or damaged")
                    expected += 1
                    yield chunk["data"]
        if expected != last + 1:
            raise CorruptFile(f"{file_id}: chunk {expected} is missing")

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
            cursor = self.files.find(query, sort=[("created_at", -1), ("_id", -1)], limit=limit)
            return [FileRecord.from_doc(doc) for doc in cursor]

    def files_of(self, owner: str) -> list[tuple[str, str]]:
        """``(id, status)`` of every record of ``owner``, whatever its status (pending included)."""
        with _mapped_errors():
            cursor = self.files.find({"owner": owner}, {"status": 1})
            return [(doc["_id"], doc.get("status", "")) for doc in cursor]

    def ownerless_files(self) -> list[str]:
        """Ids of the records whose owner has no user document (left by an interrupted account
        deletion, or by an upload that completed as it ran and then crashed before undoing)."""
        with _mapped_errors():
            owners = set(self.files.distinct("owner"))
            if not owners:
                return []
            known = {
                doc["_id"] for doc in self.users.find({"_id": {"$in": list(owners)}}, {"_id": 1})
            }
            gone = list(owners - known)
            if not gone:
                return []
            return [doc["_id"] for doc in self.files.find({"owner": {"$in": gone}}, {"_id": 1})]

    def bytes_used(self, owner: str) -> int:
        """Plaintext bytes of the owner's complete files (what the quota counts)."""
        with _mapped_errors():
            docs = self.files.find({"owner": owner, **SERVABLE}, {"size": 1})
            return sum(int(doc.get("size", 0)) for doc in docs)

    def shred_file(self, file_id: str, now: datetime) -> None:
        """Make a file unservable and unreadable at once: drop its wrapped key, mark it deleting."""
        with _mapped_errors():
            self.files.update_one(
                {"_id": file_id},
                {
                    "$set": {"status": "deleting", "heartbeat_at": now},
                    "$unset": {"wrapped_key": ""},
                },
            )

    def unfinished_files(self, heartbeat_before: datetime) -> list[str]:
        """Ids of uploads whose heartbeat stopped before then, and of interrupted deletions."""
        with _mapped_errors():
            cursor = self.files.find(
                {"$or": [
                    {"status": "pending", "heartbeat_at": {"$lt": heartbeat_before}},
                    {"status": "deleting"},
                    # Shredded, then marked complete by an upload finishing meanwhile (see
                    # complete_file); its account deletion or the upload itself removes it, unless
                    # a crash stopped both.
                    {"status": "complete", "wrapped_key": {"$exists": False}},
                ]},
                {"_id": 1},
            )  # fmt: skip
            return [doc["_id"] for doc in cursor]

    def wrapped_keys_not_under(self, kek_id: str) -> Iterator[tuple[str, str, str, bytes]]:
        """``(file id, owner, kek id, wrapped key)`` of every file key not wrapped under ``kek_id``."""
        query = {"kek_id": {"$ne": kek_id}, "wrapped_key": {"$exists": True}}
        projection = {"owner": 1, "kek_id": 1, "wrapped_key": 1}
        with _mapped_errors():
            for doc in self.files.find(query, projection, batch_size=500):
                yield doc["_id"], doc["owner"], doc["kek_id"], bytes(doc["wrapped_key"])

    def replace_wrapped_key(
        self, file_id: str, old: tuple[str, bytes], new: tuple[str, bytes]
    ) -> bool:
        """Swap one wrapping for another, only if the record still holds ``old`` (compare-and-set)."""
        with _mapped_errors():
            result = self.files.update_one(
                {"_id": file_id, "kek_id": old[0], "wrapped_key": Binary(old[1])},
                {"$set": {"kek_id": new[0], "wrapped_key": Binary(new[1])}},
            )
        return result.modified_count == 1

    def orphan_chunk_owners(self) -> list[str]:
        """GridFS ids with chunks or an entry but no file record (only hand edits make these)."""
        with _mapped_errors():
            stored = set(self.chunks.distinct("files_id")) | set(self.gridfs_files.distinct("_id"))
            if not stored:
                return []
            known = {
                doc["_id"] for doc in self.files.find({"_id": {"$in": list(stored)}}, {"_id": 1})
            }
        return sorted(str(i) for i in stored - known)

    def change_password(self, public_id: str, password_hash: str) -> None:
        """Store a new password hash and invalidate every token issued before it."""
        with _mapped_errors():
            self.users.update_one(
                {"_id": public_id},
                {"$set": {"password_hash": password_hash}, "$inc": {"token_generation": 1}},
            )

    def delete_user(self, public_id: str) -> None:
        with _mapped_errors():
            self.users.delete_one({"_id": public_id})

    # -- rate-limit counters (see ratelimit.py) -------------------------------------------------

    def counter_incr(self, key: str, expiry_seconds: int, amount: int, now: datetime) -> int:
        """Add ``amount`` to a fixed-window counter, starting a new window if the last one ended.

        Plain update operators, and filters on ``_id`` in the common case (a live window: one
        write), since that is the only lookup FerretDB does without reading the whole collection.
        Racing requests that both open a window: the loser retries and counts in the winner's.
        """
        window = {"count": amount, "expire_at": now + timedelta(seconds=expiry_seconds)}
        with _mapped_errors():
            for _ in range(3):
                doc = self.rate_counters.find_one_and_update(
                    {"_id": key}, {"$inc": {"count": amount}}, return_document=ReturnDocument.AFTER
                )
                if doc is None:
                    try:
                        self.rate_counters.insert_one({"_id": key, **window})
                        return amount
                    except DuplicateKeyError:
                        continue
                if doc["expire_at"] > now:
                    return int(doc["count"])
                # The window had ended: replace it, unless another request already did.
                replaced = self.rate_counters.replace_one(
                    {"_id": key, "expire_at": doc["expire_at"]}, window
                )
                if replaced.modified_count == 1:
                    return amount
        raise DatabaseUnavailable("rate counter contention")

    def counter_give_back(self, key: str, now: datetime) -> None:
        """Take one back from a live window (a request that did not use what it counted)."""
        with _mapped_errors():
            self.rate_counters.update_one(
                {"_id": key, "expire_at": {"$gt": now}, "count": {"$gt": 0}},
                {"$inc": {"count": -1}},
            )

    def counter_get(self, key: str, now: datetime) -> tuple[int, datetime | None]:
        """``(count, window end)`` of a live window, ``(0, None)`` when there is none."""
        with _mapped_errors():
            doc = self.rate_counters.find_one({"_id": key})
        live = doc is not None and doc["expire_at"] > now
        return (int(doc["count"]), doc["expire_at"]) if doc and live else (0, None)

    def counter_clear(self, key: str | None = None) -> int:
        with _mapped_errors():
            result = self.rate_counters.delete_many({} if key is None else {"_id": key})
        return result.deleted_count

    # -- revoked tokens ------------------------------------------------------------------------

    def revoke_token(self, jti: str, expires_at: datetime, now: datetime) -> None:
        with _mapped_errors():
            if not self.ttl_supported:
                self.revoked_tokens.delete_many({"expires_at": {"$lt": now}})
            # Upsert: revoking twice (a retried logout) is not an error.
            self.revoked_tokens.update_one(
                {"_id": jti}, {"$set": {"expires_at": expires_at}}, upsert=True
            )

    def is_token_revoked(self, jti: str) -> bool:
        with _mapped_errors():
            return self.revoked_tokens.find_one({"_id": jti}, projection={"_id": 1}) is not None


# What a servable record looks like: complete, and not shredded (an upload completing after its
# record was shredded sets the status back to complete, but cannot bring the key back).
SERVABLE: dict[str, Any] = {"status": "complete", "wrapped_key": {"$exists": True}}


def _servable(doc: dict[str, Any] | None) -> TypeGuard[dict[str, Any]]:
    return doc is not None and doc.get("status") == "complete" and "wrapped_key" in doc


@contextlib.contextmanager
def _mapped_errors() -> Iterator[None]:
    """Turn pymongo failures into our own errors; callers catch DuplicateKeyError themselves."""
    try:
        yield
    except DuplicateKeyError:
        raise
    except (ConnectionFailure, TimeoutError) as exc:
        # Network errors and timeouts: the database is away; a retry later may succeed.
        raise DatabaseUnavailable(type(exc).__name__) from exc
    except OperationFailure as exc:
        if exc.code == OUT_OF_DISK_SPACE or "disk is full" in str(exc):  # MongoDB; FerretDB/SQLite
            raise StorageFull(type(exc).__name__) from exc
        raise StorageError(type(exc).__name__) from exc
    except PyMongoError as exc:
        # The exception's type name is enough for the log; its text may quote the query.
        raise StorageError(type(exc).__name__) from exc
