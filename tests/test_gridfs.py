"""GridFS to the letter: our ``ciphertext`` bucket as the MongoDB GridFS specification has it.

Each test names the rule it checks (source/gridfs/gridfs-spec.md in mongodb/specifications). The
BSON types are read from the raw bytes of the stored documents, since pymongo decodes Int32 and
Int64 alike to ``int`` and Binary subtype 0 to ``bytes``. The last tests read our files back
through pymongo's own ``GridFSBucket`` and compare with what the API serves, and check the query
shapes of ranged reads (equality on ``files_id`` and ``n``, which every engine serves from an
index for the chunk alone).
"""

from __future__ import annotations

import io
import os
import struct
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bson.raw_bson import RawBSONDocument
from flask import Flask
from flask.testing import FlaskClient
from gridfs import GridFSBucket
from pymongo.collection import Collection

from cryptofiles import crypto
from cryptofiles.storage import chunks as chunks_module
from cryptofiles.storage.chunks import Chunks
from cryptofiles.web import services_of
from tests.support.api import Accounts

MiB = 1 << 20
ONE_CHUNK = 100_000  # plaintext sizes: one chunk, a short last chunk, a full last chunk
THREE_CHUNKS = 2 * MiB + 100_000
FULL_TAIL = 1_048_520 + 1_048_560  # ciphertext of exactly two full chunks: no empty tail chunk
SIZES = [ONE_CHUNK, THREE_CHUNKS, FULL_TAIL]

# BSON element types (bsonspec.org) that the specification names.
DOUBLE, STRING, DOCUMENT, ARRAY, BINARY, OBJECT_ID, BOOL, DATETIME, INT32, INT64 = (
    0x01, 0x02, 0x03, 0x04, 0x05, 0x07, 0x08, 0x09, 0x10, 0x12,
)  # fmt: skip
FIXED = {DOUBLE: 8, OBJECT_ID: 12, BOOL: 1, DATETIME: 8, INT32: 4, INT64: 8}


def bson_types(document: Any) -> dict[str, tuple[int, int | None]]:
    """Top-level field -> (BSON element type, binary subtype or None), read from the raw bytes."""
    raw = bytes(document)
    fields: dict[str, tuple[int, int | None]] = {}
    at = 4
    while raw[at] != 0:
        kind = raw[at]
        end = raw.index(b"\0", at + 1)
        name, at = raw[at + 1 : end].decode(), end + 1
        subtype = None
        if kind in FIXED:
            at += FIXED[kind]
        elif kind == STRING:
            at += 4 + struct.unpack_from("<i", raw, at)[0]
        elif kind == BINARY:
            subtype = raw[at + 4]
            at += 5 + struct.unpack_from("<i", raw, at)[0]
        elif kind in (DOCUMENT, ARRAY):
            at += struct.unpack_from("<i", raw, at)[0]
        else:
            raise AssertionError(f"unexpected BSON type {kind:#x} in field {name}")
        fields[name] = (kind, subtype)
    return fields


def raw(db: Any, name: str) -> Collection[RawBSONDocument]:
    collection: Collection[Any] = db[name]
    return collection.with_options(codec_options=collection.codec_options.with_options(
        document_class=RawBSONDocument
    ))  # fmt: skip


@pytest.fixture
def headers(accounts: Accounts) -> dict[str, str]:
    return accounts.headers(accounts.token())


def upload(client: FlaskClient, headers: dict[str, str], size: int) -> str:
    response = client.post("/upload", data=os.urandom(size), headers=headers)
    assert response.status_code == 201, response.text
    return str(response.text)


@pytest.fixture
def stored(client: FlaskClient, headers: dict[str, str]) -> dict[int, str]:
    """Plaintext size -> id of a file uploaded over HTTP."""
    return {size: upload(client, headers, size) for size in SIZES}


def served(
    client: FlaskClient, headers: dict[str, str], file_id: str, suffix: str = "", **extra: str
) -> bytes:
    response = client.get(f"/files/{file_id}{suffix}", headers={**headers, **extra})
    assert response.status_code in (200, 206)
    return bytes(response.data)


# -- documents -------------------------------------------------------------------------------------


