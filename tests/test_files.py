"""The file contract over HTTP: POST /upload, GET /files/<id>, GET /files/<id>/key.

Most tests only read, or add files of their own, so they share one app, two users and one stored
file (``world``, built once for the module). Tests that count documents, change records or need
another configuration use the per-test fixtures of conftest.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import os
import urllib.parse
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import bson
import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.http import parse_options_header

from cryptofiles import crypto
from cryptofiles.config import Settings
from cryptofiles.crypto import KeyRing
from cryptofiles.dev.tink_oracle import tink_decrypt
from cryptofiles.web import create_app, services_of
from tests.support.api import Accounts
from tests.support.settings import fresh_settings_values

MiB = 1 << 20
JSON = {"Accept": "application/json"}
NO_SUCH_FILE = "No such file.\n"
INTERNAL_ERROR = "Internal server error.\n"
# Plaintext capacity of ciphertext segment 0 (1 MiB - 40 header - 16 tag) and of later segments.
FIRST_SEGMENT_PLAIN = 1_048_520
LATER_SEGMENT_PLAIN = 1_048_560
UPLOAD_JSON_FIELDS = {"id", "size", "stored_size", "name", "content_type", "created_at"}

# The shared file spans two GridFS chunks, so ranges can cross a chunk boundary. Kept small: the
# development database (FerretDB on SQLite) reads every stored chunk for each query on the chunks.
SHARED_PLAIN_SIZE = MiB + 200_000
SIZE = crypto.ciphertext_size(SHARED_PLAIN_SIZE)  # what GET /files/<id> answers
LAST = SIZE - 1


def latin1(text: str) -> str:
    """A header value as WSGI hands over what a client such as curl sends as UTF-8."""
    return text.encode("utf-8").decode("latin-1")


def counts(db: Any) -> tuple[int, int, int]:
    return (
        db.files.count_documents({}),
        db["ciphertext.files"].count_documents({}),
        db["ciphertext.chunks"].count_documents({}),
    )


def stored_chunks(db: Any, file_id: str) -> list[bytes]:
    cursor = db["ciphertext.chunks"].find({"files_id": file_id}, sort=[("n", 1)])
    return [bytes(chunk["data"]) for chunk in cursor]


def upload(client: FlaskClient, headers: dict[str, str], body: bytes, **kw: Any) -> Any:
    return client.post("/upload", data=body, headers=headers, **kw)


def upload_id(client: FlaskClient, headers: dict[str, str], body: bytes) -> str:
    response = upload(client, headers, body)
    assert response.status_code == 201, response.text
    return str(response.text)


def file_key(client: FlaskClient, headers: dict[str, str], file_id: str) -> bytes:
    response = client.get(f"/files/{file_id}/key", headers=headers)
    assert response.status_code == 200, response.text
    return base64.b64decode(response.text, validate=True)


def download(client: FlaskClient, headers: dict[str, str], file_id: str) -> bytes:
    response = client.get(f"/files/{file_id}", headers=headers)
    assert response.status_code == 200, response.text
    return bytes(response.data)


def decrypted(client: FlaskClient, headers: dict[str, str], file_id: str) -> bytes:
    """The file as its owner recovers it: ciphertext and key over HTTP, decrypted by Tink."""
    return tink_decrypt(file_key(client, headers, file_id), download(client, headers, file_id))


@dataclasses.dataclass
class World:
    app: Flask
    client: FlaskClient
    db: Any
    owner: dict[str, str]  # headers of the user who uploaded the shared file
    other: dict[str, str]  # headers of another logged-in user
    file_id: str
    plaintext: bytes
    stored: bytes  # the shared file's chunks as stored, joined
    key: bytes


@pytest.fixture(scope="module")
def shared_world(mongodb_uri: str, master_keys: str) -> Iterator[World]:
    settings = Settings.from_mapping(fresh_settings_values(mongodb_uri, master_keys))
    app = create_app(settings)
    storage = services_of(app).storage
    try:
        client = app.test_client()
        accounts = Accounts(client)
        owner = accounts.headers(accounts.token("owner"))
        other = accounts.headers(accounts.token("other"))
        plaintext = os.urandom(SHARED_PLAIN_SIZE)
        response = upload(client, {**owner, "X-File-Name": "report.pdf"}, plaintext)
        assert response.status_code == 201, response.text
        file_id = response.text
        stored = b"".join(stored_chunks(storage.db, file_id))
        assert len(stored) == SIZE
        key = file_key(client, owner, file_id)
        yield World(app, client, storage.db, owner, other, file_id, plaintext, stored, key)
    finally:
        storage.client.drop_database(settings.mongodb_db)
        storage.close()


@pytest.fixture
def world(shared_world: World) -> Iterator[World]:
    """The shared world; whatever a test adds to it is removed afterwards."""
    yield shared_world
    db, keep = shared_world.db, shared_world.file_id
    if db.files.count_documents({}) == 1 and db["ciphertext.files"].count_documents({}) == 1:
        return  # nothing added (both collections hold small documents: cheap to count)
    db["ciphertext.chunks"].delete_many({"files_id": {"$ne": keep}})
    db["ciphertext.files"].delete_many({"_id": {"$ne": keep}})
    db.files.delete_many({"_id": {"$ne": keep}})


# -- upload: the answer ----------------------------------------------------------------------------


def test_upload_answers_the_bare_id(world: World) -> None:
    before = counts(world.db)
    response = upload(world.client, world.owner, b"hello, world")
    assert response.status_code == 201
    assert response.mimetype == "text/plain"
    file_id = response.text
    assert str(uuid.UUID(file_id)) == file_id  # canonical, nothing around it
    assert uuid.UUID(file_id).version == 4
    assert urllib.parse.urlsplit(response.headers["Location"]).path == f"/files/{file_id}"
    assert world.client.get(response.headers["Location"], headers=world.owner).status_code == 200
    assert counts(world.db) == (before[0] + 1, before[1] + 1, before[2] + 1)
    record = world.db.files.find_one({"_id": file_id})
    owner = world.db.users.find_one({"name": "owner"})
    assert record["owner"] == owner["public_id"]
    assert record["status"] == "complete"
    assert record["size"] == len(b"hello, world")


def test_upload_answers_json_when_asked(world: World) -> None:
    body = os.urandom(5000)
    response = upload(
        world.client,
        {**world.owner, **JSON, "X-File-Name": "data.bin", "X-Content-Type": "image/png"},
        body,
    )
    assert response.status_code == 201
    assert response.mimetype == "application/json"
    answer = response.json
    assert set(answer) == UPLOAD_JSON_FIELDS
    assert uuid.UUID(answer["id"]).version == 4
    assert answer["size"] == 5000
    assert answer["stored_size"] == crypto.ciphertext_size(5000)
    assert answer["name"] == "data.bin"
    assert answer["content_type"] == "image/png"
    assert datetime.fromisoformat(answer["created_at"]).tzinfo is not None
    assert urllib.parse.urlsplit(response.headers["Location"]).path == f"/files/{answer['id']}"
    assert decrypted(world.client, world.owner, answer["id"]) == body


def test_ids_are_random_and_unique(world: World) -> None:
    ids = [upload_id(world.client, world.owner, b"same bytes") for _ in range(6)]
    assert len(set(ids)) == len(ids)
    for file_id in ids:
        assert uuid.UUID(file_id).version == 4
        assert str(uuid.UUID(file_id)) == file_id


MULTIPART = (
    b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\n'
    b"not parsed\r\n--XyZ--\r\n"
)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (None, b"\x00\x01 no content type"),
        ("application/octet-stream", os.urandom(3000)),
        ("text/plain; charset=utf-8", "plain text, ünïcödé\n".encode()),
        ("application/json", b'{"New_User_Name": "x", "a": [1, 2]}'),
        ("application/x-www-form-urlencoded", b"a=1&b=2&c=%20"),
        ("multipart/form-data; boundary=XyZ", MULTIPART),
    ],
)
def test_body_is_stored_verbatim_whatever_the_content_type(
    world: World, content_type: str | None, body: bytes
) -> None:
    headers = dict(world.owner)
    if content_type is not None:
        headers["Content-Type"] = content_type
    response = upload(world.client, {**headers, **JSON}, body)
    assert response.status_code == 201, response.text
    assert response.json["size"] == len(body)
    assert decrypted(world.client, world.owner, response.json["id"]) == body


# -- upload: metadata ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "name"),
    [
        ({}, None),
        ({"X-File-Name": "report.pdf"}, "report.pdf"),
        ({"X-File-Name": latin1("Отчёт — 2024 €.pdf")}, "Отчёт — 2024 €.pdf"),
        ({"X-File-Name": "x" * 255}, "x" * 255),
        ({"X-File-Name": latin1("ж" * 255)}, "ж" * 255),  # the limit counts characters
        ({"Content-Disposition": 'attachment; filename="cd.txt"'}, "cd.txt"),
        ({"Content-Disposition": 'form-data; name="file"; filename="form.bin"'}, "form.bin"),
        (
            {"Content-Disposition": "attachment; filename*=UTF-8''%E2%82%AC%20rates.txt"},
            "€ rates.txt",
        ),
        (
            {
                "Content-Disposition": "attachment; filename=\"naive.txt\"; filename*=UTF-8''na%C3%AFve.txt"
            },
            "naïve.txt",
        ),
        pytest.param(
            {
                "Content-Disposition": "attachment; filename*=UTF-8''na%C3%AFve.txt; filename=\"naive.txt\""
            },
            "naïve.txt",
            id="filename-star-first",
        ),
        ({"Content-Disposition": "attachment"}, None),
        (
            {"X-File-Name": "header.txt", "Content-Disposition": 'attachment; filename="cd.txt"'},
            "header.txt",
        ),
    ],
)
def test_file_name(world: World, headers: dict[str, str], name: str | None) -> None:
    response = upload(world.client, {**world.owner, **JSON, **headers}, b"named")
    assert response.status_code == 201, response.text
    file_id = response.json["id"]
    assert response.json["name"] == name
    assert world.db.files.find_one({"_id": file_id})["name"] == name
    disposition = world.client.get(f"/files/{file_id}", headers=world.owner).headers[
        "Content-Disposition"
    ]
    kind, options = parse_options_header(disposition)
    assert kind == "attachment"
    assert options["filename"] == f"{name or file_id}.enc"
    assert disposition.isascii()


@pytest.mark.parametrize(
    "environ",
    [
        {"HTTP_X_FILE_NAME": "evil\r\nSet-Cookie: x=1"},
        {"HTTP_X_FILE_NAME": "line\nbreak.txt"},
        {"HTTP_X_FILE_NAME": "cr\r.txt"},
        {"HTTP_X_FILE_NAME": "nul\x00.txt"},
        {"HTTP_X_FILE_NAME": "x" * 256},
        {"HTTP_X_FILE_NAME": latin1("ж" * 256)},
        {"HTTP_X_FILE_NAME": "\xff\xfe not utf-8"},
        {"HTTP_CONTENT_DISPOSITION": "attachment; filename*=UTF-8''evil%0D%0Ax.txt"},
        {"HTTP_CONTENT_DISPOSITION": "attachment; filename*=UTF-8''nul%00.txt"},
        {"HTTP_CONTENT_DISPOSITION": f'attachment; filename="{"y" * 256}"'},
    ],
)
def test_bad_file_name_is_400_and_stores_nothing(world: World, environ: dict[str, str]) -> None:
    # environ_overrides: the test client itself refuses CR/LF in header values.
    before = counts(world.db)
    response = world.client.post(
        "/upload", data=b"content", headers=world.owner, environ_overrides=environ
    )
    assert response.status_code == 400
    assert "file name" in response.text or "X-File-Name" in response.text
    assert counts(world.db) == before


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ("text/plain", "text/plain"),
        ("image/svg+xml", "image/svg+xml"),
        ("application/vnd.ms-excel", "application/vnd.ms-excel"),
        ("  Application/PDF ", "application/pdf"),
        ("", None),
    ],
)
def test_content_type_is_stored(world: World, value: str, stored: str | None) -> None:
    response = upload(world.client, {**world.owner, **JSON, "X-Content-Type": value}, b"typed")
    assert response.status_code == 201, response.text
    assert response.json["content_type"] == stored
    assert world.db.files.find_one({"_id": response.json["id"]})["content_type"] == stored


@pytest.mark.parametrize(
    "value",
    [
        "text",
        "text/",
        "/plain",
        "text/plain/x",
        "text plain",
        "<b>/x",
        "a" * 64 + "/b",
        "tëxt/plain",
    ],
)
def test_bad_content_type_is_400_and_stores_nothing(world: World, value: str) -> None:
    before = counts(world.db)
    response = upload(world.client, {**world.owner, "X-Content-Type": latin1(value)}, b"typed")
    assert response.status_code == 400
    assert "X-Content-Type" in response.text
    assert counts(world.db) == before


# -- encryption at rest ----------------------------------------------------------------------------


def test_each_file_gets_its_own_key(world: World) -> None:
    body = os.urandom(200_000)
    first = upload_id(world.client, world.owner, body)
    second = upload_id(world.client, world.owner, body)
    assert file_key(world.client, world.owner, first) != file_key(world.client, world.owner, second)
    assert download(world.client, world.owner, first) != download(world.client, world.owner, second)
    records = [world.db.files.find_one({"_id": i}) for i in (first, second)]
    assert records[0]["wrapped_key"] != records[1]["wrapped_key"]
    assert decrypted(world.client, world.owner, first) == body
    assert decrypted(world.client, world.owner, second) == body


PATTERN = b"CONFIDENTIAL plaintext that must never reach the disk!\n"


def test_stored_bytes_never_contain_the_plaintext(world: World) -> None:
    plaintext = (PATTERN * (int(2.5 * MiB) // len(PATTERN) + 1))[: int(2.5 * MiB)]
    file_id = upload_id(world.client, world.owner, plaintext)
    # The plaintext repeats with period len(PATTERN): these are all its 64-byte slices.
    windows = [(PATTERN * 3)[i : i + 64] for i in range(len(PATTERN))]
    assert all(window in plaintext for window in windows)
    stored = b"".join(stored_chunks(world.db, file_id))
    assert len(stored) == crypto.ciphertext_size(len(plaintext))
    documents = bson.encode(world.db.files.find_one({"_id": file_id})) + bson.encode(
        world.db["ciphertext.files"].find_one({"_id": file_id})
    )
    for window in windows:
        assert window not in stored
        assert window not in documents
    assert decrypted(world.client, world.owner, file_id) == plaintext


def test_chunks_are_the_ciphertext_segments(world: World) -> None:
    chunks = stored_chunks(world.db, world.file_id)
    assert len(chunks) == crypto.segment_count(SIZE) == 2
    assert [len(c) for c in chunks[:-1]] == [MiB] * (len(chunks) - 1)
    assert 0 < len(chunks[-1]) <= MiB
    gridfs_file = world.db["ciphertext.files"].find_one({"_id": world.file_id})
    assert gridfs_file["chunkSize"] == MiB
    assert gridfs_file["length"] == SIZE
    downloaded = download(world.client, world.other, world.file_id)
    for n, chunk in enumerate(chunks):
        assert downloaded[n * MiB : (n + 1) * MiB] == chunk
    assert downloaded[0] == crypto.HEADER_SIZE  # chunk 0 starts with the stream header


def test_record_holds_the_key_only_wrapped(world: World) -> None:
    record = world.db.files.find_one({"_id": world.file_id})
    assert set(record) == {
        "_id", "owner", "name", "content_type", "size", "stored_size",
        "wrapped_key", "kek_id", "status", "created_at", "header",
    }  # fmt: skip
    assert len(record["wrapped_key"]) == 12 + 32 + 16
    # The ciphertext's public header (salt and nonce prefix), as at the start of chunk 0.
    assert bytes(record["header"]) == world.stored[: crypto.HEADER_SIZE]
    settings = services_of(world.app).settings
    assert record["kek_id"] == settings.master_keys.active_id == "test1"
    assert record["size"] == SHARED_PLAIN_SIZE
    assert record["stored_size"] == SIZE
    key = world.key
    assert len(key) == 32
    everything = (
        bson.encode(record)
        + bson.encode(world.db["ciphertext.files"].find_one({"_id": world.file_id}))
        + world.stored
    )
    for form in (key, base64.b64encode(key), key.hex().encode(), base64.urlsafe_b64encode(key)):
        assert form not in everything


# -- round trips -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size",
    [
        1,
        FIRST_SEGMENT_PLAIN - 1,
        FIRST_SEGMENT_PLAIN,
        FIRST_SEGMENT_PLAIN + 1,
        FIRST_SEGMENT_PLAIN + LATER_SEGMENT_PLAIN - 1,
        FIRST_SEGMENT_PLAIN + LATER_SEGMENT_PLAIN,
        FIRST_SEGMENT_PLAIN + LATER_SEGMENT_PLAIN + 1,
        3 * MiB + 12_345,
    ],
)
def test_round_trip(world: World, size: int) -> None:
    plaintext = os.urandom(size)
    response = upload(world.client, {**world.owner, **JSON}, plaintext)
    assert response.status_code == 201, response.text
    answer = response.json
    assert answer["size"] == size
    assert answer["stored_size"] == crypto.ciphertext_size(size)
    ciphertext = download(world.client, world.other, answer["id"])
    assert len(ciphertext) == answer["stored_size"]
    key = file_key(world.client, world.owner, answer["id"])
    assert tink_decrypt(key, ciphertext) == plaintext
    pieces = [ciphertext[i : i + 65_536] for i in range(0, len(ciphertext), 65_536)]
    assert b"".join(crypto.decrypt_stream(key, pieces)) == plaintext


# -- envelope: wrapped keys and the master key ring ------------------------------------------------


@pytest.mark.parametrize("same_owner", [True, False], ids=["same-owner", "other-owner"])
def test_wrapped_key_copied_to_another_record_does_not_unwrap(
    client: FlaskClient, accounts: Accounts, db: Any, same_owner: bool
) -> None:
    alice = accounts.headers(accounts.token("alice"))
    bob = alice if same_owner else accounts.headers(accounts.token("bob"))
    source = upload_id(client, alice, b"source file")
    target = upload_id(client, bob, b"target file")
    source_key = file_key(client, alice, source)
    record = db.files.find_one({"_id": source})
    db.files.update_one(
        {"_id": target},
        {"$set": {"wrapped_key": record["wrapped_key"], "kek_id": record["kek_id"]}},
    )
    response = client.get(f"/files/{target}/key", headers=bob)
    assert response.status_code == 500
    assert response.text == INTERNAL_ERROR
    problem = client.get(f"/files/{target}/key", headers={**bob, **JSON})
    assert problem.status_code == 500
    assert problem.mimetype == "application/problem+json"
    assert problem.json["detail"] == "Internal server error."
    for leaked in (source_key, base64.b64encode(source_key), b"Traceback", b"test1", b"wrap"):
        assert leaked not in response.data
        assert leaked not in problem.data
    # The source file is untouched; the target's ciphertext is still served.
    assert file_key(client, alice, source) == source_key
    assert download(client, bob, target)


def test_rotated_ring_unwraps_old_keys_and_wraps_under_the_new(
    client: FlaskClient,
    accounts: Accounts,
    db: Any,
    settings_values: dict[str, str],
    master_keys: str,
) -> None:
    headers = accounts.headers(accounts.token())
    old_id = upload_id(client, headers, b"wrapped under test1")
    old_key = file_key(client, headers, old_id)
    rotated = create_app(
        Settings.from_mapping(
            {**settings_values, "MASTER_KEYS": f"{KeyRing.generate_entry('new')},{master_keys}"}
        )
    )
    try:
        other_instance = rotated.test_client()
        assert file_key(other_instance, headers, old_id) == old_key
        new_id = upload_id(other_instance, headers, b"wrapped under new")
        assert db.files.find_one({"_id": new_id})["kek_id"] == "new"
        assert db.files.find_one({"_id": old_id})["kek_id"] == "test1"
        assert decrypted(other_instance, headers, new_id) == b"wrapped under new"
        # The instance that lacks the new key cannot serve the new file's key.
        response = client.get(f"/files/{new_id}/key", headers=headers)
        assert response.status_code == 500
        assert response.text == INTERNAL_ERROR
    finally:
        services_of(rotated).storage.close()


def test_ring_without_the_old_key_answers_a_generic_500(
    client: FlaskClient, accounts: Accounts, settings_values: dict[str, str]
) -> None:
    headers = accounts.headers(accounts.token())
    old_id = upload_id(client, headers, b"wrapped under test1")
    without_old = create_app(
        Settings.from_mapping({**settings_values, "MASTER_KEYS": KeyRing.generate_entry("new")})
    )
    try:
        other_instance = without_old.test_client()
        response = other_instance.get(f"/files/{old_id}/key", headers=headers)
        assert response.status_code == 500
        assert response.text == INTERNAL_ERROR
        assert b"test1" not in response.data
        assert download(other_instance, headers, old_id)  # the ciphertext needs no key
    finally:
        services_of(without_old).storage.close()


# -- download --------------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["owner", "other"])
def test_download_by_any_logged_in_user(world: World, who: str) -> None:
    response = world.client.get(f"/files/{world.file_id}", headers=getattr(world, who))
    assert response.status_code == 200
    assert response.data == world.stored
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.headers["Content-Length"] == str(SIZE)
    assert response.headers["ETag"] == f'"{world.file_id}"'
    assert response.headers["Accept-Ranges"] == "bytes"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "Content-Range" not in response.headers
    kind, options = parse_options_header(response.headers["Content-Disposition"])
    assert (kind, options["filename"]) == ("attachment", "report.pdf.enc")
    assert tink_decrypt(world.key, response.data) == world.plaintext


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [
        ("bytes=0-0", 0, 0),
        ("bytes=10-20", 10, 20),
        ("bytes=1048570-1048590", 1_048_570, 1_048_590),  # across chunk 0 | chunk 1
        ("bytes=0-1048575", 0, MiB - 1),  # exactly chunk 0
        ("bytes=1048575-1048576", MiB - 1, MiB),  # the last byte of chunk 0, the first of chunk 1
        ("bytes=-100", SIZE - 100, LAST),
        ("bytes=1048576-", MiB, LAST),
        (f"bytes={LAST}-{LAST}", LAST, LAST),
        (f"bytes={LAST}-", LAST, LAST),
        (f"bytes=0-{SIZE + 1000}", 0, LAST),
        ("bytes=0-", 0, LAST),
        pytest.param(
            f"bytes=-{SIZE + 10}",
            0,
            LAST,
            id="suffix-longer-than-file",
        ),
    ],
)
def test_range(world: World, header: str, first: int, last: int) -> None:
    response = world.client.get(f"/files/{world.file_id}", headers={**world.other, "Range": header})
    assert response.status_code == 206
    assert response.headers["Content-Range"] == f"bytes {first}-{last}/{SIZE}"
    assert response.headers["Content-Length"] == str(last - first + 1)
    assert response.data == world.stored[first : last + 1]
    assert response.headers["ETag"] == f'"{world.file_id}"'


@pytest.mark.parametrize("header", [f"bytes={SIZE}-", f"bytes={SIZE + 1000}-{SIZE + 2000}"])
def test_unsatisfiable_range_is_416(world: World, header: str) -> None:
    response = world.client.get(f"/files/{world.file_id}", headers={**world.owner, "Range": header})
    assert response.status_code == 416
    assert response.headers["Content-Range"] == f"bytes */{SIZE}"


@pytest.mark.parametrize(
    "header",
    [
        "bytes=0-0,5-10",  # several ranges: the whole body, as RFC 9110 allows
        "bytes=0-99,-100",
        "bytes=abc",
        "bytes=5-3",
        "bytes=",
        "bytes",
        "bytes=1-2-3",
        "bytes=--5",
        pytest.param(
            "items=0-5",
            id="unknown-unit",
        ),
    ],
)
def test_range_ignored_gives_the_whole_body(world: World, header: str) -> None:
    response = world.client.get(f"/files/{world.file_id}", headers={**world.owner, "Range": header})
    assert response.status_code == 200
    assert "Content-Range" not in response.headers
    assert response.data == world.stored


@pytest.mark.parametrize(
    "value",
    [
        "{etag}",
        "*",
        '"something-else", {etag}',
        pytest.param(
            "W/{etag}",
            id="weak",
        ),
    ],
)
def test_if_none_match_with_the_etag_is_304(world: World, value: str) -> None:
    etag = f'"{world.file_id}"'
    response = world.client.get(
        f"/files/{world.file_id}",
        headers={**world.owner, "If-None-Match": value.format(etag=etag)},
    )
    assert response.status_code == 304
    assert response.data == b""
    assert response.headers["ETag"] == etag


def test_if_none_match_with_another_etag_is_200(world: World) -> None:
    response = world.client.get(
        f"/files/{world.file_id}", headers={**world.owner, "If-None-Match": '"another"'}
    )
    assert response.status_code == 200
    assert response.data == world.stored


@pytest.mark.parametrize(
    ("if_range", "partial"),
    [
        ("{etag}", True),
        ('"another"', False),
        ("Wed, 21 Oct 2015 07:28:00 GMT", False),  # no Last-Modified: a date never matches
        pytest.param(
            "W/{etag}",
            False,
            id="weak",
        ),
    ],
)
def test_if_range(world: World, if_range: str, partial: bool) -> None:
    headers = {
        **world.owner,
        "Range": "bytes=10-19",
        "If-Range": if_range.format(etag=f'"{world.file_id}"'),
    }
    response = world.client.get(f"/files/{world.file_id}", headers=headers)
    if partial:
        assert response.status_code == 206
        assert response.data == world.stored[10:20]
    else:
        assert response.status_code == 200
        assert response.data == world.stored


# -- the key ---------------------------------------------------------------------------------------


def test_owner_gets_the_key(world: World) -> None:
    response = world.client.get(f"/files/{world.file_id}/key", headers=world.owner)
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert response.headers["Cache-Control"] == "no-store"
    key = base64.b64decode(response.text, validate=True)
    assert len(key) == 32
    assert tink_decrypt(key, world.stored) == world.plaintext


def test_owner_gets_the_key_as_json(world: World) -> None:
    response = world.client.get(f"/files/{world.file_id}/key", headers={**world.owner, **JSON})
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    answer = response.json
    assert base64.b64decode(answer["key"], validate=True) == world.key
    assert answer["id"] == world.file_id
    assert answer["encoding"] == "base64"
    assert answer["algorithm"] == "AES256_GCM_HKDF_1MB"
    assert answer["format"] == crypto.FORMAT
    assert answer["segment_size"] == 1_048_576


@pytest.mark.parametrize("accept", [{}, JSON], ids=["text", "json"])
def test_someone_elses_key_looks_like_a_missing_file(world: World, accept: dict[str, str]) -> None:
    def answer(path: str, headers: dict[str, str]) -> tuple[int, str | None, bytes]:
        response = world.client.get(path, headers={**headers, **accept})
        return response.status_code, response.headers.get("Content-Type"), response.data

    not_yours = answer(f"/files/{world.file_id}/key", world.other)
    assert not_yours[0] == 404
    assert not_yours == answer(f"/files/{uuid.uuid4()}/key", world.other)
    assert not_yours == answer(f"/files/{uuid.uuid4()}/key", world.owner)
    assert not_yours == answer("/files/abc/key", world.other)
    assert not_yours == answer(f"/files/{world.file_id.upper()}/key", world.other)
    assert not_yours == answer(f"/files/{world.file_id.upper()}/key", world.owner)


def id_form(form: str, file_id: str) -> str:
    return {
        "abc": "abc",
        "dotdot": "../x",
        "upper": file_id.upper(),
        "braces": urllib.parse.quote("{" + file_id + "}"),
        "urn": f"urn:uuid:{file_id}",
        "hex": uuid.UUID(file_id).hex,
        "unknown": str(uuid.uuid4()),
        "empty-ish": "%20",
    }[form]


@pytest.mark.parametrize("route", ["/files/{}", "/files/{}/key"])
@pytest.mark.parametrize(
    "form", ["abc", "dotdot", "upper", "braces", "urn", "hex", "unknown", "empty-ish"]
)
def test_malformed_or_unknown_id_is_404(world: World, route: str, form: str) -> None:
    response = world.client.get(route.format(id_form(form, world.file_id)), headers=world.owner)
    assert response.status_code == 404
    if form != "dotdot":  # the router answers for a path that holds no id at all
        assert response.text == NO_SUCH_FILE


# -- authentication --------------------------------------------------------------------------------


def forged(world: World) -> dict[str, str]:
    """The owner's claims carrying the other user's (valid, but not matching) signature."""
    owner = world.owner["x-access-tokens"].rsplit(".", 1)[0]
    signature = world.other["x-access-tokens"].rsplit(".", 1)[1]
    return {"x-access-tokens": f"{owner}.{signature}"}


@pytest.mark.parametrize(
    ("method", "route"),
    [("POST", "/upload"), ("GET", "/files/{}"), ("GET", "/files/{}/key")],
)
@pytest.mark.parametrize("credentials", ["none", "garbage", "bearer-garbage", "forged"])
def test_without_a_valid_token_is_401(
    world: World, method: str, route: str, credentials: str
) -> None:
    headers = {
        "none": {},
        "garbage": {"x-access-tokens": "garbage"},
        "bearer-garbage": {"Authorization": "Bearer a.b.c"},
        "forged": forged(world),
    }[credentials]
    response = world.client.open(
        route.format(world.file_id), method=method, headers=headers, data=b"body"
    )
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert world.stored not in response.data
    assert base64.b64encode(world.key) not in response.data
    assert world.db.files.count_documents({}) == 1  # the shared file only


# -- bad uploads store nothing ---------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["application/octet-stream", "multipart/form-data"])
def test_empty_body_is_400_and_stores_nothing(
    client: FlaskClient, accounts: Accounts, db: Any, content_type: str
) -> None:
    headers = accounts.headers(accounts.token())
    before = counts(db)
    # An explicit (empty) stream: given a multipart type and no stream, the test client would
    # encode an empty form, which is not an empty body.
    response = client.post(
        "/upload",
        input_stream=io.BytesIO(b""),
        headers={**headers, "Content-Type": content_type, "Content-Length": "0"},
    )
    assert response.status_code == 400
    assert "empty" in response.text
    assert counts(db) == before == (0, 0, 0)


class RecordingStream:
    """A request body that notes every read, so a test can tell whether the app read it."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.position = 0
        self.reads: list[int] = []

    def read(self, size: int = -1) -> bytes:
        self.reads.append(size)
        end = len(self.data) if size < 0 else self.position + size
        block = self.data[self.position : end]
        self.position += len(block)
        return block

    def readline(self, size: int = -1) -> bytes:
        return self.read(size)

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = 0) -> int:
        self.position = {0: offset, 1: self.position + offset, 2: len(self.data) + offset}[whence]
        return self.position

    def close(self) -> None:
        pass


