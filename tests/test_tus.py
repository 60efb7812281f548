"""Resumable uploads over tus 1.0 (/uploads/), through the app against the real database.

Each rule of the issue has a test here: the protocol's headers and extensions, offsets that move
by whole stored segments (no plaintext kept between requests), one request at a time (409), a
wrong offset (409), checksums (460), expiry and the sweep, ownership (404 for everyone else),
termination, the size limit and the quota, resuming on another app instance, and the finished
upload being an ordinary file. The clients we did not write (tuspy, tus-js-client) are in
test_tus_interop.py; the byte-level check during a slow upload over HTTP in test_tus_e2e.py.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cryptofiles import crypto
from cryptofiles.web import services_of
from tests.support.api import Accounts, auth

TUS = {"Tus-Resumable": "1.0.0"}
BODY = {"Content-Type": "application/offset+octet-stream"}
FIRST = crypto.plaintext_segment_size(0)  # 1_048_520 plaintext bytes in segment 0
LATER = crypto.plaintext_segment_size(1)  # 1_048_560 in every later one


def create(client: FlaskClient, token: str, length: int, **headers: str) -> str:
    response = client.post(
        "/uploads/", headers={**TUS, **auth(token), "Upload-Length": str(length), **headers}
    )
    assert response.status_code == 201, response.text
    return response.headers["Location"].rsplit("/", 1)[1]


def patch(
    client: FlaskClient, token: str, upload_id: str, offset: int, data: bytes, **headers: str
) -> Any:
    return client.patch(
        f"/uploads/{upload_id}",
        data=data,
        headers={**TUS, **BODY, **auth(token), "Upload-Offset": str(offset), **headers},
    )


def head(client: FlaskClient, token: str, upload_id: str) -> Any:
    return client.head(f"/uploads/{upload_id}", headers={**TUS, **auth(token)})


def plaintext(client: FlaskClient, token: str, file_id: str) -> bytes:
    response = client.get(f"/files/{file_id}/plaintext", headers=auth(token))
    assert response.status_code == 200, response.text
    return response.data


@pytest.fixture
def token(accounts: Accounts) -> str:
    return accounts.token("tus-user")


def test_discovery_needs_no_token_and_names_the_extensions(client: FlaskClient, app: Flask) -> None:
    response = client.options("/uploads/")
    assert response.status_code == 204
    assert response.headers["Tus-Resumable"] == "1.0.0"
    assert response.headers["Tus-Version"] == "1.0.0"
    assert set(response.headers["Tus-Extension"].split(",")) == {
        "creation", "creation-with-upload", "termination", "expiration", "checksum"
    }  # fmt: skip
    assert response.headers["Tus-Max-Size"] == str(services_of(app).settings.max_upload_bytes)
    assert response.headers["Tus-Checksum-Algorithm"] == "sha1,sha256"


def test_requests_without_the_protocol_version_are_refused(
    client: FlaskClient, token: str, db: Any
) -> None:
    for version in (None, "0.2.2"):
        headers = {**auth(token), "Upload-Length": "10"}
        if version:
            headers["Tus-Resumable"] = version
        response = client.post("/uploads/", headers=headers)
        assert response.status_code == 412
        assert response.headers["Tus-Version"] == "1.0.0"
    assert db.files.count_documents({}) == 0


def test_every_route_needs_a_token(client: FlaskClient, token: str) -> None:
    upload_id = create(client, token, 10)
    assert client.post("/uploads/", headers={**TUS, "Upload-Length": "10"}).status_code == 401
    assert client.head(f"/uploads/{upload_id}", headers=TUS).status_code == 401
    response = client.patch(
        f"/uploads/{upload_id}", data=b"x", headers={**TUS, **BODY, "Upload-Offset": "0"}
    )
    assert response.status_code == 401
    assert client.delete(f"/uploads/{upload_id}", headers=TUS).status_code == 401
    assert head(client, token, upload_id).headers["Upload-Offset"] == "0"


def test_creation_answers_location_expiry_and_head_echoes_the_metadata(
    client: FlaskClient, token: str
) -> None:
    metadata = "filename " + base64.b64encode("résumé.pdf".encode()).decode()
    metadata += ",filetype " + base64.b64encode(b"application/pdf").decode() + ",other"
    before = datetime.now(UTC)
    response = client.post(
        "/uploads/",
        headers={**TUS, **auth(token), "Upload-Length": "5", "Upload-Metadata": metadata},
    )
    assert response.status_code == 201
    assert response.headers["Tus-Resumable"] == "1.0.0"
    assert response.headers["Location"].startswith("http://localhost/uploads/")
    assert response.headers["Upload-Offset"] == "0"  # no body was sent
    assert "Content-Type" not in response.headers  # tus answers are all headers
    expires = datetime.strptime(response.headers["Upload-Expires"], "%a, %d %b %Y %H:%M:%S GMT")
    expected = before + timedelta(hours=24)
    assert abs(expires.replace(tzinfo=UTC) - expected) < timedelta(seconds=5)

    upload_id = response.headers["Location"].rsplit("/", 1)[1]
    answer = head(client, token, upload_id)
    assert answer.status_code == 200
    assert answer.headers["Upload-Offset"] == "0"
    assert answer.headers["Upload-Length"] == "5"
    assert answer.headers["Cache-Control"] == "no-store"
    pairs = dict(p.split(" ") for p in answer.headers["Upload-Metadata"].split(","))
    assert base64.b64decode(pairs["filename"]).decode() == "résumé.pdf"
    assert base64.b64decode(pairs["filetype"]) == b"application/pdf"

    assert patch(client, token, upload_id, 0, b"hello").status_code == 204
    info = client.get(f"/files/{upload_id}/info", headers=auth(token)).json
    assert (info["name"], info["content_type"], info["size"]) == (
        "résumé.pdf",
        "application/pdf",
        5,
    )


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Upload-Length": "0"}, 400),  # empty files are not stored, as with POST /upload
        ({"Upload-Defer-Length": "1"}, 400),
        ({"Upload-Length": "10", "Upload-Concat": "partial"}, 400),  # not offered: no parts
        ({}, 400),
        ({"Upload-Length": "-1"}, 400),
        ({"Upload-Length": "1e3"}, 400),
        ({"Upload-Length": "9" * 40}, 400),
        ({"Upload-Length": "10", "Upload-Metadata": "filename !!!"}, 400),
        ({"Upload-Length": "10", "Upload-Metadata": "filename YQ==,filename YQ=="}, 400),
        ({"Upload-Length": "10", "Upload-Metadata": "filetype " + base64.b64encode(b"x").decode()}, 400),
        ({"Upload-Length": "10", "Upload-Metadata": "filename " + base64.b64encode(b"a\x1bb").decode()}, 400),
    ],
)  # fmt: skip
def test_bad_creations_are_refused_and_store_nothing(
    client: FlaskClient, token: str, db: Any, headers: dict[str, str], status: int
) -> None:
    response = client.post("/uploads/", headers={**TUS, **auth(token), **headers})
    assert response.status_code == status, response.text
    assert db.files.count_documents({}) == 0


def test_the_size_limit_and_the_quota_are_checked_at_creation(
    make_app: Any, accounts: Accounts, db: Any
) -> None:
    small = make_app(MAX_UPLOAD_BYTES="1000", QUOTA_BYTES="500").test_client()
    token = Accounts(small).token("limited")
    over_limit = small.post("/uploads/", headers={**TUS, **auth(token), "Upload-Length": "1001"})
    assert over_limit.status_code == 413
    over_quota = small.post("/uploads/", headers={**TUS, **auth(token), "Upload-Length": "501"})
    assert over_quota.status_code == 413
    assert "quota" in over_quota.text
    assert db.files.count_documents({}) == 0


def test_a_patch_stores_whole_segments_and_reports_their_end(
    client: FlaskClient, token: str, db: Any
) -> None:
    data = os.urandom(FIRST + LATER + 5000)
    upload_id = create(client, token, len(data))
    # Segment 0 and 1000 bytes more: only segment 0 is stored, the 1000 bytes are dropped.
    response = patch(client, token, upload_id, 0, data[: FIRST + 1000])
    assert response.status_code == 204, response.text
    assert response.headers["Upload-Offset"] == str(FIRST)
    assert "Upload-Expires" in response.headers
    assert db["ciphertext.chunks"].count_documents({"files_id": upload_id}) == 1
    assert head(client, token, upload_id).headers["Upload-Offset"] == str(FIRST)
    # Not servable yet: an unfinished upload is no file.
    assert client.get(f"/files/{upload_id}", headers=auth(token)).status_code == 404
    assert upload_id not in [
        f["id"] for f in client.get("/files", headers=auth(token)).json["files"]
    ]

    response = patch(client, token, upload_id, FIRST, data[FIRST:])
    assert response.status_code == 204, response.text
    assert response.headers["Upload-Offset"] == str(len(data))
    assert "Upload-Expires" not in response.headers
    assert plaintext(client, token, upload_id) == data
    # The ciphertext is the format's, to the byte: the key decrypts it whole.
    key = base64.b64decode(client.get(f"/files/{upload_id}/key", headers=auth(token)).text)
    ciphertext = client.get(f"/files/{upload_id}", headers=auth(token)).data
    assert len(ciphertext) == crypto.ciphertext_size(len(data))
    assert b"".join(crypto.decrypt_stream(key, [ciphertext])) == data
    listed = client.get("/files", headers=auth(token)).json["files"]
    assert [f["id"] for f in listed] == [upload_id]


@pytest.mark.parametrize("size", [1, FIRST - 1, FIRST, FIRST + 1, FIRST + LATER])
def test_every_size_class_round_trips(client: FlaskClient, token: str, size: int) -> None:
    data = os.urandom(size)
    upload_id = create(client, token, size)
    response = patch(client, token, upload_id, 0, data)
    assert response.status_code == 204
    assert response.headers["Upload-Offset"] == str(size)
    assert plaintext(client, token, upload_id) == data
    # HEAD of a finished upload: the offset is the length.
    answer = head(client, token, upload_id)
    assert (answer.headers["Upload-Offset"], answer.headers["Upload-Length"]) == (str(size),) * 2


def test_creation_with_upload(client: FlaskClient, token: str) -> None:
    data = os.urandom(FIRST + 10)
    response = client.post(
        "/uploads/",
        data=data[: FIRST + 3],
        headers={**TUS, **BODY, **auth(token), "Upload-Length": str(len(data))},
    )
    assert response.status_code == 201, response.text
    assert response.headers["Upload-Offset"] == str(FIRST)
    upload_id = response.headers["Location"].rsplit("/", 1)[1]
    assert patch(client, token, upload_id, FIRST, data[FIRST:]).status_code == 204
    assert plaintext(client, token, upload_id) == data


def test_creation_with_a_body_that_stores_nothing_still_creates(
    client: FlaskClient, token: str, db: Any
) -> None:
    data = os.urandom(FIRST + 10)
    response = client.post(
        "/uploads/",
        data=data[:1000],
        headers={**TUS, **BODY, **auth(token), "Upload-Length": str(len(data))},
    )
    assert response.status_code == 201, response.text
    assert response.headers["Upload-Offset"] == "0"
    upload_id = response.headers["Location"].rsplit("/", 1)[1]
    assert patch(client, token, upload_id, 0, data).status_code == 204
    assert plaintext(client, token, upload_id) == data


def test_a_creation_whose_body_fails_leaves_no_upload(
    client: FlaskClient, token: str, db: Any
) -> None:
    """Without the answer the client cannot know the upload's location: nothing may linger."""
    response = client.post(
        "/uploads/",
        data=os.urandom(11),
        headers={**TUS, **BODY, **auth(token), "Upload-Length": "10"},
    )
    assert response.status_code == 400
    assert db.files.count_documents({}) == 0
    assert db["ciphertext.chunks"].count_documents({}) == 0


