"""Uploads are all or nothing, leftovers are swept, and damaged files are never served as whole.

Service level: ``FileService`` and ``Storage`` as the app built them, on the test's database.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bson.binary import Binary
from flask import Flask
from flask.testing import FlaskClient
from pymongo.errors import AutoReconnect
from pymongo.synchronous.collection import Collection

from cryptofiles import crypto
from cryptofiles.clock import utcnow
from cryptofiles.config import Settings
from cryptofiles.files import (
    STALE_UPLOAD,
    ByteRange,
    FileService,
    NoSuchFile,
    OwnerGone,
    UploadInterrupted,
    UploadTooLarge,
)
from cryptofiles.storage import CorruptFile, DatabaseUnavailable, FileRecord, Storage
from cryptofiles.web import create_app, services_of
from tests.support.api import Accounts

MiB = 1 << 20
BLOCK = MiB // 2
OWNER = str(uuid.uuid4())
PASSWORD = "correct horse battery"  # tests.support.api's, which Accounts registers with


@pytest.fixture
def storage(app: Flask) -> Storage:
    return services_of(app).storage


@pytest.fixture(autouse=True)
def owner_exists(storage: Storage) -> None:
    """OWNER is a user: an upload completes only for an owner that exists (and is not being
    deleted), and the sweep removes the files of owners that do not."""
    now = utcnow()
    doc = {
        "_id": OWNER,
        "public_id": OWNER,
        "name": "owner",
        "password_hash": "-",
        "created_at": now,
    }
    storage.users.collection.insert_one(doc)


@pytest.fixture
def files(app: Flask) -> FileService:
    return services_of(app).files


def counts(db: Any) -> tuple[int, int, int]:
    return (
        db.files.count_documents({}),
        db["ciphertext.files"].count_documents({}),
        db["ciphertext.chunks"].count_documents({}),
    )


def chunk_count(db: Any) -> int:
    return int(db["ciphertext.chunks"].count_documents({}))


def blocks(total: int, before_each: Callable[[int], None] = lambda sent: None) -> Iterator[bytes]:
    """``total`` random bytes in BLOCK-sized pieces; ``before_each(bytes sent so far)``."""
    sent = 0
    while sent < total:
        before_each(sent)
        block = os.urandom(min(BLOCK, total - sent))
        sent += len(block)
        yield block


def plaintext_of(files: FileService, record: FileRecord) -> bytes:
    return b"".join(crypto.decrypt_stream(files.key(record), files.ciphertext(record)))


def no_orphans(db: Any) -> None:
    """Storage's invariant: no chunk and no GridFS entry without a record that names it."""
    records = {doc["_id"] for doc in db.files.find({}, {"_id": 1})}
    chunk_owners = {doc["files_id"] for doc in db["ciphertext.chunks"].find({}, {"files_id": 1})}
    assert chunk_owners <= records
    assert {doc["_id"] for doc in db["ciphertext.files"].find({}, {"_id": 1})} <= records


# -- a failed upload leaves nothing behind ---------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("the body iterator broke"),
        UploadInterrupted("The upload was cut off before the end of the body."),
        KeyboardInterrupt(),  # the worker is stopping
    ],
    ids=lambda error: type(error).__name__,
)
def test_body_failing_midway_leaves_nothing(
    files: FileService, db: Any, error: BaseException
) -> None:
    kept = files.upload(OWNER, [b"an earlier file"])
    before = counts(db)
    chunks_at_failure: list[int] = []

    def fail_after_2_5_mib(sent: int) -> None:
        if sent >= 2 * MiB + BLOCK:
            chunks_at_failure.append(chunk_count(db))
            raise error

    with pytest.raises(type(error)) as raised:
        files.upload(OWNER, blocks(4 * MiB, fail_after_2_5_mib), name="broken.bin")
    assert raised.value is error
    assert chunks_at_failure[0] >= before[2] + 2  # there was something to clean up
    assert counts(db) == before
    assert plaintext_of(files, files.get(kept.id)) == b"an earlier file"


LIMIT = 2 * MiB + BLOCK


