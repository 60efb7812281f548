"""The GridFS bucket ``ciphertext``: the encrypted bytes of every file, in 1 MiB chunks.

``ciphertext.chunks`` (``_id`` an ObjectId, ``files_id``, ``n`` Int32, ``data`` Binary subtype 0)
and ``ciphertext.files`` (the GridFS entry: ``_id``, ``length`` Int64, ``chunkSize`` Int32,
``uploadDate`` when the upload completed, ``filename``), under the same id as the file's record,
as the GridFS specification has them, so that any driver's GridFS reader reads our ciphertext.
The chunks are written before the entry; the entry is removed before the chunks (the
specification's order, so a reader that found the entry is the one that may miss chunks, and
says so). Both are written after the record and removed before it (see ``records``), so that no
chunk exists without a record naming it.

Every query that names a file id compares with ``$eq``, as the specification requires.
"""

from __future__ import annotations

import collections
import contextlib
import functools
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import Any

from bson.binary import Binary
from bson.int64 import Int64
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, PyMongoError

from cryptofiles.storage.errors import ChunkConflict, CorruptFile, _mapped_errors

# Chunks per server reply when streaming most of a file: bounded memory, few round trips.
# (Without it FerretDB answers a whole file in one reply.)
CHUNK_BATCH = 4
# Chunks that may arrive before their turn in a stream, held until it comes.
REORDER = 2
# Chunk queries in flight while a chunk is being sent, when a range is read chunk by chunk: the
# next ones are fetched as the current one goes out, and memory stays at a few chunks per read.
PREFETCH = 2

# The indexes the GridFS specification requires (keys, unique).
CHUNKS_INDEX = ([("files_id", 1), ("n", 1)], True)
ENTRIES_INDEX = ([("filename", 1), ("uploadDate", 1)], False)


