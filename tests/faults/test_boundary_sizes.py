"""Fifty uploads at once, by five users, over real HTTP, of the sizes where off-by-one errors live.

Sizes (plaintext bytes): 0 (refused, 400), 1, the first segment's capacity (1 MiB - 40 header - 16
tag = 1048520) and +/- 1, the segment size (= the GridFS chunk size, 1 MiB) and +/- 1, and two full
chunks of ciphertext (1048520 + 1048560) and +/- 1. Every upload is checked: unique ids; ciphertext
of exactly the expected length, in full 1 MiB chunks but the last; Tink decrypts it with its own key
(fetched over HTTP) to what was sent, and refuses it under another file's key; nobody but the owner
gets the key; one file of each size is downloaded over HTTP and must be exactly what is stored.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import uuid
from collections.abc import Iterator

import pytest

from cryptofiles import crypto
from cryptofiles.dev.harness import Launcher
from cryptofiles.dev.tink_oracle import TinkError, tink_decrypt
from tests.support.database import DB_NAME, PinnedDatabase, Stored
from tests.support.loopback import Answer, Client, is_short_plain_message
from tests.support.server import launcher_env

pytestmark = pytest.mark.slow

CHUNK = crypto.SEGMENT_SIZE  # the GridFS chunk size equals the ciphertext segment size
FIRST = crypto.SEGMENT_SIZE - crypto.HEADER_SIZE - crypto.TAG_SIZE  # 1048520
LATER = crypto.SEGMENT_SIZE - crypto.TAG_SIZE  # 1048560
SIZES = [
    0,
    1,
    *(FIRST - 1, FIRST, FIRST + 1),
    *(CHUNK - 1, CHUNK, CHUNK + 1),
    *(FIRST + LATER - 1, FIRST + LATER, FIRST + LATER + 1),
]
UPLOADS = 50
USERS = 5


@dataclasses.dataclass
class Upload:
    user: Client
    payload: bytes
    answer: Answer | None = None
    error: str = ""


@dataclasses.dataclass
class Observed:
    users: list[Client]
    uploads: list[Upload]
    stored: Stored
    chunk_sizes: dict[str, list[int]]  # file id -> its chunks' sizes, in order
    ciphertexts: dict[str, bytes]  # file id -> its chunks, joined


def read_ciphertexts(database: PinnedDatabase) -> tuple[dict[str, list[int]], dict[str, bytes]]:
    """Every stored file's chunks, in one pass over the chunks collection."""
    chunks: dict[str, dict[int, bytes]] = {}
    with contextlib.closing(database.client()) as client:
        for doc in client[DB_NAME]["ciphertext.chunks"].find({}, batch_size=8):
            chunks.setdefault(doc["files_id"], {})[doc["n"]] = bytes(doc["data"])
    sizes, joined = {}, {}
    for file_id, parts in chunks.items():
        assert sorted(parts) == list(range(len(parts))), f"{file_id}: chunks missing"
        sizes[file_id] = [len(parts[n]) for n in range(len(parts))]
        joined[file_id] = b"".join(parts[n] for n in range(len(parts)))
    return sizes, joined


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    tmp = tmp_path_factory.mktemp("boundaries")
    database = PinnedDatabase(tmp / "db")
    database.start()
    try:
        with Launcher(tmp / "var", launcher_env(database)) as server:
            users = [Client(server.port, f"sizes{i}") for i in range(USERS)]
            uploads = [
                Upload(users[i % USERS], os.urandom(SIZES[i % len(SIZES)])) for i in range(UPLOADS)
            ]
            _upload_all_at_once(uploads)
            yield Observed(users, uploads, Stored.read(database), *read_ciphertexts(database))
    finally:
        database.stop()


def _upload_all_at_once(uploads: list[Upload]) -> None:
    start = threading.Barrier(len(uploads))

    def send(upload: Upload) -> None:
        try:
            start.wait(30)
            upload.answer = upload.user.upload(upload.payload, timeout=120)
        except (OSError, threading.BrokenBarrierError) as exc:
            upload.error = repr(exc)

    threads = [threading.Thread(target=send, args=(u,), daemon=True) for u in uploads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    assert not any(t.is_alive() for t in threads), "an upload did not end"


def stored(observed: Observed) -> list[Upload]:
    return [u for u in observed.uploads if u.payload]


def test_every_upload_was_answered(observed: Observed) -> None:
    assert [u.error for u in observed.uploads if u.error] == []
    sizes = {len(u.payload) for u in observed.uploads}
    assert sizes == set(SIZES)


def test_empty_uploads_are_refused_and_store_nothing(observed: Observed) -> None:
    empty = [u for u in observed.uploads if not u.payload]
    assert empty
    for upload in empty:
        assert upload.answer is not None and upload.answer.status == 400, upload.answer
        assert is_short_plain_message(upload.answer.headers, upload.answer.body)
    assert len(observed.stored.records) == len(stored(observed))


def test_ids_are_unique(observed: Observed) -> None:
    answers = [u.answer for u in stored(observed)]
    assert all(a is not None and a.status == 201 for a in answers), [
        (a.status, a.text) for a in answers if a is not None and a.status != 201
    ]
    ids = [a.text for a in answers if a is not None]
    assert len(set(ids)) == len(ids)
    assert all(str(uuid.UUID(i)) == i for i in ids)
    assert set(observed.stored.records) == set(ids)
    assert set(observed.stored.records.values()) == {"complete"}


def test_chunks_follow_the_segments(observed: Observed) -> None:
    for upload in stored(observed):
        assert upload.answer is not None
        size = crypto.ciphertext_size(len(upload.payload))
        expected = [CHUNK] * (size // CHUNK) + ([size % CHUNK] if size % CHUNK else [])
        assert observed.chunk_sizes[upload.answer.text] == expected, len(upload.payload)


def test_each_file_decrypts_only_with_its_own_key(observed: Observed) -> None:
    files = stored(observed)
    keys = [u.user.key(u.answer.text) for u in files if u.answer]
    assert len(keys) == len(files) and len(set(keys)) == len(keys)
    for i, upload in enumerate(files):
        assert upload.answer is not None
        ciphertext = observed.ciphertexts[upload.answer.text]
        assert len(ciphertext) == crypto.ciphertext_size(len(upload.payload))
        assert tink_decrypt(keys[i], ciphertext) == upload.payload, len(upload.payload)
        other = keys[(i + 1) % len(keys)]  # the next file's key: another user's
        with pytest.raises(TinkError):
            tink_decrypt(other, ciphertext)


def test_what_is_served_is_what_is_stored(observed: Observed) -> None:
    # One download per size over HTTP: on FerretDB every download scans all stored chunks, so
    # fifty of them would take minutes; the read path is the same for every file of a size.
    first_of_each_size = {len(u.payload): u for u in reversed(stored(observed))}
    for upload in first_of_each_size.values():
        assert upload.answer is not None
        file_id = upload.answer.text
        assert upload.user.ciphertext(file_id) == observed.ciphertexts[file_id]


def test_only_the_owner_gets_a_key(observed: Observed) -> None:
    for upload in stored(observed)[: len(observed.users)]:
        assert upload.answer is not None
        stranger = next(u for u in observed.users if u is not upload.user)
        assert stranger.get(f"/files/{upload.answer.text}/key").status == 404


def test_every_user_lists_exactly_their_files(observed: Observed) -> None:
    for user in observed.users:
        mine = {u.answer.text for u in stored(observed) if u.user is user and u.answer}
        assert user.listed() == mine