def test_chunk_documents_have_the_specified_fields_and_types(
    db: Any, stored: dict[int, str]
) -> None:
    """Chunks: ``_id`` ObjectId, ``files_id`` of the entry's ``_id`` type, ``n`` Int32, ``data``
    Binary subtype 0x00; nothing else."""
    for file_id in stored.values():
        entry = bson_types(raw(db, "ciphertext.files").find_one({"_id": file_id}).raw)
        chunk_docs = list(raw(db, "ciphertext.chunks").find({"files_id": file_id}))
        assert chunk_docs
        for doc in chunk_docs:
            assert bson_types(doc.raw) == {
                "_id": (OBJECT_ID, None),
                "files_id": entry["_id"],
                "n": (INT32, None),
                "data": (BINARY, 0),
            }


def test_chunks_are_numbered_from_zero_full_except_the_last_and_never_empty(
    db: Any, stored: dict[int, str]
) -> None:
    """Every chunk but the last is exactly chunkSize; the last is only as large as necessary; a
    file whose length is a multiple of chunkSize has no empty chunk after its full ones."""
    for size, file_id in stored.items():
        entry = db["ciphertext.files"].find_one({"_id": file_id})
        docs = list(db["ciphertext.chunks"].find({"files_id": file_id}, sort=[("n", 1)]))
        chunk_size, length = entry["chunkSize"], entry["length"]
        assert [doc["n"] for doc in docs] == list(range(-(-length // chunk_size)))
        lengths = [len(doc["data"]) for doc in docs]
        assert all(n == chunk_size for n in lengths[:-1])
        assert 0 < lengths[-1] <= chunk_size
        assert sum(lengths) == length == crypto.ciphertext_size(size)
    full_tail = db["ciphertext.files"].find_one({"_id": stored[FULL_TAIL]})
    assert full_tail["length"] == 2 * full_tail["chunkSize"]
    assert db["ciphertext.chunks"].count_documents({"files_id": stored[FULL_TAIL]}) == 2


def test_the_writer_never_stores_an_empty_chunk(app: Flask, db: Any) -> None:
    """Drivers MUST NOT create empty chunks: an empty piece after full ones adds no chunk."""
    chunks = services_of(app).storage.chunks
    with chunks.writer("full-tail", lambda: datetime.now(UTC)) as write:
        write(os.urandom(chunks.chunk_size))
        write(b"")
    assert [len(doc["data"]) for doc in db["ciphertext.chunks"].find()] == [chunks.chunk_size]
    bucket = GridFSBucket(db, bucket_name="ciphertext")
    assert len(bucket.open_download_stream("full-tail").read()) == chunks.chunk_size


def test_files_documents_have_the_specified_fields_and_types(
    db: Any, stored: dict[int, str]
) -> None:
    """Entries: ``length`` Int64 and ``chunkSize`` Int32 (the SHOULD for new files),
    ``uploadDate`` a BSON datetime, ``filename`` a string; the deprecated ``md5``,
    ``contentType`` and ``aliases``, and ``metadata``, omitted since we pass none."""
    for file_id in stored.values():
        doc = raw(db, "ciphertext.files").find_one({"_id": file_id})
        assert bson_types(doc.raw) == {
            "_id": (STRING, None),
            "length": (INT64, None),
            "chunkSize": (INT32, None),
            "uploadDate": (DATETIME, None),
            "filename": (STRING, None),
        }
        record = db.files.find_one({"_id": file_id})
        assert doc["length"] == record["stored_size"]


def test_chunk_size_must_fit_an_int32(db: Any) -> None:
    with pytest.raises(ValueError, match="Int32"):
        Chunks(db, 1 << 31, records=db.files)


def test_upload_date_is_when_the_upload_completed(
    client: FlaskClient, headers: dict[str, str], db: Any
) -> None:
    """``uploadDate`` MUST be the time the upload completed, not when it began."""
    finished: list[datetime] = []

    class SlowBody(io.RawIOBase):
        """A body that arrives in two blocks, half a second apart."""

        def __init__(self) -> None:
            self.blocks = [os.urandom(1000), os.urandom(1000)]
            self.position = 0  # only for the test client, which measures the body by seeking

        def readable(self) -> bool:
            return True

        def seekable(self) -> bool:
            return True

        def tell(self) -> int:
            return self.position

        def seek(self, offset: int, whence: int = 0) -> int:
            self.position = 2000 if whence == io.SEEK_END else offset
            return self.position

        def readinto(self, buffer: Any) -> int:
            time.sleep(0.5)
            if not self.blocks:
                return 0
            block = self.blocks.pop(0)
            buffer[: len(block)] = block
            if not self.blocks:  # the app stops reading at Content-Length: the body is done
                finished.append(datetime.now(UTC))
            return len(block)

    response = client.post("/upload", input_stream=SlowBody(), headers=headers)
    assert response.status_code == 201, response.text
    entry = db["ciphertext.files"].find_one({"_id": response.text})
    began = db.files.find_one({"_id": response.text})["created_at"]
    # BSON datetimes keep milliseconds: compare with a millisecond of slack.
    assert entry["uploadDate"] >= finished[-1] - timedelta(milliseconds=1)
    # The record is created once the first block is in; the second came half a second later.
    assert entry["uploadDate"] - began >= timedelta(milliseconds=490)


# -- indexes ---------------------------------------------------------------------------------------


def index_keys(db: Any, name: str) -> dict[tuple[tuple[str, int], ...], bool]:
    return {
        tuple((k, int(v)) for k, v in index["key"].items()): bool(index.get("unique"))
        for index in db[name].list_indexes()
    }


def test_required_indexes_exist_before_the_first_write(app: Flask, db: Any) -> None:
    """A unique ``{files_id: 1, n: 1}`` on the chunks, ``{filename: 1, uploadDate: 1}`` on the
    files collection, created at start-up, before anything was stored."""
    assert db["ciphertext.files"].find_one({}) is None
    assert db["ciphertext.chunks"].find_one({}) is None
    assert index_keys(db, "ciphertext.chunks")[(("files_id", 1), ("n", 1))] is True
    assert (("filename", 1), ("uploadDate", 1)) in index_keys(db, "ciphertext.files")


def test_existing_indexes_are_recognised_under_other_names(app: Flask, db: Any) -> None:
    """Indexes another GridFS client created (other names, 1.0 as direction) count as ours."""
    storage = services_of(app).storage
    for name in ("ciphertext.chunks", "ciphertext.files"):
        db[name].drop()
    # As the shell would (pymongo itself refuses 1.0 as a direction).
    for name, key, unique in [
        ("ciphertext.chunks", {"files_id": 1.0, "n": 1.0}, True),
        ("ciphertext.files", {"filename": 1, "uploadDate": 1.0}, False),
    ]:
        index = {"key": key, "name": "theirs", "unique": unique}
        db.command("createIndexes", name, indexes=[index])
    storage.ensure_indexes()  # would fail on MongoDB if it tried to create them again
    assert len(list(db["ciphertext.chunks"].list_indexes())) == 2  # _id and theirs
    assert len(list(db["ciphertext.files"].list_indexes())) == 2


# -- queries ---------------------------------------------------------------------------------------


class Spy:
    """The filters sent to the GridFS collections, in order: (collection, method, filter)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, str, Any]] = []
        self.options: list[dict[str, Any]] = []  # keyword arguments of each call
        self.lock = threading.Lock()
        # find_one goes through find: spying on find sees both once.
        for method in ("find", "delete_one", "delete_many"):
            monkeypatch.setattr(Collection, method, self.wrap(method, getattr(Collection, method)))

    def wrap(self, method: str, original: Any) -> Any:
        def spied(collection: Collection[Any], query: Any = None, *args: Any, **kw: Any) -> Any:
            if collection.name.startswith("ciphertext."):
                with self.lock:
                    self.calls.append((collection.name, method, query))
                    self.options.append(kw)
            return original(collection, query, *args, **kw)

        return spied

    def on(self, name: str, method: str | None = None) -> list[Any]:
        return [q for c, m, q in self.calls if c == name and method in (None, m)]


def test_file_id_queries_use_eq_and_the_entry_is_deleted_before_the_chunks(
    client: FlaskClient, headers: dict[str, str], stored: dict[int, str], monkeypatch: Any
) -> None:
    """Queries embedding a file id use ``$eq``; deletion removes the entry, then the chunks."""
    file_id = stored[THREE_CHUNKS]
    spy = Spy(monkeypatch)
    served(client, headers, file_id)
    assert client.delete(f"/files/{file_id}", headers=headers).status_code == 204
    for _, _, query in spy.calls:
        assert query.get("_id", query.get("files_id")) == {"$eq": file_id}
    deletes = [(c, m) for c, m, _ in spy.calls if m.startswith("delete")]
    assert deletes == [("ciphertext.files", "delete_one"), ("ciphertext.chunks", "delete_many")]


def test_a_range_reads_only_its_chunks_each_by_equality(
    client: FlaskClient, headers: dict[str, str], stored: dict[int, str], monkeypatch: Any
) -> None:
    """Random access costs the range: one equality query per chunk it touches, never a range or
    sort on ``n``; decrypting takes the header from the file's record, not from chunk 0."""
    file_id = stored[THREE_CHUNKS]
    whole = served(client, headers, file_id)
    spy = Spy(monkeypatch)
    start = 2 * MiB + 10
    part = served(client, headers, file_id, Range=f"bytes={start}-{start + 1023}")
    assert part == whole[start : start + 1024]
    assert spy.on("ciphertext.chunks") == [{"files_id": {"$eq": file_id}, "n": {"$eq": 2}}]
    spy.calls.clear()
    # Plaintext near the end: only the chunk holding the range (the record has the header).
    served(client, headers, file_id, "/plaintext", Range="bytes=-1024")
    assert spy.on("ciphertext.chunks") == [{"files_id": {"$eq": file_id}, "n": {"$eq": 2}}]


def test_a_range_read_chunk_by_chunk_fetches_only_a_few_chunks_ahead(
    app: Flask, client: FlaskClient, headers: dict[str, str], db: Any, monkeypatch: Any
) -> None:
    """Memory stays at a few chunks per read: while the first chunk of a range is held, at most
    PREFETCH more are fetched, each by equality."""
    storage = services_of(app).storage
    file_id = upload(client, headers, 6 * MiB + 500_000)  # seven chunks
    length = db["ciphertext.files"].find_one({"_id": file_id})["length"]
    assert -(-length // MiB) == 7
    monkeypatch.setattr(chunks_module, "PREFETCH", 1)
    spy = Spy(monkeypatch)
    reader: Iterator[bytes] = storage.chunks.read(file_id, length, 1, 3)
    assert len(next(reader)) == MiB
    time.sleep(0.3)  # let a prefetch run as far as it would
    assert spy.on("ciphertext.chunks") == [
        {"files_id": {"$eq": file_id}, "n": {"$eq": 1}},
        {"files_id": {"$eq": file_id}, "n": {"$eq": 2}},
    ]
    assert sum(len(chunk) for chunk in reader) == 2 * MiB
    assert len(spy.on("ciphertext.chunks")) == 3


def test_a_whole_file_is_streamed_unsorted_a_few_chunks_per_reply(
    client: FlaskClient, headers: dict[str, str], stored: dict[int, str], monkeypatch: Any
) -> None:
    """No sort (FerretDB would hold the whole file to sort it) and small replies."""
    file_id = stored[THREE_CHUNKS]
    spy = Spy(monkeypatch)
    served(client, headers, file_id)
    assert spy.calls == [("ciphertext.chunks", "find", {"files_id": {"$eq": file_id}})]
    assert spy.options[0].get("batch_size") == chunks_module.CHUNK_BATCH
    assert "sort" not in spy.options[0]


class Shuffled:
    """A cursor over the real documents, in an order an engine may choose."""

    def __init__(self, docs: list[Any]) -> None:
        self.docs = iter(docs)

    def __enter__(self) -> Shuffled:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def __iter__(self) -> Shuffled:
        return self

    def __next__(self) -> Any:
        return next(self.docs)


@pytest.mark.parametrize("order", [[1, 0, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1, 0], [0, 1, 3, 2]])
def test_a_stream_in_another_order_is_served_in_order(
    app: Flask, client: FlaskClient, headers: dict[str, str], monkeypatch: Any, order: list[int]
) -> None:
    """Chunks that come early wait (at most REORDER of them); beyond, and for chunks the cursor
    never gave, each is fetched by equality. The bytes served are the same either way."""
    file_id = upload(client, headers, 6 * MiB + 500_000)
    whole = served(client, headers, file_id)
    original = Collection.find

    def find(collection: Collection[Any], query: Any = None, *args: Any, **kw: Any) -> Any:
        if collection.name != "ciphertext.chunks" or "n" in query:
            return original(collection, query, *args, **kw)
        by_n = {doc["n"]: doc for doc in original(collection, query)}
        return Shuffled([by_n[n] for n in order])

    monkeypatch.setattr(Collection, "find", find)
    assert served(client, headers, file_id) == whole


# -- read back by a driver's GridFS ----------------------------------------------------------------


def test_pymongo_gridfs_reads_our_files_as_the_api_serves_them(
    client: FlaskClient, headers: dict[str, str], db: Any, stored: dict[int, str]
) -> None:
    bucket = GridFSBucket(db, bucket_name="ciphertext")
    for file_id in stored.values():
        ours = served(client, headers, file_id)
        with bucket.open_download_stream(file_id) as grid_out:
            assert grid_out.read() == ours
            grid_out.seek(len(ours) - 1500)
            assert grid_out.read(1000) == ours[-1500:-500]
        assert [f._id for f in bucket.find({"filename": file_id})] == [file_id]
