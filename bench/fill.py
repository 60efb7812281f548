"""Filling the store fast: users and their files written straight into the collections, in the
layout the storage writes (``cryptofiles/storage/users.py``, ``records.py``, ``chunks.py``): a
``users`` document, then per file a complete ``files`` record, its 1 MiB ``ciphertext.chunks`` and
its ``ciphertext.files`` entry under the same id.

Why not through the API: 2 GiB and 100,000 files uploaded over HTTP would take most of an hour on
FerretDB, and what the scale rows ask is how OUR requests cost as the collections grow, not how the
fill was written. What the app reads to serve a request is the same either way: the same
collections, the same document shapes, the same indexes (the server created them at start-up).
The files are never read back (their bytes are random, their keys are not keys); the users
cannot log in (their password hash is not a hash).
"""

from __future__ import annotations

import dataclasses
import os
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bson.binary import Binary

from bench.common import MiB, log

CHUNK = MiB  # the app's chunk size (Settings: one ciphertext segment per chunk)
BIG_FILE = 16 * MiB  # the other users' large files: the chunk fill is made of these
SMALL_FILE = 1024  # the record fill's files: one short chunk each
RECORDS_PER_USER = 100
BATCH = 500  # documents per insert_many (small ones)
CHUNK_BATCH = 8  # 1 MiB chunks per insert_many: 8 MiB messages, far below the 48 MB limit


@dataclasses.dataclass
class Filled:
    """What the fill has written so far (other users' data only)."""

    chunk_bytes: int = 0  # bytes in ciphertext.chunks
    records: int = 0  # file records
    users: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "chunk_mib": round(self.chunk_bytes / MiB, 1),
            "file_records": self.records,
            "users": self.users,
            "fill_seconds": round(self.seconds, 1),
        }


class Filler:
    """Writes other users' files into the database ``db`` until the wanted sizes are reached."""

    def __init__(self, db: Any, data: Path) -> None:
        self.db = db
        with open(data, "rb") as f:  # random bytes: nothing for any engine to compress
            self.pool = f.read(16 * MiB)
        self.filled = Filled()
        self._label = f"fill{os.getpid()}"

    def new_user(self) -> str:
        public_id = str(uuid.uuid4())
        name = f"{self._label}-{self.filled.users}"
        self.db["users"].insert_one({
            "_id": public_id, "public_id": public_id, "name": name, "name_key": name.lower(),
            "password_hash": "!", "created_at": datetime.now(UTC),
        })  # fmt: skip
        self.filled.users += 1
        return public_id

    def grow(self, chunk_bytes: int, records: int) -> Filled:
        """Add users and files until the fill holds ``chunk_bytes`` of chunks in large files and
        ``records`` file records (the large files count among them)."""
        start = time.monotonic()
        while (missing := (chunk_bytes - self.filled.chunk_bytes) // CHUNK * CHUNK) > 0:
            self.add_files(self.new_user(), 1, min(BIG_FILE, missing))
        while self.filled.records < records:
            self.add_files(self.new_user(), min(RECORDS_PER_USER, records - self.filled.records),
                           SMALL_FILE)  # fmt: skip
        self.filled.seconds += time.monotonic() - start
        log(f"fill: {self.filled.as_dict()}")
        return self.filled

    def add_files(self, owner: str, count: int, size: int) -> list[str]:
        """``count`` complete files of ``size`` stored bytes for ``owner``; their ids."""
        now = datetime.now(UTC)
        ids = [str(uuid.uuid4()) for _ in range(count)]
        # The storage's order: records, chunks, entries (no chunk without a record naming it).
        records = [self._record(file_id, owner, size, now) for file_id in ids]
        for i in range(0, len(records), BATCH):
            self.db["files"].insert_many(records[i : i + BATCH], ordered=False)
        chunks: list[dict[str, Any]] = []
        for file_id in ids:
            for n, offset in enumerate(range(0, size, CHUNK)):
                chunks.append({"files_id": file_id, "n": n, "data": self._bytes(offset, size)})
                if len(chunks) >= (CHUNK_BATCH if size >= CHUNK else BATCH):
                    self.db["ciphertext.chunks"].insert_many(chunks, ordered=False)
                    chunks = []
        if chunks:
            self.db["ciphertext.chunks"].insert_many(chunks, ordered=False)
        entries = [{"_id": file_id, "length": size, "chunkSize": CHUNK, "uploadDate": now,
                    "filename": file_id} for file_id in ids]  # fmt: skip
        for i in range(0, len(entries), BATCH):
            self.db["ciphertext.files"].insert_many(entries[i : i + BATCH], ordered=False)
        self.filled.records += count
        self.filled.chunk_bytes += count * size
        return ids

    def _record(self, file_id: str, owner: str, size: int, now: datetime) -> dict[str, Any]:
        return {
            "_id": file_id, "owner": owner, "name": f"{self._label}.bin",
            "content_type": "application/octet-stream",
            "size": max(0, size - 40),  # Tink's header and tag: about what a real file has
            "stored_size": size, "wrapped_key": Binary(os.urandom(76)), "kek_id": self._label,
            "created_at": now, "status": "complete",
        }  # fmt: skip

    def _bytes(self, offset: int, size: int) -> Binary:
        length = min(CHUNK, size - offset)
        at = (offset + self.filled.chunk_bytes) % (len(self.pool) - CHUNK)
        return Binary(self.pool[at : at + length])
