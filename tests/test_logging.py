"""Logs: JSON lines with request ids, security events, and never a secret.

A full session runs against the real server at LOG_LEVEL=DEBUG; then every line it logged is checked.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyrage import x25519

from tests.support.server import Server

pytestmark = pytest.mark.e2e

PASSWORD = "first-secret-password"
NEW_PASSWORD = "second-secret-password"


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    server = Server(tmp_path_factory.mktemp("logs"), {"LOG_LEVEL": "DEBUG"})
    secrets: list[str] = [PASSWORD, NEW_PASSWORD]
    try:

        def call(method: str, path: str, body: Any = None, **headers: str) -> tuple[int, bytes]:
            response, data = server.request(method, path, body, headers)
            return response.status, data

        assert (
            call("POST", "/registration", New_User_Name="alice", New_User_Password=PASSWORD)[0]
            == 201
        )
        assert (
            call("POST", "/registration", New_User_Name="bobby", New_User_Password=PASSWORD)[0]
            == 201
        )
        status, token = call("GET", "/login", User_Name="alice", User_Password=PASSWORD)
        secrets.append(token.decode())
        bob = call("GET", "/login", User_Name="bobby", User_Password=PASSWORD)[1].decode()
        secrets.append(bob)
        assert call("GET", "/login", User_Name="alice", User_Password="wrong-password-1")[0] == 401
        # A name crafted to forge a log line (headers cannot carry CR/LF; JSON can).
        forged = json.dumps({"User_Name": 'x\r\n{"level": "INFO"}', "User_Password": "nope-nope"})
        assert (
            call("GET", "/login", forged.encode(), **{"Content-Type": "application/json"})[0] == 401
        )
        content = os.urandom(16).hex().encode() * 1000  # a recognisable plaintext
        secrets.append(content[:32].decode())
        status, file_id = call("POST", "/upload", content, **{"x-access-tokens": token.decode()})
        assert status == 201
        status, key = call(
            "GET", f"/files/{file_id.decode()}/key", **{"x-access-tokens": token.decode()}
        )
        assert status == 200
        secrets += [key.decode(), base64.b64decode(key).hex()]
        assert call("GET", f"/files/{file_id.decode()}/key", **{"x-access-tokens": bob})[0] == 404
        # Sealed delivery: the identity's secret and the sealed answer never reach the log.
        identity = x25519.Identity.generate()
        secrets.append(str(identity))
        sealing = {"recipients": [str(identity.to_public())], "require_sealed": True}
        alice_json = {"x-access-tokens": token.decode(), "Content-Type": "application/json"}
        assert (
            call("PUT", "/account/recipients", json.dumps(sealing).encode(), **alice_json)[0] == 200
        )
        key_path = f"/files/{file_id.decode()}/key"
        status, sealed = call("GET", key_path, **{"x-access-tokens": token.decode()})
        assert status == 200 and key not in sealed
        secrets.append(sealed.decode().splitlines()[2])  # a line of the armored body
        assert call("GET", key_path + "?plain=1", **{"x-access-tokens": token.decode()})[0] == 403
        assert (
            call(
                "GET", f"/files/{file_id.decode()}/plaintext", **{"x-access-tokens": token.decode()}
            )[1]
            == content
        )
        assert call("GET", "/test_login", **{"x-access-tokens": "not.a.token"})[0] == 401
        body = json.dumps({"User_Password": PASSWORD, "New_User_Password": NEW_PASSWORD}).encode()
        assert (
            call(
                "PUT",
                "/account/password",
                body,
                **{"x-access-tokens": token.decode(), "Content-Type": "application/json"},
            )[0]
            == 200
        )
        new_token = call("GET", "/login", User_Name="alice", User_Password=NEW_PASSWORD)[1].decode()
        secrets.append(new_token)
        assert call("POST", "/logout", **{"x-access-tokens": new_token})[0] == 200
        values = dict(
            line.split("=", 1) for line in (server.var_dir / "secrets.env").read_text().splitlines()
        )
        secrets.append(values["SECRET_KEY"])
        secrets += [entry.split(":", 1)[1] for entry in values["MASTER_KEYS"].split(",")]
    finally:
        server.stop()
    yield {"log": server.log_path.read_text(), "secrets": secrets}


def app_lines(log: str) -> list[dict[str, Any]]:
    """The JSON lines (gunicorn's own start/stop lines are plain text and carry no request data)."""
    return [json.loads(line) for line in log.splitlines() if line.startswith("{")]


def test_no_secret_is_ever_logged(session: dict[str, Any]) -> None:
    log = session["log"]
    assert len(log) > 1000  # DEBUG: plenty was logged
    for secret in session["secrets"]:
        assert secret and secret not in log


def test_every_line_from_the_app_is_json(session: dict[str, Any]) -> None:
    for line in session["log"].splitlines():
        if not line.startswith("{"):
            # gunicorn's own lifecycle lines ("[time] [pid] [INFO] ...") and, at DEBUG, its
            # indented configuration dump: nothing from a request.
            assert line.startswith(("[", "  ")), line
            continue
        record = json.loads(line)
        assert {"time", "level", "logger", "message"} <= set(record)
        assert not line.startswith('{"level": "INFO"}')  # the forged line did not get through


def test_requests_are_logged_with_an_id(session: dict[str, Any]) -> None:
    requests = [r for r in app_lines(session["log"]) if r["logger"] == "cryptofiles.request"]
    assert len(requests) >= 14
    for record in requests:
        assert len(record["request_id"]) == 32
        assert "?" not in record["path"]
    assert len({r["request_id"] for r in requests}) == len(requests)


def test_security_events_are_logged(session: dict[str, Any]) -> None:
    events = [r for r in app_lines(session["log"]) if r["logger"] == "cryptofiles.security"]
    names = [r["event"] for r in events]
    assert names.count("login.failed") == 2
    assert "file.not_owner" in names
    assert "token.rejected" in names
    assert "account.recipients_changed" in names and "key.plain_refused" in names
    forged = next(
        r for r in events if r["event"] == "login.failed" and "\r\n" in r["details"]["user_name"]
    )
    assert forged["details"]["known_user"] is False


def test_request_id_is_returned_and_a_clean_client_id_kept(tmp_path: Path) -> None:
    server = Server(tmp_path / "var")
    try:
        response, _ = server.request("GET", "/healthz", None, {"X-Request-Id": "client-id-1234"})
        assert response.getheader("X-Request-Id") == "client-id-1234"
        response, _ = server.request("GET", "/healthz", None, {"X-Request-Id": "bad id\twith junk"})
        assert len(response.getheader("X-Request-Id")) == 32
    finally:
        server.stop()


def test_security_events_say_who_and_from_where(session: dict[str, Any]) -> None:
    """Services report events without Flask (audit.py); the web layer adds user and client."""
    events = [r for r in app_lines(session["log"]) if r["logger"] == "cryptofiles.security"]
    not_owner = next(r for r in events if r["event"] == "file.not_owner")
    assert len(not_owner["details"]["user"]) == 36  # bob's public id
    assert not_owner["details"]["client"] == "127.0.0.1"
    assert len(not_owner["request_id"]) == 32
    failed = next(r for r in events if r["event"] == "login.failed")
    assert "user" not in failed["details"]  # nobody is logged in on a failed login
    assert failed["details"]["client"] == "127.0.0.1"
