"""The seed's account contract over HTTP: registration, login, test_login, logout."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.security import generate_password_hash

from cryptofiles.storage import NameTaken, Storage
from cryptofiles.web import services_of
from tests.support.api import PASSWORD, Accounts
from tests.support.settings import TEST_PASSWORD_HASH

REGISTER = ("New_User_Name", "New_User_Password")
LOGIN = ("User_Name", "User_Password")
JSON = {"Accept": "application/json"}


def register(client: FlaskClient, name: str, password: str, **kw: Any) -> Any:
    return client.post("/registration", headers={REGISTER[0]: name, REGISTER[1]: password}, **kw)


def login(client: FlaskClient, name: str, password: str, **kw: Any) -> Any:
    return client.get("/login", headers={LOGIN[0]: name, LOGIN[1]: password}, **kw)


# -- the happy path, as the seed's curl examples do it ------------------------------------------


def test_register_login_test_login(client: FlaskClient) -> None:
    response = register(client, "User1", "Password")
    assert response.status_code == 201
    assert response.mimetype == "text/plain"
    assert "User1" in response.text

    response = login(client, "User1", "Password")
    assert response.status_code == 200
    token = response.text
    assert token.count(".") == 2  # a bare JWT, nothing around it
    assert response.headers["Cache-Control"] == "no-store"

    response = client.get("/test_login", headers={"x-access-tokens": token})
    assert response.status_code == 200
    assert response.text == "Login is OK, your name: User1"


def test_json_bodies_work_like_headers(client: FlaskClient) -> None:
    response = client.post(
        "/registration", json={"New_User_Name": "json.user", "New_User_Password": PASSWORD}
    )
    assert response.status_code == 201
    response = client.get("/login", json={"User_Name": "json.user", "User_Password": PASSWORD})
    assert response.status_code == 200
    response = client.get("/test_login", headers={"Authorization": f"Bearer {response.text}"})
    assert response.text == "Login is OK, your name: json.user"


def test_post_login_takes_a_json_body_like_get(client: FlaskClient) -> None:
    # Browsers cannot send a body with GET: the web page logs in with POST and a JSON body.
    Accounts(client).register("browser.user")
    response = client.post(
        "/login", headers=JSON, json={"User_Name": "browser.user", "User_Password": PASSWORD}
    )
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    token = response.json["token"]
    response = client.get("/test_login", headers={"x-access-tokens": token})
    assert response.text == "Login is OK, your name: browser.user"
    response = client.post(
        "/login", headers=JSON, json={"User_Name": "browser.user", "User_Password": "wrong!"}
    )
    assert response.status_code == 401
    assert "token" not in response.json


def test_json_answers_when_asked(client: FlaskClient) -> None:
    response = client.post(
        "/registration", headers={**JSON, REGISTER[0]: "User1", REGISTER[1]: PASSWORD}
    )
    assert response.status_code == 201
    assert response.json["name"] == "User1"
    response = client.get("/login", headers={**JSON, LOGIN[0]: "User1", LOGIN[1]: PASSWORD})
    body = response.json
    assert set(body) == {"token", "token_type", "expires_at"}
    assert body["token_type"] == "Bearer"
    response = client.get("/test_login", headers={**JSON, "x-access-tokens": body["token"]})
    assert response.json == {"message": "Login is OK", "name": "User1"}


def test_non_ascii_password_same_in_header_and_json(client: FlaskClient) -> None:
    password = "пароль-надёжный"
    # A client such as curl sends header bytes as UTF-8; WSGI hands them over as latin-1.
    raw_header = password.encode("utf-8").decode("latin-1")
    response = client.post("/registration", headers={REGISTER[0]: "ivan", REGISTER[1]: raw_header})
    assert response.status_code == 201
    response = client.get("/login", json={LOGIN[0]: "ivan", LOGIN[1]: password})
    assert response.status_code == 200


# -- bad input: clear 400s that change nothing --------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "missing"),
    [
        ({}, "New_User_Name and New_User_Password"),
        ({"New_User_Name": "User1"}, "New_User_Password"),
        ({"New_User_Password": PASSWORD}, "New_User_Name"),
        ({"New_User_Name": "", "New_User_Password": ""}, "New_User_Name and New_User_Password"),
    ],
)
def test_registration_missing_fields(
    client: FlaskClient, db: Any, headers: dict[str, str], missing: str
) -> None:
    response = client.post("/registration", headers=headers)
    assert response.status_code == 400
    assert f"Missing {missing}" in response.text
    assert db.users.count_documents({}) == 0


@pytest.mark.parametrize("headers", [{}, {"User_Name": "User1"}, {"User_Password": PASSWORD}])
def test_login_missing_fields(client: FlaskClient, headers: dict[str, str]) -> None:
    response = client.get("/login", headers=headers)
    assert response.status_code == 400
    assert "Missing" in response.text


@pytest.mark.parametrize(
    "name", ["ab", "x" * 65, "has space", "semi;colon", "../etc", "name\u00e9", "a$b"]
)
def test_registration_name_rule(client: FlaskClient, db: Any, name: str) -> None:
    response = client.post("/registration", json={REGISTER[0]: name, REGISTER[1]: PASSWORD})
    assert response.status_code == 400
    assert "User name must be 3-64 characters" in response.text
    assert db.users.count_documents({}) == 0


@pytest.mark.parametrize("name", ["abc", "x" * 64, "User1", "a.b_c-d"])
def test_registration_name_rule_accepts(client: FlaskClient, name: str) -> None:
    assert register(client, name, PASSWORD).status_code == 201


@pytest.mark.parametrize("password", ["short", "1234567", "я" * 513])
def test_registration_password_rule(client: FlaskClient, db: Any, password: str) -> None:
    response = client.post("/registration", json={REGISTER[0]: "User1", REGISTER[1]: password})
    assert response.status_code == 400
    assert "Password must be at least 8 characters and at most 1024 bytes" in response.text
    assert db.users.count_documents({}) == 0


def test_password_of_exactly_1024_bytes_is_accepted(client: FlaskClient) -> None:
    response = client.post("/registration", json={REGISTER[0]: "User1", REGISTER[1]: "я" * 512})
    assert response.status_code == 201


def test_existing_name_is_400_and_changes_nothing(client: FlaskClient, db: Any) -> None:
    assert register(client, "User1", PASSWORD).status_code == 201
    before = db.users.find_one({"name": "User1"})
    response = register(client, "User1", "another password")
    assert response.status_code == 400
    assert response.text == "This user name is already taken.\n"
    assert db.users.count_documents({}) == 1
    assert db.users.find_one({"name": "User1"}) == before
    assert login(client, "User1", PASSWORD).status_code == 200


@pytest.mark.parametrize("variant", ["ADMIN", "Admin", "aDMIn"])
def test_a_name_differing_only_in_case_is_taken(client: FlaskClient, db: Any, variant: str) -> None:
    """No lookalike of an existing account; logging in stays exact."""
    assert register(client, "admin", PASSWORD).status_code == 201
    taken = register(client, "admin", "another password")
    response = register(client, variant, "another password")
    assert (response.status_code, response.text) == (taken.status_code, taken.text)
    assert response.text == "This user name is already taken.\n"
    assert db.users.count_documents({}) == 1
    assert login(client, variant, PASSWORD).status_code == 401
    assert login(client, "admin", PASSWORD).status_code == 200


def test_concurrent_registrations_of_case_variants_make_one_account(app: Flask, db: Any) -> None:
    storage: Storage = services_of(app).storage
    variants = ["racer", "RACER", "Racer", "rAcEr", "raceR", "RaCeR"]
    start = threading.Barrier(len(variants))

    def create(name: str) -> str:
        start.wait()
        try:
            storage.users.create(name, "scrypt:1:1:1$salt$hash", datetime.now(UTC))
        except NameTaken:
            return "taken"
        return "created"

    with ThreadPoolExecutor(len(variants)) as pool:
        outcomes = list(pool.map(create, variants))
    assert sorted(outcomes) == ["created"] + ["taken"] * (len(variants) - 1)
    assert db.users.count_documents({}) == 1


def test_users_from_before_the_case_rule_are_back_filled(
    db: Any, make_app: Callable[..., Flask]
) -> None:
    """Users stored without name_key (even names that already differ only in case) get one at
    start-up, every instance's start-up alike; they keep logging in by their exact names."""
    db.users.drop_index("unique_name_key")  # the database as an older version left it
    hashed = generate_password_hash(PASSWORD, TEST_PASSWORD_HASH)
    for name in ("legacy", "LEGACY", "Other"):
        public_id = str(uuid.uuid4())
        db.users.insert_one(
            {"_id": public_id, "public_id": public_id, "name": name, "password_hash": hashed,
             "created_at": datetime.now(UTC)}
        )  # fmt: skip
    client = make_app().test_client()
    keys = {doc["name"]: doc["name_key"] for doc in db.users.find()}
    assert keys["legacy"] == "legacy" and keys["Other"] == "other"
    assert keys["LEGACY"].startswith("legacy#")
    assert db.users.index_information()["unique_name_key"]["unique"] is True
    make_app()  # again: nothing to do, nothing changes
    assert {doc["name"]: doc["name_key"] for doc in db.users.find()} == keys
    for name in ("Legacy", "other"):
        assert register(client, name, PASSWORD).status_code == 400
    for name in ("legacy", "LEGACY", "Other"):
        assert login(client, name, PASSWORD).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {REGISTER[0]: {"$gt": ""}, REGISTER[1]: PASSWORD},
        {REGISTER[0]: "User1", REGISTER[1]: ["list"]},
        {REGISTER[0]: 12345, REGISTER[1]: PASSWORD},
    ],
)
def test_non_string_json_fields(client: FlaskClient, db: Any, body: dict[str, Any]) -> None:
    response = client.post("/registration", json=body)
    assert response.status_code == 400
    assert "must be a string" in response.text
    assert db.users.count_documents({}) == 0