@pytest.mark.parametrize("size", [LIMIT + 1, 4 * MiB])
def test_size_limit_exceeded_midway_leaves_nothing(
    storage: Storage, settings: Settings, db: Any, size: int
) -> None:
    files = FileService(storage, settings.master_keys, utcnow, LIMIT)
    before = counts(db)
    chunks_seen: list[int] = []

    def note_chunks(sent: int) -> None:
        if sent + BLOCK > LIMIT:  # the block about to be sent crosses the limit
            chunks_seen.append(chunk_count(db))

    with pytest.raises(UploadTooLarge):
        files.upload(OWNER, blocks(size, note_chunks))
    assert chunks_seen[0] >= 2
    assert counts(db) == before


def test_size_limit_itself_is_accepted(storage: Storage, settings: Settings) -> None:
    files = FileService(storage, settings.master_keys, utcnow, LIMIT)
    record = files.upload(OWNER, blocks(LIMIT))
    assert record.size == LIMIT
    assert len(plaintext_of(files, files.get(record.id))) == LIMIT


def fail_in_chunk_writer(storage: Storage, monkeypatch: pytest.MonkeyPatch, on_fail: Any) -> None:
    """The write function of the app's chunk writer raises AutoReconnect on the 3rd chunk."""
    original = storage.chunks.writer

    @contextlib.contextmanager
    def chunk_writer(*args: Any) -> Iterator[Callable[[bytes], None]]:
        with original(*args) as write:
            written = 0

            def write_or_fail(segment: bytes) -> None:
                nonlocal written
                written += 1
                if written == 3:
                    on_fail()
                    raise AutoReconnect("connection reset by peer")
                write(segment)

            yield write_or_fail

    monkeypatch.setattr(storage.chunks, "writer", chunk_writer)