def test_a_body_that_cannot_reach_a_segment_boundary_is_refused(
    client: FlaskClient, token: str, db: Any
) -> None:
    upload_id = create(client, token, 3 * LATER)
    response = patch(client, token, upload_id, 0, os.urandom(FIRST - 1))
    assert response.status_code == 400
    assert str(FIRST) in response.text  # says how much to send
    assert head(client, token, upload_id).headers["Upload-Offset"] == "0"
    assert db["ciphertext.chunks"].count_documents({"files_id": upload_id}) == 0


def test_a_wrong_offset_is_a_conflict_and_changes_nothing(
    client: FlaskClient, token: str, db: Any
) -> None:
    data = os.urandom(FIRST + 100)
    upload_id = create(client, token, len(data))
    for offset in (1, FIRST, len(data)):
        response = patch(client, token, upload_id, offset, data[offset:] or b"x")
        assert response.status_code == 409, offset
    assert head(client, token, upload_id).headers["Upload-Offset"] == "0"
    assert db["ciphertext.chunks"].count_documents({"files_id": upload_id}) == 0
    assert patch(client, token, upload_id, 0, data).status_code == 204


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Content-Type": "application/octet-stream"}, 415),
        ({"Upload-Offset": "x"}, 400),
        ({"Upload-Checksum": "md5 " + base64.b64encode(b"0" * 16).decode()}, 400),
        ({"Upload-Checksum": "sha256 not-base64"}, 400),
        ({"Upload-Checksum": "sha1 " + base64.b64encode(b"0" * 32).decode()}, 400),
        ({"Tus-Resumable": "2.0.0"}, 412),
    ],
)
def test_bad_patches_are_refused_and_change_nothing(
    client: FlaskClient, token: str, db: Any, headers: dict[str, str], status: int
) -> None:
    data = os.urandom(100)
    upload_id = create(client, token, len(data))
    response = client.patch(
        f"/uploads/{upload_id}",
        data=data,
        headers={**TUS, **BODY, **auth(token), "Upload-Offset": "0", **headers},
    )
    assert response.status_code == status, response.text
    assert head(client, token, upload_id).headers["Upload-Offset"] == "0"
    assert db["ciphertext.chunks"].count_documents({}) == 0


