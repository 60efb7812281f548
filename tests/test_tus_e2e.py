"""Resumable uploads end to end: the real server as `make run` starts it, over raw HTTP.

The byte-level rule (no plaintext at rest, ever): during a slow upload, cut once and resumed, the
database never holds a chunk or a field containing any part of a plaintext segment. And what needs a
real server: two PATCH requests at once (one wins, the other gets 409), a PATCH cut off mid-body
(its whole segments stay, the offset says so), and README's tagged block, verbatim.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cryptofiles import crypto
from tests.support.server import Server, new_token
from tests.test_e2e import readme_block, run_bash

pytestmark = pytest.mark.e2e

FIRST = crypto.plaintext_segment_size(0)
LATER = crypto.plaintext_segment_size(1)
TUS = {"Tus-Resumable": "1.0.0"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("tus"))
    yield server
    server.stop()


def create(server: Server, token: str, length: int) -> str:
    headers = {**TUS, "x-access-tokens": token, "Upload-Length": str(length)}
    response, body = server.request("POST", "/uploads/", None, headers)
    assert response.status == 201, body
    return str(response.getheader("Location").rsplit("/", 1)[1])


def offset_of(server: Server, token: str, upload_id: str) -> int:
    response, _ = server.request(
        "HEAD", f"/uploads/{upload_id}", None, {**TUS, "x-access-tokens": token}
    )
    assert response.status == 200
    return int(response.getheader("Upload-Offset"))


def start_patch(
    server: Server, token: str, upload_id: str, offset: int, length: int
) -> socket.socket:
    """A PATCH whose head is sent and whose body the caller sends, as slowly as it likes."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    head = (
        f"PATCH /uploads/{upload_id} HTTP/1.1\r\nHost: localhost\r\nTus-Resumable: 1.0.0\r\n"
        f"x-access-tokens: {token}\r\nContent-Type: application/offset+octet-stream\r\n"
        f"Upload-Offset: {offset}\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
    )
    sock.sendall(head.encode())
    return sock


