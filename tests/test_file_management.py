"""File management: listing, info, deletion (crypto-shredding) and the owner's plaintext stream."""

from __future__ import annotations

import base64
import os
from typing import Any

import pytest
from flask.testing import FlaskClient

from cryptofiles import crypto
from cryptofiles.web import services_of
from tests.support.api import Accounts

FIRST = crypto.SEGMENT_SIZE - crypto.HEADER_SIZE - crypto.TAG_SIZE  # plaintext in segment 0
PLAIN = crypto.SEGMENT_SIZE - crypto.TAG_SIZE  # plaintext in later segments


def upload(client: FlaskClient, token: str, data: bytes, **headers: str) -> str:
    response = client.post("/upload", data=data, headers={"x-access-tokens": token, **headers})
    assert response.status_code == 201, response.text
    return str(response.text)


@pytest.fixture
def alice(accounts: Accounts) -> str:
    return accounts.token("alice")


@pytest.fixture
def bob(accounts: Accounts) -> str:
    return accounts.token("bob")


def get(client: FlaskClient, path: str, token: str, **headers: str) -> Any:
    return client.get(path, headers={"x-access-tokens": token, **headers})


# -- listing ------------------------------------------------------------------------------------


def test_list_is_own_files_newest_first_paginated(
    client: FlaskClient, alice: str, bob: str
) -> None:
    ids = [upload(client, alice, f"file {i}".encode()) for i in range(5)]
    upload(client, bob, b"not alice's")
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        query = "/files?limit=2" + (f"&cursor={cursor}" if cursor else "")
        response = get(client, query, alice)
        assert response.status_code == 200
        body = response.json
        assert len(body["files"]) <= 2
        seen += [f["id"] for f in body["files"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == list(reversed(ids))


def test_list_survives_a_deletion_between_pages(client: FlaskClient, alice: str) -> None:
    ids = [upload(client, alice, f"f{i}".encode()) for i in range(4)]
    first = get(client, "/files?limit=2", alice).json
    assert [f["id"] for f in first["files"]] == [ids[3], ids[2]]
    client.delete(f"/files/{ids[3]}", headers={"x-access-tokens": alice})
    second = get(client, f"/files?limit=2&cursor={first['next_cursor']}", alice).json
    assert [f["id"] for f in second["files"]] == [ids[1], ids[0]]


def test_list_of_nobody_is_empty(client: FlaskClient, alice: str) -> None:
    assert get(client, "/files", alice).json == {"files": [], "next_cursor": None}


def cursor_of(text: str) -> str:
    """A cursor as the server makes them (unpadded urlsafe base64 of "millis/id"), of any text."""
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


A_UUID = "00000000-0000-4000-8000-000000000000"


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=1001",
        "limit=abc",
        "limit=-1",
        "cursor=%%%",
        # Digits to str.isdigit, not to us: superscript two, Arabic-Indic three, fullwidth five.
        "limit=%C2%B2",
        "limit=%D9%A3",
        "limit=%EF%BC%95",
        "limit=+5",
        "limit=%205",
        "limit=1_0",
        "limit=" + "9" * 5000,  # past int()'s 4300-digit guard: a ValueError of its own
    ],
)
def test_list_bad_parameters(client: FlaskClient, alice: str, query: str) -> None:
    response = get(client, f"/files?{query}", alice)
    assert response.status_code == 400
    assert "limit" in response.text or "cursor" in response.text


@pytest.mark.parametrize(
    "cursor",
    [
        "bm9wZQ",
        "MTIzL25vdC1hLXV1aWQ",
        "x",
        cursor_of(f"99999999999999999999/{A_UUID}"),  # past year 9999
        cursor_of(f"-99999999999999999/{A_UUID}"),  # before year 1
        cursor_of(f"{'9' * 5000}/{A_UUID}"),
        cursor_of(f"%C2%B2/{A_UUID}"),
        cursor_of(f"1e3/{A_UUID}"),
        "%C3%A9t%C3%A9",  # not ASCII: not base64 at all
        "%FF%FE",
        base64.urlsafe_b64encode(b"\xff\xfe/" + A_UUID.encode()).decode(),  # not UTF-8
    ],
)
def test_list_bad_cursor(client: FlaskClient, alice: str, cursor: str) -> None:
    response = get(client, f"/files?cursor={cursor}", alice)
    assert response.status_code == 400
    assert "cursor" in response.text


# -- info -----------------------------------------------------------------------------------------


def test_info_is_metadata_for_the_owner_only(client: FlaskClient, alice: str, bob: str) -> None:
    file_id = upload(
        client, alice, b"x" * 1000, **{"X-File-Name": "a.txt", "X-Content-Type": "text/plain"}
    )
    info = get(client, f"/files/{file_id}/info", alice).json
    assert info["id"] == file_id
    assert info["name"] == "a.txt"
    assert info["content_type"] == "text/plain"
    assert info["size"] == 1000
    assert info["stored_size"] == crypto.ciphertext_size(1000)
    assert "created_at" in info
    assert not {"wrapped_key", "kek_id", "owner", "status", "_id"} & set(info)
    assert get(client, f"/files/{file_id}/info", bob).status_code == 404