LIMIT = 1000


@pytest.fixture
def small_limit_client(settings_values: dict[str, str]) -> Iterator[tuple[FlaskClient, Any]]:
    app = create_app(Settings.from_mapping({**settings_values, "MAX_UPLOAD_BYTES": str(LIMIT)}))
    storage = services_of(app).storage
    try:
        yield app.test_client(), storage.db
    finally:
        storage.client.drop_database(settings_values["MONGODB_DB"])
        storage.close()


@pytest.mark.parametrize("size", [LIMIT + 1, 50 * LIMIT])
def test_declared_size_over_the_limit_is_413_before_reading(
    small_limit_client: tuple[FlaskClient, Any], size: int
) -> None:
    client, db = small_limit_client
    accounts = Accounts(client)
    headers = accounts.headers(accounts.token())
    body = RecordingStream(b"x" * size)
    response = client.post("/upload", input_stream=body, headers=headers)
    assert response.status_code == 413
    assert f"limit of {LIMIT} bytes" in response.text
    assert body.reads == []
    assert counts(db) == (0, 0, 0)


def test_body_of_exactly_the_limit_is_accepted(small_limit_client: tuple[FlaskClient, Any]) -> None:
    client, _ = small_limit_client
    accounts = Accounts(client)
    headers = accounts.headers(accounts.token())
    body = os.urandom(LIMIT)
    response = upload(client, {**headers, **JSON}, body)
    assert response.status_code == 201
    assert response.json["size"] == LIMIT
    assert decrypted(client, headers, response.json["id"]) == body