def answer_of(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def stored_values(client: Any) -> Iterator[bytes]:
    """Every bytes and text value of every document of every database the server uses."""
    for name in client.list_database_names():
        if name in ("admin", "config", "local"):
            continue
        database = client[name]
        for collection in database.list_collection_names():
            for doc in database[collection].find():
                yield from _values(doc)


def _values(node: Any) -> Iterator[bytes]:
    if isinstance(node, dict):
        for value in node.values():
            yield from _values(value)
    elif isinstance(node, list):
        for value in node:
            yield from _values(value)
    elif isinstance(node, bytes):
        yield bytes(node)
    elif isinstance(node, str):
        yield node.encode("utf-8", "surrogatepass")


def test_no_plaintext_segment_is_ever_in_the_database_during_a_slow_upload(
    server: Server, request: pytest.FixtureRequest
) -> None:
    token = new_token(server, "byte-level")
    data = os.urandom(FIRST + 2 * LATER + 12345)
    starts = [0, FIRST, FIRST + LATER, FIRST + 2 * LATER]
    segments = [data[a:b] for a, b in zip(starts, [*starts[1:], len(data)], strict=True)]
    # Pieces of every plaintext segment (its start, middle and end): none may be stored anywhere.
    probes = [s[i : i + 48] for s in segments for i in (0, len(s) // 2, len(s) - 48)]
    client = server.database()
    request.addfinalizer(client.close)
    scans = 0

    def scan() -> None:
        nonlocal scans
        scans += 1
        for value in stored_values(client):
            assert value not in segments, "a plaintext segment is in the database"
            assert not any(probe in value for probe in probes), "plaintext is in the database"

    upload_id = create(server, token, len(data))
    # First request: segment 0 and half of segment 1, in pieces, then the connection is cut.
    sent = FIRST + LATER // 2
    sock = start_patch(server, token, upload_id, 0, len(data))
    for at in range(0, sent, 128 << 10):
        sock.sendall(data[at : min(at + (128 << 10), sent)])
        time.sleep(0.05)
        scan()
    sock.close()
    deadline = time.monotonic() + 20
    while offset_of(server, token, upload_id) != FIRST and time.monotonic() < deadline:
        time.sleep(0.2)
    assert offset_of(server, token, upload_id) == FIRST  # half a segment is never kept
    scan()
    # The rest, resumed from the server's offset, slowly.
    sock = start_patch(server, token, upload_id, FIRST, len(data) - FIRST)
    for at in range(FIRST, len(data), 128 << 10):
        sock.sendall(data[at : at + (128 << 10)])
        time.sleep(0.02)
        scan()
    status, headers, body = answer_of(sock)
    assert (status, headers["upload-offset"]) == (204, str(len(data))), body
    scan()
    assert scans > 25  # every piece sent, both requests
    response, plain = server.request(
        "GET", f"/files/{upload_id}/plaintext", None, {"x-access-tokens": token}
    )
    assert response.status == 200
    assert plain == data


def test_two_patches_at_once_one_wins_and_the_other_gets_409(server: Server) -> None:
    token = new_token(server, "racer")
    data = os.urandom(FIRST + 100)
    upload_id = create(server, token, len(data))
    first = start_patch(server, token, upload_id, 0, len(data))
    first.sendall(data[:1000])  # the first request holds the upload while its body trickles
    time.sleep(0.5)
    # The second is answered from its head alone: the server does not read a body it refuses.
    second = start_patch(server, token, upload_id, 0, len(data))
    status, _, body = answer_of(second)
    assert status == 409, body
    assert b"Another request" in body
    first.sendall(data[1000:])
    status, headers, body = answer_of(first)
    assert (status, headers["upload-offset"]) == (204, str(len(data))), body


def test_a_patch_cut_off_keeps_its_whole_segments(server: Server) -> None:
    token = new_token(server, "cut")
    data = os.urandom(FIRST + 3 * LATER)
    upload_id = create(server, token, len(data))
    sock = start_patch(server, token, upload_id, 0, len(data))
    sock.sendall(data[: FIRST + 2 * LATER + 777])
    time.sleep(0.5)
    sock.shutdown(socket.SHUT_RDWR)
    sock.close()
    expected = FIRST + 2 * LATER
    deadline = time.monotonic() + 20
    while offset_of(server, token, upload_id) != expected and time.monotonic() < deadline:
        time.sleep(0.2)
    assert offset_of(server, token, upload_id) == expected
    sock = start_patch(server, token, upload_id, expected, len(data) - expected)
    sock.sendall(data[expected:])
    status, headers, _ = answer_of(sock)
    assert (status, headers["upload-offset"]) == (204, str(len(data)))
    response, plain = server.request(
        "GET", f"/files/{upload_id}/plaintext", None, {"x-access-tokens": token}
    )
    assert response.status == 200
    assert plain == data


def test_readme_resumable_uploads_verbatim(server: Server) -> None:
    result = run_bash(readme_block("tus"), server.port)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "resumable upload OK" in lines, result.stdout


def test_an_upload_resumes_after_its_worker_is_killed_and_the_server_restarts(
    tmp_path: Path,
) -> None:
    """kill -9 mid-PATCH: the dead request's lock stays, and so may segments it stored but had not
    recorded yet. After a restart the upload resumes from the recorded offset: the lock is taken
    over once stale, the parts sent again are matched against what is stored, and the file is
    whole."""
    env = {"IDLE_TIMEOUT_SECONDS": "3"}  # a dead request's lock is stale after 2 * 3 + 10 s
    server = Server(tmp_path, env)
    try:
        token = new_token(server, "crash")
        data = os.urandom(FIRST + 5 * LATER + 321)
        upload_id = create(server, token, len(data))
        sock = start_patch(server, token, upload_id, 0, len(data))
        sock.sendall(data[: FIRST + 3 * LATER + 99])
        time.sleep(1.5)  # stored, maybe recorded
        for pid in server.workers():
            os.kill(pid, signal.SIGKILL)
        sock.close()
        server.stop()
        server = Server(tmp_path, env)  # the same secrets and database
        offset = offset_of(server, token, upload_id)
        assert offset in {0, FIRST} | {FIRST + k * LATER for k in range(1, 4)}
        client = server.database()
        try:  # the killed request never let go of the upload
            assert client["cryptofiles"]["upload_locks"].count_documents({"_id": upload_id}) == 1
        finally:
            client.close()
        deadline = time.monotonic() + 60
        while True:
            sock = start_patch(server, token, upload_id, offset, len(data) - offset)
            # A refusal (409) comes before the body is read: send it only when none came.
            if not select.select([sock], [], [], 1.0)[0]:
                sock.sendall(data[offset:])
            status, headers, body = answer_of(sock)
            if status != 409 or time.monotonic() > deadline:
                break
            time.sleep(2)  # the dead request's lock, until it is stale
        assert (status, headers.get("upload-offset")) == (204, str(len(data))), body
        response, plain = server.request(
            "GET", f"/files/{upload_id}/plaintext", None, {"x-access-tokens": token}
        )
        assert (response.status, plain == data) == (200, True)
    finally:
        server.stop()


def test_a_refused_patch_body_is_not_read_to_its_end(server: Server) -> None:
    """A PATCH refused from its head (here a wrong offset) is answered at once, and the server
    closes the connection instead of reading the announced 512 MiB to keep it alive."""
    token = new_token(server, "refused")
    upload_id = create(server, token, 10)
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(
        f"PATCH /uploads/{upload_id} HTTP/1.1\r\nHost: localhost\r\nTus-Resumable: 1.0.0\r\n"
        f"x-access-tokens: {token}\r\nContent-Type: application/offset+octet-stream\r\n"
        f"Upload-Offset: 5\r\nContent-Length: {512 << 20}\r\n\r\n".encode()
    )
    sock.sendall(os.urandom(64 << 10))
    started = time.monotonic()
    status, _, body = answer_of(sock)  # reads until the server closes the connection
    assert status == 409, body
    assert time.monotonic() - started < 5