class Chunks:
    """The ciphertext: ``storage.chunks``."""

    def __init__(
        self,
        db: Database[dict[str, Any]],
        chunk_size: int,
        records: Collection[dict[str, Any]],
    ) -> None:
        if not 0 < chunk_size < 2**31:
            raise ValueError("GridFS stores chunkSize as an Int32")
        self.chunk_size = chunk_size
        self.collection = db["ciphertext.chunks"]
        self.entries = db["ciphertext.files"]
        self._records = records  # read only, to find chunks that no record names

    def ensure_indexes(self) -> None:
        """GridFS's two indexes, before any write (pymongo would create them on its first write)."""
        with _mapped_errors():
            _ensure_index(self.collection, *CHUNKS_INDEX)
            _ensure_index(self.entries, *ENTRIES_INDEX)

    @contextlib.contextmanager
    def writer(
        self, file_id: str, clock: Callable[[], datetime]
    ) -> Iterator[Callable[[bytes], None]]:
        """Write a GridFS file chunk by chunk; if the block fails, its chunks are removed.

        The entry is written when the block ends, with ``uploadDate`` read from ``clock`` then:
        the specification wants the time the upload completed, not when it began.

        We write the GridFS layout (``ciphertext.chunks`` documents, then the ``ciphertext.files``
        entry) ourselves rather than through pymongo's GridIn, which holds up to 48 MB of chunks
        before its first insert: per concurrent upload, that is memory we promised not to use.
        Each chunk goes to the database as soon as it is written. (Batching four per insert was
        measured at about +30 % upload speed on FerretDB, for 4 MiB more per upload; we keep
        chunk-by-chunk writes, the design's promise of one segment in memory per upload.)
        """
        state = {"n": 0, "length": 0, "short": False}

        def write(data: bytes) -> None:
            if not data:
                return  # GridFS files have no empty chunks
            if state["short"] or len(data) > self.chunk_size:
                # Only the last chunk may be short: anything else breaks the chunk = segment rule.
                raise ValueError("GridFS chunks must be full except the last")
            self.collection.insert_one({"files_id": file_id, "n": state["n"], "data": Binary(data)})
            state["n"] += 1
            state["length"] += len(data)
            state["short"] = len(data) < self.chunk_size

        try:
            with _mapped_errors():
                yield write
                self.entries.insert_one(
                    {"_id": file_id, "length": Int64(state["length"]),
                     "chunkSize": self.chunk_size, "uploadDate": clock(), "filename": file_id}
                )  # fmt: skip
        except BaseException:
            with contextlib.suppress(PyMongoError):
                self.collection.delete_many({"files_id": {"$eq": file_id}})
            raise

    def put(self, file_id: str, n: int, data: bytes) -> None:
        """Store chunk ``n`` of a file that is written over several requests (a resumable upload).

        A chunk ``n`` already there is left as it is when it holds the same bytes: a request
        that stored it died before its upload recorded it, and the client sent the same part
        again. Different bytes raise ``ChunkConflict`` and are not stored: that chunk's segment
        was sealed under the same nonce, and the two must never both be at rest.
        """
        if not 0 < len(data) <= self.chunk_size:
            raise ValueError("a GridFS chunk holds 1 to chunkSize bytes")
        with _mapped_errors():
            try:
                self.collection.insert_one({"files_id": file_id, "n": n, "data": Binary(data)})
                return
            except DuplicateKeyError:
                held = self.collection.find_one({"files_id": {"$eq": file_id}, "n": {"$eq": n}})
        if held is None or bytes(held["data"]) != data:
            raise ChunkConflict(f"{file_id}: chunk {n} is stored with other bytes")

    def add_entry(self, file_id: str, length: int, upload_date: datetime) -> None:
        """The GridFS entry of a file whose chunks are all stored (written once; a repeat after a
        crash finds it there)."""
        with _mapped_errors():
            self.entries.replace_one(
                {"_id": file_id},
                {"length": Int64(length), "chunkSize": self.chunk_size,
                 "uploadDate": upload_date, "filename": file_id},
                upsert=True,
            )  # fmt: skip

    def read(self, file_id: str, length: int, first: int, last: int) -> Iterator[bytes]:
        """Chunks ``first``..``last`` (inclusive) of a stored file of ``length`` bytes, in order.

        Every chunk is checked for its number and its size, so a damaged file is never sent
        whole. The query shapes are the ones an indexed engine serves for what is asked, and
        none is sorted: FerretDB sorts in its own memory (it would hold the whole file) and
        pushes only equality down to its backend (a condition on ``n`` other than equality
        reads every chunk of the file). So a read of most of a file streams the file's chunks
        by ``files_id`` alone (``_stream``), and a shorter range fetches each of its chunks by
        ``files_id`` and ``n`` (``_each``): either costs about what is read, not the file.
        """
        if first > last:
            return
        total = -(-length // self.chunk_size)
        span = last - first + 1
        if span == 1:  # a range inside one chunk
            yield self._chunk(file_id, length, first)
        elif 2 * span >= total:
            yield from self._stream(file_id, length, first, last, whole=span == total)
        else:
            yield from self._each(file_id, length, first, last)

    def _stream(
        self, file_id: str, length: int, first: int, last: int, *, whole: bool
    ) -> Iterator[bytes]:
        """One unsorted cursor over the file's chunks, a few per reply. Engines return them in
        the order they were written (index order on MongoDB, insertion order on FerretDB's
        backends) almost always; a chunk that comes early waits in a small buffer, and if
        more than ``REORDER`` do, the rest is fetched chunk by chunk instead."""
        query: dict[str, Any] = {"files_id": {"$eq": file_id}}
        if not whole:  # filtered by FerretDB itself, but at least not sent
            query["n"] = {"$gte": first, "$lte": last}
        early: dict[int, bytes] = {}
        expected = first
        with _mapped_errors():
            cursor = self.collection.find(query, batch_size=CHUNK_BATCH)
        with cursor:
            while expected <= last:
                with _mapped_errors():
                    doc = next(cursor, None)
                if doc is None:
                    break  # the rest is fetched one by one below: a missing chunk is named
                n = doc.get("n")
                if not isinstance(n, int) or not expected <= n <= last or n in early:
                    raise CorruptFile(f"{file_id}: a chunk numbered {n!r} does not belong")
                if n != expected:
                    if len(early) >= REORDER:
                        break
                    early[n] = self._checked(file_id, length, n, doc)
                    continue
                yield self._checked(file_id, length, n, doc)
                expected += 1
                while expected in early:
                    yield early.pop(expected)
                    expected += 1
        for n in range(expected, last + 1):
            yield early.pop(n) if n in early else self._chunk(file_id, length, n)

    def _each(self, file_id: str, length: int, first: int, last: int) -> Iterator[bytes]:
        """Each chunk by equality on ``files_id`` and ``n``, the next ``PREFETCH`` in flight
        while the current one is sent."""
        fetch = functools.partial(self._chunk, file_id, length)
        with ThreadPoolExecutor(PREFETCH, thread_name_prefix="chunks-prefetch") as pool:
            ahead = min(first + PREFETCH, last + 1)
            pending: collections.deque[Future[bytes]] = collections.deque(
                pool.submit(fetch, n) for n in range(first, ahead)
            )
            try:
                for n in range(first, last + 1):
                    data = pending.popleft().result()
                    if n + PREFETCH <= last:
                        pending.append(pool.submit(fetch, n + PREFETCH))
                    yield data
            finally:  # a read abandoned midway (client gone) fetches nothing more
                for future in pending:
                    future.cancel()

    def _chunk(self, file_id: str, length: int, n: int) -> bytes:
        """Chunk ``n`` alone, by equality on both fields: one index lookup everywhere."""
        with _mapped_errors():
            doc = self.collection.find_one({"files_id": {"$eq": file_id}, "n": {"$eq": n}})
        if doc is None:
            raise CorruptFile(f"{file_id}: chunk {n} is missing")
        return self._checked(file_id, length, n, doc)

    def _checked(self, file_id: str, length: int, n: int, doc: dict[str, Any]) -> bytes:
        """The data of chunk ``n``, if it has the size ``length`` gives it."""
        size = min(self.chunk_size, length - n * self.chunk_size)
        if len(doc["data"]) != size:
            raise CorruptFile(f"{file_id}: chunk {n} is damaged")
        data: bytes = doc["data"]
        return data

    def remove(self, file_id: str) -> None:
        """Remove a file's GridFS entry, then its chunks (the specification's order). Idempotent."""
        with _mapped_errors():
            self.entries.delete_one({"_id": {"$eq": file_id}})
            self.collection.delete_many({"files_id": {"$eq": file_id}})

    def orphan_owners(self) -> list[str]:
        """GridFS ids with chunks or an entry but no file record (only hand edits make these)."""
        with _mapped_errors():
            stored = set(self.collection.distinct("files_id")) | set(self.entries.distinct("_id"))
            if not stored:
                return []
            known = {
                doc["_id"] for doc in self._records.find({"_id": {"$in": list(stored)}}, {"_id": 1})
            }
        return sorted(str(i) for i in stored - known)


def _ensure_index(
    collection: Collection[dict[str, Any]], keys: list[tuple[str, int]], unique: bool
) -> None:
    """Create an index unless one on the same keys exists (under any name, with 1 or 1.0 as
    direction: pymongo's GridFS and the shell create them so), as the specification asks."""
    for index in collection.list_indexes():
        if [(f, _direction(d)) for f, d in index["key"].items()] == keys:
            return
    collection.create_index(keys, unique=unique)


def _direction(value: Any) -> Any:
    """An index key's direction, numbers compared by value (1 == 1.0 == Int64(1))."""
    return int(value) if isinstance(value, (int, float)) and value == int(value) else value