def test_a_body_past_the_length_is_refused(client: FlaskClient, token: str, db: Any) -> None:
    upload_id = create(client, token, 10)
    assert patch(client, token, upload_id, 0, os.urandom(11)).status_code == 400
    assert head(client, token, upload_id).headers["Upload-Offset"] == "0"
    assert db["ciphertext.chunks"].count_documents({}) == 0


@pytest.mark.parametrize("algorithm", ["sha1", "sha256", "SHA256"])
def test_a_matching_checksum_is_accepted(client: FlaskClient, token: str, algorithm: str) -> None:
    """sha1 too: tus 1.0 makes it the one algorithm every server with checksums must take."""
    data = os.urandom(FIRST + 7)
    upload_id = create(client, token, len(data))
    digest = base64.b64encode(hashlib.new(algorithm.lower(), data).digest()).decode()
    checksum = {"Upload-Checksum": f"{algorithm} {digest}"}
    response = patch(client, token, upload_id, 0, data, **checksum)
    assert response.status_code == 204, response.text
    assert plaintext(client, token, upload_id) == data


def test_a_checksum_mismatch_is_460_and_ends_the_upload(
    client: FlaskClient, token: str, db: Any
) -> None:
    data = os.urandom(2 * LATER)
    upload_id = create(client, token, len(data))
    wrong = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    response = patch(client, token, upload_id, 0, data, **{"Upload-Checksum": f"sha256 {wrong}"})
    assert response.status_code == 460
    assert "start a new upload" in response.text
    # Its segments were sealed already; other bytes under their nonces must never follow them.
    assert head(client, token, upload_id).status_code == 404
    assert db["ciphertext.chunks"].count_documents({"files_id": upload_id}) == 0
    assert db.files.count_documents({"_id": upload_id}) == 0