def test_chunked_body_over_the_limit_is_413_and_stores_nothing(
    small_limit_client: tuple[FlaskClient, Any],
) -> None:
    client, db = small_limit_client
    accounts = Accounts(client)
    headers = accounts.headers(accounts.token())
    response = client.post(
        "/upload",
        data=b"y" * (LIMIT + 1),
        headers={**headers, "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert response.status_code == 413
    assert counts(db) == (0, 0, 0)


# -- incomplete files are never served -------------------------------------------------------------


def test_pending_record_is_never_served(client: FlaskClient, accounts: Accounts, db: Any) -> None:
    headers = accounts.headers(accounts.token())
    file_id = upload_id(client, headers, b"complete, then marked pending")
    db.files.update_one({"_id": file_id}, {"$set": {"status": "pending"}})
    for path in (f"/files/{file_id}", f"/files/{file_id}/key"):
        response = client.get(path, headers=headers)
        assert (response.status_code, response.text) == (404, NO_SUCH_FILE)


def test_upload_in_progress_is_never_served(
    app: Flask, client: FlaskClient, accounts: Accounts, db: Any
) -> None:
    headers = accounts.headers(accounts.token())
    owner = db.users.find_one({"name": "User1"})["public_id"]
    seen: list[tuple[str, int, str]] = []
    block = os.urandom(MiB)

    def body() -> Iterator[bytes]:
        yield block
        yield block
        pending = db.files.find_one({"status": "pending"})
        for path in (f"/files/{pending['_id']}", f"/files/{pending['_id']}/key"):
            response = client.get(path, headers=headers)
            seen.append((pending["_id"], response.status_code, response.text))
        yield block

    record = services_of(app).files.upload(owner, body())
    assert [(file_id, status, text) for file_id, status, text in seen] == [
        (record.id, 404, NO_SUCH_FILE),
        (record.id, 404, NO_SUCH_FILE),
    ]
    assert decrypted(client, headers, record.id) == block * 3