def fail_in_driver(storage: Storage, monkeypatch: pytest.MonkeyPatch, on_fail: Any) -> None:
    """pymongo's insert of the 3rd chunk document raises AutoReconnect."""
    original = Collection.insert_one
    inserted = 0

    def insert_one(self: Collection[Any], documents: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal inserted
        if self.name == "ciphertext.chunks":
            inserted += 1
            if inserted == 3:
                on_fail()
                raise AutoReconnect("connection reset by peer")
        return original(self, documents, *args, **kwargs)

    monkeypatch.setattr(Collection, "insert_one", insert_one)


@pytest.mark.parametrize("inject", [fail_in_chunk_writer, fail_in_driver], ids=["writer", "driver"])
def test_database_failing_midway_leaves_nothing(
    files: FileService,
    storage: Storage,
    db: Any,
    monkeypatch: pytest.MonkeyPatch,
    inject: Callable[..., None],
) -> None:
    before = counts(db)
    chunks_at_failure: list[int] = []
    inject(storage, monkeypatch, lambda: chunks_at_failure.append(chunk_count(db)))
    with pytest.raises(DatabaseUnavailable):
        files.upload(OWNER, blocks(4 * MiB))
    assert chunks_at_failure == [before[2] + 2]
    assert counts(db) == before


def test_failed_clean_up_leaves_a_pending_record_that_is_never_served_and_is_swept(
    client: FlaskClient,
    accounts: Accounts,
    files: FileService,
    storage: Storage,
    settings: Settings,
    db: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    headers = accounts.headers(accounts.token())
    owner = db.users.find_one({"name": "User1"})["public_id"]
    before = counts(db)

    def database_gone(file_id: str) -> None:
        raise DatabaseUnavailable("AutoReconnect")

    def cut_off(sent: int) -> None:
        if sent >= MiB + BLOCK:
            raise UploadInterrupted("The upload was cut off before the end of the body.")

    with monkeypatch.context() as patch:
        patch.setattr(storage.files, "discard", database_gone)
        with pytest.raises(UploadInterrupted):  # the upload's error, not the clean-up's
            files.upload(owner, blocks(3 * MiB, cut_off))
    left = db.files.find_one({})
    assert left["status"] == "pending"
    for path in (f"/files/{left['_id']}", f"/files/{left['_id']}/key"):
        assert client.get(path, headers=headers).status_code == 404
    with pytest.raises(NoSuchFile):
        files.get(left["_id"])
    assert files.sweep().unfinished == 0  # its heartbeat is fresh: it could be a live upload
    later = FileService(
        storage, settings.master_keys, lambda: utcnow() + STALE_UPLOAD + timedelta(seconds=1), 1
    )
    assert later.sweep().unfinished == 1
    assert counts(db) == before


# -- an account deleted while its upload runs --------------------------------------------------------


@dataclasses.dataclass
class Leaver:
    """A user who uploads, and deletes the account through the API at a chosen moment."""

    client: FlaskClient
    token: str
    public_id: str

    def delete_account(self) -> None:
        response = self.client.delete(
            "/account", json={"User_Password": PASSWORD}, headers={"x-access-tokens": self.token}
        )
        assert response.status_code == 200, response.text


@pytest.fixture
def leaver(client: FlaskClient, accounts: Accounts, db: Any) -> Leaver:
    token = accounts.token("leaver")
    return Leaver(client, token, db.users.find_one({"name": "leaver"})["public_id"])


def nothing_of(db: Any, owner: str) -> None:
    """No user document, no record, no GridFS entry and no chunk is left of ``owner``."""
    assert db.users.count_documents({"_id": owner}) == 0
    ids = {doc["_id"] for doc in db.files.find({"owner": owner}, {"_id": 1})}
    assert ids == set()
    no_orphans(db)  # with no record left, chunks of the owner's files would be orphans
    assert counts(db)[0] == db.files.count_documents({})  # (and OWNER's files are untouched)


@pytest.mark.parametrize("when", ["midway", "right-after-completion"])
def test_account_deleted_during_an_upload_leaves_nothing(
    files: FileService,
    storage: Storage,
    leaver: Leaver,
    db: Any,
    monkeypatch: pytest.MonkeyPatch,
    when: str,
) -> None:
    kept = files.upload(OWNER, [b"somebody else's file"])

    def delete_midway(sent: int) -> None:
        if sent == MiB and when == "midway":  # the pending record and two chunks are stored
            assert db.files.count_documents({"owner": leaver.public_id, "status": "pending"}) == 1
            leaver.delete_account()

    complete_file = storage.files.complete

    def complete_then_delete(file_id: str, size: int, stored_size: int, header: bytes) -> None:
        complete_file(file_id, size, stored_size, header)
        leaver.delete_account()  # between the compare-and-set and the owner check

    if when == "right-after-completion":
        monkeypatch.setattr(storage.files, "complete", complete_then_delete)
    with pytest.raises(OwnerGone):
        files.upload(leaver.public_id, blocks(3 * MiB, delete_midway))
    nothing_of(db, leaver.public_id)
    assert counts(db) == (1, 1, 1)
    assert plaintext_of(files, files.get(kept.id)) == b"somebody else's file"


def test_account_deleted_after_an_upload_takes_the_file(
    files: FileService, leaver: Leaver, db: Any
) -> None:
    record = files.upload(leaver.public_id, blocks(2 * MiB))
    leaver.delete_account()
    nothing_of(db, leaver.public_id)
    with pytest.raises(NoSuchFile):
        files.get(record.id)


def test_deletion_begun_before_completion_and_finished_after_leaves_nothing(
    files: FileService, storage: Storage, leaver: Leaver, db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deletion's steps interleaved with the upload's one by one: the user is marked and the
    pending record shredded before the upload marks it complete; the rest of the deletion runs
    after the upload failed. Marked complete without its key, the record is never served."""
    complete_file = storage.files.complete
    seen: dict[str, Any] = {}

    def shred_before_completing(file_id: str, size: int, stored_size: int, header: bytes) -> None:
        storage.users.mark_deleting(leaver.public_id)
        storage.files.shred(file_id, utcnow())  # the first step of removing this record
        complete_file(file_id, size, stored_size, header)
        seen["status"] = db.files.find_one({"_id": file_id})["status"]
        seen["listed"] = storage.files.list_files(leaver.public_id, limit=10, after=None)
        with pytest.raises(NoSuchFile):
            files.get(file_id)

    monkeypatch.setattr(storage.files, "complete", shred_before_completing)
    with pytest.raises(OwnerGone):
        files.upload(leaver.public_id, blocks(2 * MiB))
    assert seen == {"status": "complete", "listed": []}
    assert files.delete_all(leaver.public_id) == 0  # the upload already undid itself
    storage.users.delete(leaver.public_id)
    nothing_of(db, leaver.public_id)


def test_upload_cut_short_by_the_account_deletion_answers_410(
    app: Flask, leaver: Leaver, db: Any
) -> None:
    class DeletingStream(io.BytesIO):
        """A request body that deletes its sender's account after the first MiB is read."""

        deleted = False

        def readinto(self, buffer: Any) -> int:  # how werkzeug reads a request body
            if self.tell() >= MiB and not self.deleted:
                self.deleted = True
                leaver.delete_account()
            return super().readinto(buffer)

    response = app.test_client().post(
        "/upload",
        input_stream=(body := DeletingStream(os.urandom(3 * MiB))),
        headers={"x-access-tokens": leaver.token, "Content-Length": str(3 * MiB)},
    )
    assert response.status_code == 410
    assert body.deleted  # the deletion did run midway
    assert response.text == "This account was deleted while the upload ran; nothing was stored.\n"
    nothing_of(db, leaver.public_id)


def test_sweep_removes_the_files_of_owners_that_no_longer_exist(
    files: FileService, storage: Storage, leaver: Leaver, db: Any
) -> None:
    """What a crash between an upload's completion and its owner check leaves, after the
    account's deletion: a complete file that nobody owns, downloadable by its id."""
    kept = files.upload(OWNER, [b"owned"])
    ownerless = files.upload(leaver.public_id, blocks(2 * MiB))
    storage.users.delete(leaver.public_id)
    assert files.get(ownerless.id)  # still served: nothing else would ever remove it
    report = files.sweep()
    assert (report.unfinished, report.ownerless) == (0, 1)
    nothing_of(db, leaver.public_id)
    assert stored_ids(db) == ({kept.id}, {kept.id}, {kept.id})
    assert files.sweep().ownerless == 0


# -- the sweep -------------------------------------------------------------------------------------


def insert_pending(storage: Storage, heartbeat: datetime, n_chunks: int = 2) -> str:
    """What a crashed upload leaves: a pending record, some chunks, maybe a GridFS entry."""
    file_id = str(uuid.uuid4())
    record = FileRecord(file_id, OWNER, "crashed.bin", None, os.urandom(60), "test1", heartbeat)
    storage.files.insert_pending(record, heartbeat)
    storage.chunks.collection.insert_many(
        [{"files_id": file_id, "n": n, "data": Binary(os.urandom(1000))} for n in range(n_chunks)]
    )
    storage.chunks.entries.insert_one(
        {"_id": file_id, "length": 1000 * n_chunks, "chunkSize": MiB, "uploadDate": heartbeat}
    )
    return file_id


def stored_ids(db: Any) -> tuple[set[str], set[str], set[str]]:
    return (
        {doc["_id"] for doc in db.files.find({}, {"_id": 1})},
        {doc["_id"] for doc in db["ciphertext.files"].find({}, {"_id": 1})},
        {doc["files_id"] for doc in db["ciphertext.chunks"].find({}, {"files_id": 1})},
    )


def test_sweep_removes_stale_pending_uploads_only(
    storage: Storage, settings: Settings, db: Any
) -> None:
    now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    files = FileService(storage, settings.master_keys, lambda: now, MiB)
    second = timedelta(seconds=1)
    stale = {
        insert_pending(storage, now - age) for age in (STALE_UPLOAD + second, timedelta(days=3))
    }
    fresh = {insert_pending(storage, now - age) for age in (STALE_UPLOAD - second, timedelta(0))}
    complete = files.upload(OWNER, [b"complete"])
    # A complete file is never swept, however old.
    db.files.update_one({"_id": complete.id}, {"$set": {"created_at": now - timedelta(days=9)}})

    assert files.sweep().unfinished == 2
    kept = fresh | {complete.id}
    assert stored_ids(db) == (kept, kept, kept)
    assert not stale & kept
    assert plaintext_of(files, files.get(complete.id)) == b"complete"
    assert files.sweep().unfinished == 0


def test_create_app_sweeps_at_start_up(storage: Storage, settings: Settings, db: Any) -> None:
    stale = insert_pending(storage, utcnow() - timedelta(hours=1), n_chunks=3)
    fresh = insert_pending(storage, utcnow())
    assert stale in stored_ids(db)[2]
    another_instance = create_app(settings)
    services_of(another_instance).storage.close()
    assert stored_ids(db) == ({fresh}, {fresh}, {fresh})


# -- damaged files ---------------------------------------------------------------------------------

THREE_CHUNKS = 2 * MiB + 100_000  # plaintext that makes three ciphertext chunks


@pytest.fixture
def three_chunk_file(files: FileService) -> FileRecord:
    record = files.upload(OWNER, blocks(THREE_CHUNKS))
    assert crypto.segment_count(record.stored_size) == 3
    return record


@pytest.mark.parametrize("missing", [0, 1, 2])
def test_read_chunks_detects_a_missing_chunk(
    storage: Storage, files: FileService, db: Any, three_chunk_file: FileRecord, missing: int
) -> None:
    file_id = three_chunk_file.id
    db["ciphertext.chunks"].delete_one({"files_id": file_id, "n": missing})
    with pytest.raises(CorruptFile):
        list(storage.chunks.read(file_id, three_chunk_file.stored_size, 0, 2))
    with pytest.raises(CorruptFile):
        b"".join(files.ciphertext(three_chunk_file))
    # Chunks that are still there can be read on their own.
    for n in {0, 1, 2} - {missing}:
        assert len(list(storage.chunks.read(file_id, three_chunk_file.stored_size, n, n))) == 1


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda data: data[:-10], id="shorter"),
        pytest.param(lambda data: data + b"0123456789", id="longer"),
    ],
)
def test_read_chunks_detects_a_chunk_of_the_wrong_size(
    storage: Storage, db: Any, three_chunk_file: FileRecord, change: Callable[[bytes], bytes]
) -> None:
    chunk = db["ciphertext.chunks"].find_one({"files_id": three_chunk_file.id, "n": 1})
    db["ciphertext.chunks"].update_one(
        {"_id": chunk["_id"]}, {"$set": {"data": Binary(change(bytes(chunk["data"])))}}
    )
    with pytest.raises(CorruptFile):
        list(storage.chunks.read(three_chunk_file.id, three_chunk_file.stored_size, 0, 2))


