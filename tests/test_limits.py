"""Abuse limits: rate limits (429 + Retry-After, shared by every instance) and per-user quota."""

from __future__ import annotations

import os
from typing import Any

import pytest
from flask.testing import FlaskClient

from cryptofiles.config import Settings
from tests.conftest import PASSWORD, Accounts


def login(client: FlaskClient, name: str, password: str, address: str = "10.0.0.1") -> Any:
    return client.get(
        "/login",
        headers={"User_Name": name, "User_Password": password},
        environ_base={"REMOTE_ADDR": address},
    )


def test_login_limit_per_name_answers_429_with_retry_after(make_app: Any) -> None:
    client = make_app(RATE_LIMIT_LOGIN_NAME="3/minute").test_client()
    Accounts(client).register("victim")
    for _ in range(3):
        assert login(client, "victim", "wrong guess!").status_code == 401
    response = login(client, "victim", "wrong guess!")
    assert response.status_code == 429
    assert 0 < int(response.headers["Retry-After"]) <= 60
    assert "Too Many Requests" in response.text or "limit" in response.text.lower()
    # The limit is per name: another user is not affected...
    Accounts(client).register("bystander")
    assert login(client, "bystander", PASSWORD).status_code == 200
    # ...and it holds for another app instance sharing the database.
    other = make_app(RATE_LIMIT_LOGIN_NAME="3/minute").test_client()
    assert login(other, "victim", PASSWORD).status_code == 429


def test_login_limit_per_address(make_app: Any) -> None:
    client = make_app(RATE_LIMIT_LOGIN_ADDRESS="4/minute").test_client()
    for i in range(4):
        assert login(client, f"user{i}", "whatever1", address="10.9.9.9").status_code == 401
    assert login(client, "user9", "whatever1", address="10.9.9.9").status_code == 429
    assert login(client, "user9", "whatever1", address="10.8.8.8").status_code == 401


def test_limit_window_ends(make_app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A brute-forcer cannot lock the real user out for longer than the window."""
    client = make_app(RATE_LIMIT_LOGIN_NAME="2/second").test_client()
    Accounts(client).register("victim")
    for _ in range(2):
        login(client, "victim", "wrong guess!")
    assert login(client, "victim", PASSWORD).status_code == 429
    import time

    time.sleep(1.1)
    assert login(client, "victim", PASSWORD).status_code == 200


def test_registration_limit_per_address(make_app: Any, db: Any) -> None:
    client = make_app(RATE_LIMIT_REGISTRATION="2/hour").test_client()
    for name in ("one", "two"):
        response = client.post(
            "/registration",
            headers={"New_User_Name": name, "New_User_Password": PASSWORD},
            environ_base={"REMOTE_ADDR": "10.1.1.1"},
        )
        assert response.status_code == 201
    response = client.post(
        "/registration",
        headers={"New_User_Name": "three", "New_User_Password": PASSWORD},
        environ_base={"REMOTE_ADDR": "10.1.1.1"},
    )
    assert response.status_code == 429
    assert "Retry-After" in response.headers
    assert db.users.count_documents({"name": "three"}) == 0


def test_key_fetch_limit_per_user(make_app: Any) -> None:
    client = make_app(RATE_LIMIT_KEYS="3/minute").test_client()
    accounts = Accounts(client)
    token = accounts.token("keen")
    file_id = client.post("/upload", data=b"data", headers=accounts.headers(token)).text
    for _ in range(3):
        assert (
            client.get(f"/files/{file_id}/key", headers=accounts.headers(token)).status_code == 200
        )
    response = client.get(f"/files/{file_id}/key", headers=accounts.headers(token))
    assert response.status_code == 429
    assert "Retry-After" in response.headers


def test_429_is_problem_json_when_asked(make_app: Any) -> None:
    client = make_app(RATE_LIMIT_LOGIN_NAME="1/minute").test_client()
    login(client, "someone", "wrong guess!")
    response = client.get(
        "/login",
        headers={"User_Name": "someone", "User_Password": "x" * 9, "Accept": "application/json"},
        environ_base={"REMOTE_ADDR": "10.0.0.1"},
    )
    assert response.status_code == 429
    assert response.mimetype == "application/problem+json"
    assert response.json["status"] == 429


def test_bad_rate_limit_setting_refused(settings_values: dict[str, str]) -> None:
    from cryptofiles.config import ConfigError

    with pytest.raises(ConfigError, match="RATE_LIMIT_KEYS"):
        Settings.from_mapping({**settings_values, "RATE_LIMIT_KEYS": "lots"})


# -- quota -----------------------------------------------------------------------------------------


def counts(db: Any) -> tuple[int, int]:
    return db.files.count_documents({}), db["ciphertext.chunks"].count_documents({})


def test_quota_refuses_what_does_not_fit_and_stores_nothing(make_app: Any, db: Any) -> None:
    client = make_app(QUOTA_BYTES=str(3 << 20)).test_client()
    accounts = Accounts(client)
    token = accounts.token("saver")
    headers = accounts.headers(token)
    assert client.post("/upload", data=os.urandom(2 << 20), headers=headers).status_code == 201
    before = counts(db)
    # Declared size over what is left: refused before reading.
    response = client.post("/upload", data=os.urandom((1 << 20) + 1), headers=headers)
    assert response.status_code == 413
    assert "quota" in response.text
    assert counts(db) == before
    # What fits still fits, exactly.
    assert client.post("/upload", data=os.urandom(1 << 20), headers=headers).status_code == 201
    assert client.post("/upload", data=b"x", headers=headers).status_code == 413
    # Another user has a quota of their own.
    other = accounts.token("other")
    assert client.post("/upload", data=b"x", headers=accounts.headers(other)).status_code == 201


def test_quota_enforced_while_streaming(make_app: Any, db: Any) -> None:
    app = make_app(QUOTA_BYTES=str(2 << 20))
    client = app.test_client()
    token = Accounts(client).token("streamer")
    owner = db.users.find_one({"name": "streamer"})["public_id"]
    files = app.extensions["cryptofiles.files"]
    before = counts(db)
    from cryptofiles.files import QuotaExceeded

    with pytest.raises(QuotaExceeded):
        files.upload(owner, (os.urandom(1 << 20) for _ in range(3)))
    assert counts(db) == before
    assert token


def test_deleting_frees_quota(make_app: Any) -> None:
    client = make_app(QUOTA_BYTES=str(1 << 20)).test_client()
    accounts = Accounts(client)
    headers = accounts.headers(accounts.token())
    file_id = client.post("/upload", data=os.urandom(1 << 20), headers=headers).text
    assert client.post("/upload", data=b"x", headers=headers).status_code == 413
    assert client.delete(f"/files/{file_id}", headers=headers).status_code == 204
    assert client.post("/upload", data=b"x", headers=headers).status_code == 201
