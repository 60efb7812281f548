"""End to end: the launcher behind `make run` (secrets, its own database, gunicorn), driven over HTTP.

The server is started exactly as `make run` starts it (``tests.support.server.Server``, on the one
harness ``cryptofiles.dev.harness``), only on a free port and with its var/ folder in a temp dir.
README's tagged curl blocks are run verbatim with bash, the port being the one change.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cryptofiles.dev.tink_oracle import tink_decrypt
from tests.support.server import ROOT, Server, new_token

pytestmark = pytest.mark.e2e

MAX_UPLOAD = 8 << 20  # small, so that over-limit cases are cheap


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("serve"), {"MAX_UPLOAD_BYTES": str(MAX_UPLOAD)})
    yield server
    server.stop()


def readme_block(tag: str) -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"<!-- e2e:{tag} -->\n```bash\n(.*?)```", text, re.S)
    assert match, f"README has no block tagged e2e:{tag}"
    return match.group(1)


def test_readme_blocks_can_run_one_after_another_on_one_server() -> None:
    """A reader runs README's blocks in order against one `make run`: no block may register a
    name another block registered (one block's account settings, e.g. require_sealed, would break
    the next). The tests run each block on its own server, so they would not see it."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"<!-- e2e:(\w+) -->\n```bash\n(.*?)```", text, re.S)
    owners: dict[str, str] = {}
    for tag, block in blocks:
        for name in set(re.findall(r"New_User_Name: ?(\w+)", block)):
            assert owners.setdefault(name, tag) == tag, (
                f"{name} in e2e:{owners[name]} and e2e:{tag}"
            )
    assert len(blocks) >= 5 and len(owners) >= 6


def run_bash(script: str, port: int) -> subprocess.CompletedProcess[str]:
    script = script.replace("localhost:5000", f"localhost:{port}")
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_seed_curl_examples_verbatim(server: Server) -> None:
    result = run_bash(readme_block("seed"), server.port)
    assert result.returncode == 0, result.stderr
    # The second command printed the bare token; the third example is run with it, as written.
    token = result.stdout.split("Registration is OK, your name: User1")[-1].strip()
    assert token.count(".") == 2
    third = 'curl -v -H "x-access-tokens:<token from login>" -X GET  localhost:5000/test_login'
    result = run_bash(third.replace("<token from login>", token), server.port)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Login is OK, your name: User1"
    assert "HTTP/1.1 200" in result.stderr


def test_readme_tour_verbatim(server: Server) -> None:
    result = run_bash(readme_block("tour"), server.port)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.rstrip().endswith("round trip OK")


def test_readme_sharing_verbatim(server: Server) -> None:
    result = run_bash(readme_block("sharing"), server.port)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "ben decrypted it" in lines
    assert lines[-2] == "404"  # ben's key request after the revocation
    history = json.loads(lines[-1])["events"]
    steps = [(e["action"], e["user"]["name"]) for e in history]
    assert steps == [("grant.revoke", "ann"), ("key", "ben"), ("download", "ben"),
                     ("grant.create", "ann")]  # fmt: skip


def test_a_grant_over_http_from_grant_to_revocation(server: Server) -> None:
    """The main flow on the real server: the grantee's key decrypts the file; after the
    revocation the grantee gets the 404 of an unknown file; the history names each step, the
    grantee and the request id each answer carried."""
    owner, grantee = new_token(server, "granter"), new_token(server, "grantee")
    payload = os.urandom(100_000)

    def ask(method: str, path: str, token: str, body: Any = None) -> Any:
        headers = {"x-access-tokens": token}
        if body is not None:
            headers["Content-Type"] = "application/json"
            body = json.dumps(body).encode()
        return server.request(method, path, body, headers)

    response, data = server.request("POST", "/upload", payload, {"x-access-tokens": owner})
    assert response.status == 201
    file_id = data.decode()
    ids = []
    response, _ = ask("POST", f"/files/{file_id}/grants", owner, {"user": "grantee"})
    assert response.status == 201
    ids.append(("grant.create", "granter", response.getheader("X-Request-Id")))
    response, ciphertext = ask("GET", f"/files/{file_id}", grantee)
    assert response.status == 200
    ids.append(("download", "grantee", response.getheader("X-Request-Id")))
    response, key = ask("GET", f"/files/{file_id}/key", grantee)
    assert response.status == 200
    ids.append(("key", "grantee", response.getheader("X-Request-Id")))
    assert tink_decrypt(base64.b64decode(key), ciphertext) == payload
    response, _ = ask("DELETE", f"/files/{file_id}/grants/grantee", owner)
    assert response.status == 204
    ids.append(("grant.revoke", "granter", response.getheader("X-Request-Id")))
    response, refused = ask("GET", f"/files/{file_id}/key", grantee)
    assert (response.status, refused) == (404, b"No such file.\n")
    response, data = ask("GET", f"/files/{file_id}/events", owner)
    assert response.status == 200
    history = json.loads(data)["events"]
    shown = [(e["action"], e["user"]["name"], e["request_id"]) for e in history]
    assert shown == list(reversed(ids))
    assert history[-1]["grantee_name"] == history[0]["grantee_name"] == "grantee"
    assert history[1]["sealed"] is False
    assert all(e["client"] == "127.0.0.1" for e in history)
    response, _ = ask("GET", f"/files/{file_id}/events", grantee)
    assert response.status == 404