@pytest.fixture
def damaged_download(
    client: FlaskClient, accounts: Accounts, db: Any
) -> Callable[[Callable[[Any, str], None], dict[str, str]], tuple[Any, str, bytes]]:
    """Upload a three-chunk file over HTTP, damage it, then download it: (response, id, stored)."""
    headers = accounts.headers(accounts.token())

    def run(damage: Callable[[Any, str], None], extra: dict[str, str]) -> tuple[Any, str, bytes]:
        file_id = client.post("/upload", data=os.urandom(THREE_CHUNKS), headers=headers).text
        cursor = db["ciphertext.chunks"].find({"files_id": file_id}, sort=[("n", 1)])
        stored = b"".join(bytes(chunk["data"]) for chunk in cursor)
        damage(db, file_id)
        return client.get(f"/files/{file_id}", headers={**headers, **extra}), file_id, stored

    return run


def delete_chunk_1(db: Any, file_id: str) -> None:
    db["ciphertext.chunks"].delete_one({"files_id": file_id, "n": 1})


def test_download_with_a_missing_chunk_is_never_sent_whole(damaged_download: Any) -> None:
    response, _, stored = damaged_download(delete_chunk_1, {})
    # The status and headers are gone before the gap is found; the body then breaks off.
    assert response.status_code == 200
    assert response.content_length == len(stored)
    with pytest.raises(CorruptFile):
        response.get_data()
    response.close()


