"""Abuse limits: rate limits (429 + Retry-After, shared by every instance; one budget for every
route that checks a password) and per-user quota."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cryptofiles import accounts
from cryptofiles.config import Settings
from cryptofiles.web import services_of
from tests.support.api import PASSWORD, Accounts


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


def test_post_login_spends_the_same_budget_as_get(make_app: Any) -> None:
    # POST /login (the web page's form of login) must not be a second budget for guessing.
    client = make_app(RATE_LIMIT_LOGIN_NAME="3/minute").test_client()
    Accounts(client).register("victim")
    for _ in range(3):
        assert login(client, "victim", "wrong guess!").status_code == 401
    response = client.post(
        "/login",
        json={"User_Name": "victim", "User_Password": PASSWORD},
        environ_base={"REMOTE_ADDR": "10.0.0.1"},
    )
    assert response.status_code == 429


def test_login_limit_per_address(make_app: Any) -> None:
    client = make_app(RATE_LIMIT_LOGIN_ADDRESS="4/minute").test_client()
    for i in range(4):
        assert login(client, f"user{i}", "whatever1", address="10.9.9.9").status_code == 401
    assert login(client, "user9", "whatever1", address="10.9.9.9").status_code == 429
    assert login(client, "user9", "whatever1", address="10.8.8.8").status_code == 401


# -- every route that checks a password spends the same budget -------------------------------------

NEW_PASSWORD = "a brand new password"


def change_password(client: FlaskClient, token: str, password: str, address: str) -> Any:
    return client.put(
        "/account/password",
        headers={"x-access-tokens": token, "User_Password": password, "New_User_Password": NEW_PASSWORD},
        environ_base={"REMOTE_ADDR": address},
    )  # fmt: skip


def delete_account(client: FlaskClient, token: str, password: str, address: str) -> Any:
    return client.delete(
        "/account",
        headers={"x-access-tokens": token, "User_Password": password},
        environ_base={"REMOTE_ADDR": address},
    )


# A password check by each route, as the account named "victim" (whose token is given).
CHECKS: dict[str, Callable[[FlaskClient, str, str, str], Any]] = {
    "login": lambda client, _token, password, address: login(client, "victim", password, address),
    "change-password": change_password,
    "delete-account": delete_account,
}


@pytest.mark.parametrize("route", ["change-password", "delete-account"])
def test_wrong_passwords_on_account_routes_are_limited(make_app: Any, db: Any, route: str) -> None:
    """The attack pass: wrong guesses, then the right one, through the account routes."""
    client = make_app(RATE_LIMIT_LOGIN_NAME="3/minute").test_client()
    token = Accounts(client).token("victim")
    before = db.users.find_one({"name": "victim"})
    for _ in range(3):
        assert CHECKS[route](client, token, "wrong guess!", "10.0.0.1").status_code == 401
    response = CHECKS[route](client, token, PASSWORD, "10.0.0.1")
    assert response.status_code == 429
    assert 0 < int(response.headers["Retry-After"]) <= 60
    assert db.users.find_one({"name": "victim"}) == before  # not changed, not deleted


@pytest.mark.parametrize(
    ("spent_on", "then"),
    [
        ("change-password", "login"),
        ("delete-account", "login"),
        ("login", "change-password"),
        ("login", "delete-account"),
    ],
)
def test_one_name_budget_for_every_route_that_checks_a_password(
    make_app: Any, spent_on: str, then: str
) -> None:
    client = make_app(RATE_LIMIT_LOGIN_NAME="3/minute").test_client()
    token = Accounts(client).token("victim")
    for _ in range(3):
        assert CHECKS[spent_on](client, token, "wrong guess!", "10.0.0.1").status_code == 401
    # From another address too: the name's budget is gone.
    assert CHECKS[then](client, token, PASSWORD, "10.0.0.2").status_code == 429


def test_account_routes_spend_the_address_budget(make_app: Any) -> None:
    client = make_app(RATE_LIMIT_LOGIN_ADDRESS="3/minute").test_client()
    accounts = Accounts(client)
    first, second = accounts.token("first"), accounts.token("second")
    assert change_password(client, first, "wrong guess!", "10.9.9.9").status_code == 401
    assert delete_account(client, second, "wrong guess!", "10.9.9.9").status_code == 401
    assert login(client, "third", "wrong guess!", "10.9.9.9").status_code == 401
    assert change_password(client, second, PASSWORD, "10.9.9.9").status_code == 429
    assert login(client, "first", PASSWORD, "10.9.9.9").status_code == 429
    assert login(client, "first", PASSWORD, "10.8.8.8").status_code == 200


def test_only_failed_checks_count(make_app: Any) -> None:
    """Right passwords (and bad input) use none of the budget, on any route."""
    client = make_app(RATE_LIMIT_LOGIN_NAME="2/minute", RATE_LIMIT_LOGIN_ADDRESS="2/minute")
    client = client.test_client()
    Accounts(client).register("victim")
    for _ in range(4):
        response = login(client, "victim", PASSWORD)
        assert response.status_code == 200
    token = response.text
    assert change_password(client, token, PASSWORD, "10.0.0.1").status_code == 200
    token = login(client, "victim", NEW_PASSWORD).text
    response = client.put(
        "/account/password",
        headers={"x-access-tokens": token, "User_Password": NEW_PASSWORD, "New_User_Password": "x"},
        environ_base={"REMOTE_ADDR": "10.0.0.1"},
    )
    assert response.status_code == 400  # the right password, a new one too short
    # The whole budget is still there: two failures, then the limit.
    for _ in range(2):
        assert login(client, "victim", "wrong guess!").status_code == 401
    assert login(client, "victim", NEW_PASSWORD).status_code == 429
    assert delete_account(client, token, NEW_PASSWORD, "10.0.0.1").status_code == 429


def test_the_budget_is_taken_before_the_check(
    make_app: Any, db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Taken while the check runs, kept for a failure, given back for a right password. (Counting
    only after the check, like flask-limiter's deduct_when, would let a burst of parallel guesses
    all pass the limit before any of them counted.)"""
    app = make_app(RATE_LIMIT_LOGIN_NAME="3/minute")
    client = app.test_client()
    Accounts(client).register("victim")
    db.rate_counters.delete_many({})  # the registration's

    def counts() -> list[int]:
        return sorted(doc["count"] for doc in db.rate_counters.find())

    hasher = services_of(app).accounts.hasher
    real_verify = hasher.verify
    during: list[list[int]] = []

    def verify(stored_hash: str | None, password: str) -> bool:
        during.append(counts())  # [per address, per name]
        return real_verify(stored_hash, password)

    monkeypatch.setattr(hasher, "verify", verify)
    assert login(client, "victim", "wrong guess!").status_code == 401
    assert counts() == [1, 1]
    assert login(client, "victim", PASSWORD).status_code == 200
    assert during == [[1, 1], [2, 2]]
    assert counts() == [1, 1]


def test_a_password_check_outside_the_budget_is_refused(app: Flask) -> None:
    """What makes a new route that checks a password without ``password_checked`` fail its first
    test; services outside a request (the CLI) check freely."""
    authenticator = services_of(app).accounts
    with app.test_request_context("/a-new-route"), pytest.raises(RuntimeError, match="password"):
        authenticator.login("anyone", PASSWORD)
    with pytest.raises(accounts.InvalidCredentials):
        authenticator.login("anyone", PASSWORD)


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
    files = services_of(app).files
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