@pytest.mark.parametrize("data", ["not json", "[1, 2]", '"text"'])
def test_malformed_json_body(client: FlaskClient, data: str) -> None:
    response = client.post("/registration", data=data, content_type="application/json")
    assert response.status_code == 400
    assert "JSON object" in response.text


def test_operator_object_cannot_log_in(client: FlaskClient, accounts: Accounts) -> None:
    accounts.register("User1")
    response = client.get("/login", json={LOGIN[0]: "User1", LOGIN[1]: {"$ne": "x"}})
    assert response.status_code == 400


# -- wrong credentials ----------------------------------------------------------------------------


def test_unknown_user_and_wrong_password_look_the_same(
    client: FlaskClient, accounts: Accounts
) -> None:
    accounts.register("User1")
    wrong_password = login(client, "User1", "not the password")
    unknown_user = login(client, "Nobody", "not the password")
    invalid_name = login(client, "no such name!", "not the password")
    for response in (wrong_password, unknown_user, invalid_name):
        assert response.status_code == 401
        assert response.text == wrong_password.text
        assert response.headers["WWW-Authenticate"] == "Bearer"


def test_problem_json_errors(client: FlaskClient) -> None:
    response = client.get(
        "/login", headers={**JSON, LOGIN[0]: "Nobody", LOGIN[1]: "not the password"}
    )
    assert response.status_code == 401
    assert response.mimetype == "application/problem+json"
    problem = json.loads(response.text)
    assert problem == {
        "type": "about:blank",
        "title": "Unauthorized",
        "status": 401,
        "detail": "Wrong user name or password.",
    }