@pytest.mark.parametrize(
    ("byte_range", "served"),
    [("bytes=0-99", True), ("bytes=-100", True), ("bytes=1048570-1048590", False)],
)
def test_range_of_a_file_with_a_missing_chunk(
    damaged_download: Any, byte_range: str, served: bool
) -> None:
    response, _, stored = damaged_download(delete_chunk_1, {"Range": byte_range})
    assert response.status_code == 206
    if served:  # only the chunks a range touches are read
        start, stop = (0, 100) if byte_range == "bytes=0-99" else (len(stored) - 100, len(stored))
        assert response.get_data() == stored[start:stop]
    else:
        with pytest.raises(CorruptFile):
            response.get_data()
    response.close()


def resize_chunk_1(delta: bytes, cut: int) -> Callable[[Any, str], None]:
    def damage(db: Any, file_id: str) -> None:
        chunk = db["ciphertext.chunks"].find_one({"files_id": file_id, "n": 1})
        data = bytes(chunk["data"])[: len(chunk["data"]) - cut] + delta
        db["ciphertext.chunks"].update_one({"_id": chunk["_id"]}, {"$set": {"data": Binary(data)}})

    return damage


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(resize_chunk_1(b"", 10), id="shorter"),
        pytest.param(
            resize_chunk_1(b"0123456789", 0),
            id="longer",
        ),
    ],
)
def test_download_with_a_chunk_of_the_wrong_size_is_never_sent_whole(
    damaged_download: Any, damage: Callable[[Any, str], None]
) -> None:
    response, _, stored = damaged_download(damage, {})
    try:
        body = response.get_data()
    except CorruptFile:
        return
    finally:
        response.close()
    assert len(body) < response.content_length == len(stored)