# -- delete ---------------------------------------------------------------------------------------


def test_delete_removes_everything(client: FlaskClient, alice: str, bob: str, db: Any) -> None:
    file_id = upload(client, alice, os.urandom(3 << 20))
    assert client.delete(f"/files/{file_id}", headers={"x-access-tokens": bob}).status_code == 404
    assert db["ciphertext.chunks"].count_documents({"files_id": file_id}) == 4
    response = client.delete(f"/files/{file_id}", headers={"x-access-tokens": alice})
    assert response.status_code == 204
    assert db.files.count_documents({}) == 0
    assert db["ciphertext.chunks"].count_documents({}) == 0
    assert db["ciphertext.files"].count_documents({}) == 0
    for path in (f"/files/{file_id}", f"/files/{file_id}/key", f"/files/{file_id}/info"):
        assert get(client, path, alice).status_code == 404
    assert client.delete(f"/files/{file_id}", headers={"x-access-tokens": alice}).status_code == 404


def test_interrupted_delete_is_unservable_and_swept(
    app: Any, client: FlaskClient, alice: str, db: Any
) -> None:
    file_id = upload(client, alice, os.urandom(2 << 20))
    storage = services_of(app).storage
    files = services_of(app).files
    storage.files.shred(file_id, files.clock())  # a crash right after the first step
    record = db.files.find_one({"_id": file_id})
    assert "wrapped_key" not in record  # the key is gone first: what remains is unreadable
    for path in (f"/files/{file_id}", f"/files/{file_id}/key", f"/files/{file_id}/plaintext"):
        assert get(client, path, alice).status_code == 404
    assert files.sweep().unfinished == 1
    assert db.files.count_documents({}) == 0
    assert db["ciphertext.chunks"].count_documents({}) == 0


# -- plaintext ------------------------------------------------------------------------------------


def test_plaintext_for_the_owner(client: FlaskClient, alice: str, bob: str) -> None:
    data = os.urandom(FIRST + PLAIN + 10)
    file_id = upload(client, alice, data, **{"X-File-Name": "r.bin", "X-Content-Type": "image/png"})
    response = get(client, f"/files/{file_id}/plaintext", alice)
    assert response.status_code == 200
    assert response.data == data
    assert response.mimetype == "image/png"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Content-Disposition"].startswith('attachment; filename="r.bin"')
    assert response.content_length == len(data)
    assert get(client, f"/files/{file_id}/plaintext", bob).status_code == 404


SIZE = FIRST + 2 * PLAIN + 100  # four segments


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (0, 0),
        (0, FIRST - 1),  # exactly segment 0
        (FIRST - 1, FIRST),  # across the first boundary
        (FIRST, FIRST + PLAIN - 1),  # exactly segment 1
        (FIRST + PLAIN - 5, FIRST + 2 * PLAIN + 5),  # segments 1..3
        (SIZE - 1, SIZE - 1),  # the last byte
        (12345, SIZE - 1),
    ],
)
def test_plaintext_ranges(client: FlaskClient, alice: str, start: int, end: int) -> None:
    data = os.urandom(SIZE)
    file_id = upload(client, alice, data)
    response = get(client, f"/files/{file_id}/plaintext", alice, Range=f"bytes={start}-{end}")
    assert response.status_code == 206
    assert response.headers["Content-Range"] == f"bytes {start}-{end}/{SIZE}"
    assert response.data == data[start : end + 1]


def test_plaintext_range_reads_only_the_segments_it_touches(
    app: Any, client: FlaskClient, alice: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(SIZE)
    file_id = upload(client, alice, data)
    storage = services_of(app).storage
    read = storage.chunks.read
    asked: list[tuple[int, int]] = []

    def spy(fid: str, length: int, first: int, last: int) -> Any:
        asked.append((first, last))
        return read(fid, length, first, last)

    monkeypatch.setattr(storage.chunks, "read", spy)
    start = FIRST + PLAIN + 7  # inside segment 2
    response = get(client, f"/files/{file_id}/plaintext", alice, Range=f"bytes={start}-{start + 9}")
    assert response.data == data[start : start + 10]
    assert asked == [(2, 2)]  # segment 2 only: the header is kept in the record


def test_plaintext_unsatisfiable_range(client: FlaskClient, alice: str) -> None:
    file_id = upload(client, alice, b"0123456789")
    response = get(client, f"/files/{file_id}/plaintext", alice, Range="bytes=10-")
    assert response.status_code == 416
    assert response.headers["Content-Range"] == "bytes */10"


def test_tampered_chunk_never_yields_its_plaintext(
    app: Any, client: FlaskClient, alice: str, db: Any
) -> None:
    data = os.urandom(FIRST + PLAIN + 10)
    file_id = upload(client, alice, data)
    chunk = db["ciphertext.chunks"].find_one({"files_id": file_id, "n": 1})
    flipped = bytearray(chunk["data"])
    flipped[100] ^= 1
    db["ciphertext.chunks"].update_one({"_id": chunk["_id"]}, {"$set": {"data": bytes(flipped)}})
    response = get(client, f"/files/{file_id}/plaintext", alice)
    with pytest.raises(crypto.DecryptionError):
        response.get_data()