def test_another_request_holding_the_upload_gets_409(
    client: FlaskClient, token: str, app: Flask
) -> None:
    data = os.urandom(FIRST + 1)
    upload_id = create(client, token, len(data))
    storage = services_of(app).storage
    now = datetime.now(UTC)
    assert storage.uploads.lock(upload_id, "another-request", now, now - timedelta(minutes=1))
    response = patch(client, token, upload_id, 0, data)
    assert response.status_code == 409
    assert "Another request" in response.text
    assert head(client, token, upload_id).headers["Upload-Offset"] == "0"
    # Once it ends, the upload takes bytes again.
    storage.uploads.unlock(upload_id, "another-request")
    assert patch(client, token, upload_id, 0, data).status_code == 204


def test_a_dead_requests_lock_is_taken_over(client: FlaskClient, token: str, app: Flask) -> None:
    data = os.urandom(10)
    upload_id = create(client, token, len(data))
    storage = services_of(app).storage
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    assert storage.uploads.lock(upload_id, "dead-request", long_ago, long_ago)
    assert patch(client, token, upload_id, 0, data).status_code == 204
    assert storage.uploads.locks.count_documents({}) == 0


def test_a_segment_stored_by_a_request_that_died_is_kept_if_sent_again_alike(
    client: FlaskClient, token: str, app: Flask, db: Any
) -> None:
    """A request stored chunk 0 and died before recording it: the same bytes again are fine,
    other bytes for it end the upload (never two ciphertexts under one nonce at rest)."""
    data = os.urandom(FIRST + 50)
    upload_id = create(client, token, len(data))
    upload = services_of(app).storage.uploads.get(upload_id)
    assert upload is not None
    key = services_of(app).files.key(upload.file)
    chunk0 = crypto.SegmentSealer(key, upload.header).seal(0, data[:FIRST], last=False)
    services_of(app).storage.chunks.put(upload_id, 0, chunk0)

    assert patch(client, token, upload_id, 0, data).status_code == 204
    assert plaintext(client, token, upload_id) == data

    other_id = create(client, token, len(data))
    other = services_of(app).storage.uploads.get(other_id)
    assert other is not None
    other_key = services_of(app).files.key(other.file)
    stored = crypto.SegmentSealer(other_key, other.header).seal(0, data[:FIRST], last=False)
    services_of(app).storage.chunks.put(other_id, 0, stored)
    changed = bytes([data[0] ^ 1]) + data[1:]
    response = patch(client, token, other_id, 0, changed)
    assert response.status_code == 409
    assert "start a new one" in response.text
    assert head(client, token, other_id).status_code == 404
    assert db["ciphertext.chunks"].count_documents({"files_id": other_id}) == 0