# -- documented behaviour that does not hold -------------------------------------------------------


def test_segments_reach_the_database_while_the_upload_runs(files: FileService, db: Any) -> None:
    seen: list[int] = []

    def note_chunks(sent: int) -> None:
        if sent == 3 * MiB:  # by now segments 0, 1 and 2 are encrypted
            seen.append(chunk_count(db))

    files.upload(OWNER, blocks(4 * MiB, note_chunks))
    assert seen[0] >= 2


def test_upload_swept_meanwhile_does_not_report_success(
    files: FileService, storage: Storage, settings: Settings, db: Any
) -> None:
    starting_later = FileService(
        storage, settings.master_keys, lambda: utcnow() + STALE_UPLOAD + timedelta(seconds=1), 1
    )
    swept: list[int] = []

    def stall(sent: int) -> None:
        if sent == MiB:  # no block for over STALE_UPLOAD; another instance starts and sweeps
            swept.append(starting_later.sweep().unfinished)

    outcome: FileRecord | Exception
    try:
        outcome = files.upload(OWNER, blocks(3 * MiB, stall))
    except Exception as exc:
        outcome = exc
    assert swept == [1]
    if isinstance(outcome, FileRecord):
        assert files.get(outcome.id).stored_size == outcome.stored_size  # then it must exist
    no_orphans(db)


def test_the_record_keeps_the_header_so_a_plaintext_range_reads_no_chunk_0(
    files: FileService, storage: Storage, db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On FerretDB/PostgreSQL, reading chunk 0 of a large file by {files_id, n: 0} can make the
    engine read every chunk of the file; a range away from the start needs only its own chunks."""
    data = os.urandom(3 * MiB + 123)
    stored = files.upload(OWNER, iter([data]))
    chunk0 = db["ciphertext.chunks"].find_one({"files_id": stored.id, "n": 0})["data"]
    record = files.get(stored.id, owner=OWNER)
    assert record.header == bytes(chunk0[: crypto.HEADER_SIZE])

    read = storage.chunks.read
    asked: list[tuple[int, int]] = []

    def spy(file_id: str, length: int, first: int, last: int) -> Iterator[bytes]:
        asked.append((first, last))
        return read(file_id, length, first, last)

    monkeypatch.setattr(storage.chunks, "read", spy)
    start = 2 * MiB + 7
    span = ByteRange(start, start + 1000)
    assert b"".join(files.plaintext(record, span)) == data[start : start + 1000]
    assert asked and all(first > 0 for first, _ in asked)

    # A file stored before the header was kept still decrypts: chunk 0 is read for it.
    db.files.update_one({"_id": stored.id}, {"$unset": {"header": ""}})
    older = files.get(stored.id, owner=OWNER)
    assert older.header is None
    asked.clear()
    assert b"".join(files.plaintext(older, span)) == data[start : start + 1000]
    assert (0, 0) in asked