def test_unknown_route_is_a_plain_404(client: FlaskClient) -> None:
    response = client.get("/nope")
    assert response.status_code == 404
    assert response.mimetype == "text/plain"


def test_wrong_method_is_405_with_allow(client: FlaskClient) -> None:
    response = client.get("/registration")
    assert response.status_code == 405
    assert "POST" in response.headers["Allow"]


# -- tokens ---------------------------------------------------------------------------------------


def test_missing_token(client: FlaskClient) -> None:
    response = client.get("/test_login")
    assert response.status_code == 401
    assert response.text == "A valid token is missing.\n"


@pytest.mark.parametrize(
    "headers",
    [
        {"x-access-tokens": "garbage"},
        {"x-access-tokens": "a.b.c"},
        {"Authorization": "Bearer garbage"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer"},
    ],
)
def test_malformed_tokens(client: FlaskClient, headers: dict[str, str]) -> None:
    assert client.get("/test_login", headers=headers).status_code == 401


def test_bearer_and_seed_header_are_equivalent(client: FlaskClient, accounts: Accounts) -> None:
    token = accounts.token()
    for headers in (
        {"x-access-tokens": token},
        {"Authorization": f"Bearer {token}"},
        {"Authorization": f"bearer {token}"},
        {"x-access-tokens": token, "Authorization": f"Bearer {token}"},
    ):
        assert client.get("/test_login", headers=headers).status_code == 200


def test_two_different_tokens_are_refused(client: FlaskClient, accounts: Accounts) -> None:
    first = accounts.token("first")
    second = accounts.token("second")
    headers = {"x-access-tokens": first, "Authorization": f"Bearer {second}"}
    assert client.get("/test_login", headers=headers).status_code == 401


def test_token_in_query_string_is_ignored(client: FlaskClient, accounts: Accounts) -> None:
    token = accounts.token()
    assert client.get(f"/test_login?x-access-tokens={token}").status_code == 401
    assert client.get(f"/test_login?token={token}").status_code == 401


def test_logout_revokes_only_that_token(client: FlaskClient, accounts: Accounts, db: Any) -> None:
    accounts.register("User1")
    first = accounts.login("User1")
    second = accounts.login("User1")
    response = client.post("/logout", headers={"Authorization": f"Bearer {first}"})
    assert response.status_code == 200
    assert client.get("/test_login", headers=accounts.headers(first)).status_code == 401
    assert client.post("/logout", headers=accounts.headers(first)).status_code == 401
    assert client.get("/test_login", headers=accounts.headers(second)).status_code == 200
    assert db.revoked_tokens.count_documents({}) == 1


def test_logout_holds_for_every_app_instance(
    settings: Any, accounts: Accounts, client: FlaskClient
) -> None:
    from cryptofiles.web import create_app, services_of

    token = accounts.token()
    other_app = create_app(settings)
    other_instance = other_app.test_client()
    try:
        assert other_instance.get("/test_login", headers=accounts.headers(token)).status_code == 200
        client.post("/logout", headers=accounts.headers(token))
        assert other_instance.get("/test_login", headers=accounts.headers(token)).status_code == 401
    finally:
        services_of(other_app).storage.close()


def test_token_of_deleted_user_is_refused(client: FlaskClient, accounts: Accounts, db: Any) -> None:
    token = accounts.token()
    db.users.delete_one({"name": "User1"})
    assert client.get("/test_login", headers=accounts.headers(token)).status_code == 401


def test_revoked_tokens_expire(app: Any, db: Any) -> None:
    """MongoDB drops expired rows through a TTL index; where the server has none, we purge them."""
    storage = services_of(app).storage
    indexes = db.revoked_tokens.index_information()
    if storage.ttl_supported:
        assert indexes["expire_revoked_tokens"]["expireAfterSeconds"] == 0
        return
    assert "revoked_tokens_expiry" in indexes
    now = datetime.now(UTC)
    storage.revocations.revoke("old", now - timedelta(minutes=1), now - timedelta(minutes=2))
    assert storage.revocations.is_revoked("old")
    storage.revocations.revoke("new", now + timedelta(minutes=1), now)  # purges what expired by now
    assert not storage.revocations.is_revoked("old")
    assert storage.revocations.is_revoked("new")


def test_unique_indexes_exist(db: Any) -> None:
    indexes = db.users.index_information()
    assert indexes["unique_name"]["unique"] is True
    assert indexes["unique_public_id"]["unique"] is True
    assert indexes["unique_name_key"]["unique"] is True


# -- health -----------------------------------------------------------------------------------------


def test_healthz_and_readyz(client: FlaskClient) -> None:
    assert client.get("/healthz").text == "ok"
    assert client.get("/readyz").text == "ready"