def test_an_upload_is_its_owners_only(client: FlaskClient, accounts: Accounts, db: Any) -> None:
    owner = accounts.token("owner")
    other = accounts.token("other")
    data = os.urandom(FIRST + 3)
    upload_id = create(client, owner, len(data))
    unknown = "00000000-0000-4000-8000-000000000000"
    for target in (upload_id, unknown):
        assert head(client, other, target).status_code == 404
        response = patch(client, other, target, 0, data)
        assert (response.status_code, response.text) == (404, "No such upload.\n")
        response = client.delete(f"/uploads/{target}", headers={**TUS, **auth(other)})
        assert (response.status_code, response.text) == (404, "No such upload.\n")
    assert head(client, owner, upload_id).headers["Upload-Offset"] == "0"
    assert patch(client, owner, upload_id, 0, data).status_code == 204
    # Finished, it is a file with the usual rules: the key is the owner's only.
    assert client.get(f"/files/{upload_id}/key", headers=auth(other)).status_code == 404
    assert head(client, other, upload_id).status_code == 404


def test_termination_removes_the_upload_and_its_chunks(
    client: FlaskClient, token: str, db: Any
) -> None:
    data = os.urandom(FIRST + 100)
    upload_id = create(client, token, len(data))
    assert patch(client, token, upload_id, 0, data[: FIRST + 10]).status_code == 204
    assert db["ciphertext.chunks"].count_documents({"files_id": upload_id}) == 1
    response = client.delete(f"/uploads/{upload_id}", headers={**TUS, **auth(token)})
    assert response.status_code == 204
    assert response.headers["Tus-Resumable"] == "1.0.0"
    assert head(client, token, upload_id).status_code == 404
    assert patch(client, token, upload_id, FIRST, data[FIRST:]).status_code == 404
    assert db["ciphertext.chunks"].count_documents({"files_id": upload_id}) == 0
    assert db.files.count_documents({"_id": upload_id}) == 0


def test_terminating_a_finished_upload_deletes_the_file(
    client: FlaskClient, token: str, db: Any
) -> None:
    upload_id = create(client, token, 3)
    assert patch(client, token, upload_id, 0, b"abc").status_code == 204
    response = client.delete(f"/uploads/{upload_id}", headers={**TUS, **auth(token)})
    assert response.status_code == 204
    assert client.get(f"/files/{upload_id}", headers=auth(token)).status_code == 404
    assert db["ciphertext.chunks"].count_documents({}) == 0