def test_launcher_generated_secrets_once(server: Server) -> None:
    secrets_file = server.var_dir / "secrets.env"
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    values = dict(line.split("=", 1) for line in secrets_file.read_text().splitlines())
    assert set(values) == {"SECRET_KEY", "MASTER_KEYS"}
    log = server.log_path.read_text()
    assert "Generated SECRET_KEY, MASTER_KEYS into" in log
    for secret in values.values():
        assert secret not in log


def test_upload_headers_and_json_over_http(server: Server) -> None:
    token = new_token(server, "jsonuser")
    response, data = server.request(
        "POST", "/upload", b"hello",
        {"x-access-tokens": token, "Accept": "application/json", "X-File-Name": "h.txt"},
    )  # fmt: skip
    assert response.status == 201
    body = json.loads(data)
    assert body["size"] == 5 and body["name"] == "h.txt"
    assert response.getheader("Location") == f"/files/{body['id']}"


def test_chunked_upload_round_trip(server: Server, tmp_path: Path) -> None:
    token = new_token(server, "chunky")
    payload = os.urandom(3 * (1 << 20) + 17)
    (tmp_path / "in").write_bytes(payload)
    file_id = subprocess.run(
        ["curl", "-sf", "-H", f"x-access-tokens: {token}", "-H", "Transfer-Encoding: chunked",
         "--data-binary", f"@{tmp_path / 'in'}", f"{server.base}/upload"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    response, ciphertext = server.request(
        "GET", f"/files/{file_id}", None, {"x-access-tokens": token}
    )
    assert response.status == 200
    _, key = server.request("GET", f"/files/{file_id}/key", None, {"x-access-tokens": token})
    assert tink_decrypt(base64.b64decode(key), ciphertext) == payload


def _counts(server: Server) -> tuple[int, int, int]:
    client = server.database()
    try:
        db = client["cryptofiles"]
        return (
            db.files.count_documents({}),
            db["ciphertext.chunks"].count_documents({}),
            db["ciphertext.files"].count_documents({}),
        )
    finally:
        client.close()


def test_declared_oversize_is_413_before_reading(server: Server) -> None:
    token = new_token(server, "bigdecl")
    before = _counts(server)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            f"POST /upload HTTP/1.1\r\nHost: x\r\nx-access-tokens: {token}\r\n"
            f"Content-Length: {MAX_UPLOAD + 1}\r\n\r\n".encode()
        )
        answer = sock.recv(4096).decode()
    assert answer.startswith("HTTP/1.1 413"), answer
    assert _counts(server) == before


def test_chunked_oversize_is_413_and_stores_nothing(server: Server, tmp_path: Path) -> None:
    token = new_token(server, "bigchunk")
    before = _counts(server)
    (tmp_path / "big").write_bytes(os.urandom(MAX_UPLOAD + 1))
    result = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", f"x-access-tokens: {token}",
         "-H", "Transfer-Encoding: chunked", "--data-binary", f"@{tmp_path / 'big'}",
         f"{server.base}/upload"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.stdout == "413"
    assert _counts(server) == before


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_cut_off_upload_leaves_nothing(server: Server, framing: str) -> None:
    token = new_token(server, f"cutoff-{framing}")
    before = _counts(server)
    part = os.urandom(3 << 20)
    if framing == "chunked":
        head, body = "Transfer-Encoding: chunked", f"{len(part):x}\r\n".encode() + part + b"\r\n"
    else:
        head, body = f"Content-Length: {6 << 20}", part
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            f"POST /upload HTTP/1.1\r\nHost: x\r\nx-access-tokens: {token}\r\n{head}\r\n\r\n".encode()
        )
        sock.sendall(body)
        sock.shutdown(socket.SHUT_WR)  # the client stops sending mid-body
        answer = http.client.HTTPResponse(sock)
        answer.begin()
        assert answer.status == 400
        assert b"cut off" in answer.read()
    assert _counts(server) == before


def test_stopping_the_launcher_stops_its_database(tmp_path: Path) -> None:
    server = Server(tmp_path / "var")
    token = new_token(server, "restart")
    pid = int((tmp_path / "var" / "db" / "server.pid").read_text())
    secrets_before = (tmp_path / "var" / "secrets.env").read_text()
    server.stop()
    assert server.process.returncode == 0
    time.sleep(0.5)
    assert not Path(f"/proc/{pid}").exists() or b"Z" in Path(f"/proc/{pid}/stat").read_bytes()
    # A second start reuses the secrets and the data: the old token still works.
    again = Server(tmp_path / "var")
    try:
        assert (tmp_path / "var" / "secrets.env").read_text() == secrets_before
        response, data = again.request("GET", "/test_login", None, {"x-access-tokens": token})
        assert response.status == 200 and data == b"Login is OK, your name: restart"
    finally:
        again.stop()


def test_the_harness_tells_the_server_from_its_database(server: Server) -> None:
    """The bench and the fault tests sample "the server" and "the database" separately; the launcher
    runs gunicorn beside every process of the database (FerretDB, and PostgreSQL's postmaster)."""

    def cmdline(pid: int) -> str:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()

    master = server.gunicorn_master()
    assert "gunicorn" in cmdline(master)
    serving = set(server.server_pids())
    database = server.db_pids()
    assert database and not serving & set(database)
    assert server.db_pid in database
    assert all("gunicorn" not in cmdline(pid) for pid in database)
