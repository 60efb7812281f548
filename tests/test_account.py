"""Account management: password change and account deletion revoke what they must."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.support.api import PASSWORD, Accounts

NEW_PASSWORD = "a brand new password"


def change(client: FlaskClient, token: str, current: str, new: str) -> Any:
    return client.put(
        "/account/password",
        json={"User_Password": current, "New_User_Password": new},
        headers={"x-access-tokens": token},
    )


def test_password_change_revokes_every_older_token(client: FlaskClient, accounts: Accounts) -> None:
    accounts.register("User1")
    first, second = accounts.login("User1"), accounts.login("User1")
    assert change(client, first, PASSWORD, NEW_PASSWORD).status_code == 200
    for token in (first, second):
        assert client.get("/test_login", headers=accounts.headers(token)).status_code == 401
    assert (
        client.get("/login", headers={"User_Name": "User1", "User_Password": PASSWORD}).status_code
        == 401
    )
    fresh = accounts.login("User1", NEW_PASSWORD)
    assert client.get("/test_login", headers=accounts.headers(fresh)).status_code == 200
    # And a second change revokes that one too.
    assert change(client, fresh, NEW_PASSWORD, PASSWORD).status_code == 200
    assert client.get("/test_login", headers=accounts.headers(fresh)).status_code == 401


def test_password_change_holds_across_instances(
    settings: Any, client: FlaskClient, accounts: Accounts
) -> None:
    from cryptofiles.web import create_app, services_of

    token = accounts.token()
    other = create_app(settings)
    try:
        change(client, token, PASSWORD, NEW_PASSWORD)
        assert (
            other.test_client().get("/test_login", headers=accounts.headers(token)).status_code
            == 401
        )
    finally:
        services_of(other).storage.close()


@pytest.mark.parametrize(
    ("current", "new", "status"),
    [
        ("wrong password", NEW_PASSWORD, 401),
        (PASSWORD, "short", 400),
        ("", NEW_PASSWORD, 400),
        (PASSWORD, "", 400),
    ],
)
def test_password_change_bad_input_changes_nothing(
    client: FlaskClient, accounts: Accounts, db: Any, current: str, new: str, status: int
) -> None:
    token = accounts.token()
    before = db.users.find_one({"name": "User1"})
    assert change(client, token, current, new).status_code == status
    assert db.users.find_one({"name": "User1"}) == before
    assert client.get("/test_login", headers=accounts.headers(token)).status_code == 200


def test_password_change_needs_a_token(client: FlaskClient) -> None:
    response = client.put(
        "/account/password", json={"User_Password": PASSWORD, "New_User_Password": NEW_PASSWORD}
    )
    assert response.status_code == 401


def test_account_deletion_removes_user_files_and_tokens(
    client: FlaskClient, accounts: Accounts, db: Any
) -> None:
    token = accounts.token("leaver")
    other = accounts.token("stayer")
    for data in (b"one", b"two" * 400_000):
        assert client.post("/upload", data=data, headers=accounts.headers(token)).status_code == 201
    kept = client.post("/upload", data=b"kept", headers=accounts.headers(other)).text
    response = client.delete(
        "/account", json={"User_Password": PASSWORD}, headers=accounts.headers(token)
    )
    assert response.status_code == 200
    assert "2 file(s)" in response.text
    assert client.get("/test_login", headers=accounts.headers(token)).status_code == 401
    assert db.users.count_documents({"name": "leaver"}) == 0
    assert db.files.count_documents({}) == 1
    assert db["ciphertext.chunks"].count_documents({"files_id": {"$ne": kept}}) == 0
    assert client.get(f"/files/{kept}/key", headers=accounts.headers(other)).status_code == 200
    # The name is free again.
    accounts.register("leaver")


def test_account_deletion_needs_the_password(
    client: FlaskClient, accounts: Accounts, db: Any
) -> None:
    token = accounts.token()
    response = client.delete(
        "/account", json={"User_Password": "not it at all"}, headers=accounts.headers(token)
    )
    assert response.status_code == 401
    assert db.users.count_documents({}) == 1
    assert client.delete("/account", headers=accounts.headers(token)).status_code == 400
    assert client.get("/test_login", headers=accounts.headers(token)).status_code == 200