def test_an_expired_upload_is_gone_and_the_sweep_removes_its_chunks(
    client: FlaskClient, token: str, app: Flask, db: Any
) -> None:
    data = os.urandom(FIRST + 100)
    upload_id = create(client, token, len(data))
    assert patch(client, token, upload_id, 0, data[:FIRST]).status_code == 204
    # Its expiry passes (the record's, moved back: the app reads the real time).
    db.files.update_one(
        {"_id": upload_id}, {"$set": {"expires_at": datetime.now(UTC) - timedelta(seconds=1)}}
    )
    assert head(client, token, upload_id).status_code == 404
    assert patch(client, token, upload_id, FIRST, data[FIRST:]).status_code == 404
    assert services_of(app).uploads.sweep() == 1
    assert db["ciphertext.chunks"].count_documents({"files_id": upload_id}) == 0
    assert db.files.count_documents({"_id": upload_id}) == 0


def test_the_expiry_is_configurable(make_app: Any) -> None:
    client = make_app(UPLOAD_EXPIRY_HOURS="2").test_client()
    token = Accounts(client).token("expiry")
    response = client.post("/uploads/", headers={**TUS, **auth(token), "Upload-Length": "5"})
    expires = datetime.strptime(response.headers["Upload-Expires"], "%a, %d %b %Y %H:%M:%S GMT")
    remaining = expires.replace(tzinfo=UTC) - datetime.now(UTC)
    assert timedelta(hours=1, minutes=58) < remaining <= timedelta(hours=2)


def test_an_upload_resumes_on_another_instance(
    client: FlaskClient, token: str, make_app: Any
) -> None:
    """All of an upload's state is in the database: another app (process, host) continues it."""
    data = os.urandom(FIRST + LATER + 99)
    upload_id = create(client, token, len(data))
    assert patch(client, token, upload_id, 0, data[: FIRST + 5]).status_code == 204
    other = make_app().test_client()
    assert head(other, token, upload_id).headers["Upload-Offset"] == str(FIRST)
    response = patch(other, token, upload_id, FIRST, data[FIRST:])
    assert response.status_code == 204
    assert plaintext(client, token, upload_id) == data


def test_a_finished_upload_counts_in_the_quota(make_app: Any) -> None:
    client = make_app(QUOTA_BYTES="150").test_client()
    token = Accounts(client).token("quota")
    upload_id = create(client, token, 100)
    assert patch(client, token, upload_id, 0, os.urandom(100)).status_code == 204
    response = client.post("/uploads/", headers={**TUS, **auth(token), "Upload-Length": "51"})
    assert response.status_code == 413
    assert create(client, token, 50)


def test_deleting_the_account_removes_its_unfinished_uploads(
    client: FlaskClient, accounts: Accounts, db: Any
) -> None:
    token = accounts.token("leaving")
    upload_id = create(client, token, FIRST + 1)
    assert patch(client, token, upload_id, 0, os.urandom(FIRST)).status_code == 204
    response = client.delete(
        "/account", headers={**auth(token), "User_Password": "correct horse battery"}
    )
    assert response.status_code == 200, response.text
    assert db.files.count_documents({"_id": upload_id}) == 0
    assert db["ciphertext.chunks"].count_documents({"files_id": upload_id}) == 0


class CallingBody(io.BytesIO):
    """A request body that calls ``then`` once ``at`` bytes of it were read (an event mid-PATCH)."""

    def __init__(self, data: bytes, at: int, then: Any) -> None:
        super().__init__(data)
        self.at, self.then = at, then

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self._check()
        return chunk

    def readinto(self, buffer: Any) -> int:
        count = super().readinto(buffer)
        self._check()
        return count

    def _check(self) -> None:
        if self.then is not None and self.tell() >= self.at:
            self.then, then = None, self.then
            then()


def patch_stream(
    client: FlaskClient, token: str, upload_id: str, body: io.BytesIO, length: int
) -> Any:
    """A PATCH from offset 0 whose body is read from ``body`` as the server asks for it."""
    headers = {**TUS, **BODY, **auth(token), "Upload-Offset": "0", "Content-Length": str(length)}
    return client.patch(f"/uploads/{upload_id}", input_stream=body, headers=headers)


@pytest.mark.parametrize("at", [FIRST // 2, FIRST + LATER + 10])
def test_an_upload_terminated_while_a_patch_runs_leaves_nothing(
    client: FlaskClient, token: str, app: Flask, db: Any, at: int
) -> None:
    """Another request removes the upload (DELETE, or the sweep) while bytes still arrive, early
    or as the last ones come: the PATCH answers 404 and no chunk stays behind."""
    data = os.urandom(FIRST + LATER + 20)
    upload_id = create(client, token, len(data))
    body = CallingBody(data, at, lambda: services_of(app).files.discard(upload_id))
    response = patch_stream(client, token, upload_id, body, len(data))
    assert response.status_code == 404, response.text
    assert db.files.count_documents({}) == 0
    assert db["ciphertext.chunks"].count_documents({}) == 0
    assert db["ciphertext.files"].count_documents({}) == 0


def test_a_patch_that_stores_after_a_terminations_first_steps_leaves_nothing(
    client: FlaskClient, token: str, app: Flask, db: Any
) -> None:
    """The interleaving that once left a chunk behind: a DELETE has shredded the record and
    removed the chunks but not yet the record when the PATCH stores one more segment. The PATCH
    cannot record it (the record is no longer resumable) and removes it itself."""
    storage = services_of(app).storage
    data = os.urandom(FIRST + LATER + 20)
    upload_id = create(client, token, len(data))

    def first_steps_of_a_termination() -> None:
        storage.files.shred(upload_id, datetime.now(UTC))
        storage.chunks.remove(upload_id)

    body = CallingBody(data, FIRST // 2, first_steps_of_a_termination)
    response = patch_stream(client, token, upload_id, body, len(data))
    assert response.status_code == 404, response.text
    storage.files.discard(upload_id)  # the termination's last step
    assert db["ciphertext.chunks"].count_documents({}) == 0
    assert db.files.count_documents({}) == 0


def test_a_request_taken_over_neither_records_nor_completes(
    client: FlaskClient, token: str, app: Flask, db: Any
) -> None:
    """A request whose lock was taken over (its client went silent, the next one came) stops at
    its next renewal: it never moves the offset under its successor nor completes the upload."""
    storage = services_of(app).storage
    data = os.urandom(FIRST + LATER + 20)
    upload_id = create(client, token, len(data))

    def taken_over() -> None:
        lock = storage.uploads.locks.find_one({"_id": upload_id})
        assert lock is not None  # this PATCH holds it
        storage.uploads.unlock(upload_id, lock["token"])
        assert storage.uploads.lock(upload_id, "successor", datetime.now(UTC), datetime.now(UTC))

    body = CallingBody(data, FIRST + 10, taken_over)
    response = patch_stream(client, token, upload_id, body, len(data))
    assert response.status_code == 409, response.text
    assert "took this upload over" in response.text
    assert head(client, token, upload_id).headers["Upload-Offset"] == "0"
    assert db["ciphertext.files"].count_documents({}) == 0  # not completed
    # The successor's lock is untouched; once it ends, the upload goes on from its offset.
    assert storage.uploads.locks.find_one({"_id": upload_id})["token"] == "successor"
    storage.uploads.unlock(upload_id, "successor")
    assert patch(client, token, upload_id, 0, data).status_code == 204
    assert plaintext(client, token, upload_id) == data


def test_a_silent_requests_lock_lapses_after_a_few_seconds(app: Flask, token: str) -> None:
    """A network drop the server has not noticed must not hold an upload for the idle limit."""
    uploads = services_of(app).uploads
    assert uploads.lock_stale <= timedelta(seconds=10)
    storage = services_of(app).storage
    now = datetime.now(UTC)
    assert storage.uploads.lock("some-upload", "silent", now - uploads.lock_stale, now)
    assert not storage.uploads.lock("some-upload", "next", now, now - uploads.lock_stale * 2)
    assert storage.uploads.lock("some-upload", "next", now, now - uploads.lock_stale)
