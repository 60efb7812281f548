"""Account enumeration (ASVS 5.0 V6 authentication, OWASP API2:2023).

tests/test_accounts.py compares the status, text and WWW-Authenticate of an unknown name and a wrong
password; tests/test_auth.py times them for header logins. Here the whole answer is compared
(status, content type, body and every header but the per-request ones), in both transports and both
answer formats, for more kinds of "no such account" (a deleted account, a case variant, a name the
rules forbid); the timing of the cases test_auth does not cover is measured with its helper; and an
attempt to register a taken name must answer the same whatever password it brings.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from cryptofiles.web import services_of
from tests.support.answers import answer
from tests.support.api import JSON, auth, register
from tests.test_auth import assert_similar_cost

PASSWORD = "enumeration-password"
WRONG = "not-the-password"

# Each probe comes from its own client address and tries its name once, so that any per-address
# or per-name counters an answer might report stand at the same value for every probe.
_addresses = (f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}" for n in itertools.count(1))


def login(client: FlaskClient, name: str, password: str, transport: str, **headers: str) -> Any:
    environ = {"REMOTE_ADDR": next(_addresses)}
    if transport == "json":
        body = {"User_Name": name, "User_Password": password}
        return client.get("/login", json=body, headers=headers, environ_base=environ)
    fields = {"User_Name": name, "User_Password": password}
    return client.get("/login", headers={**fields, **headers}, environ_base=environ)


def delete_account(app: Flask, client: FlaskClient, name: str) -> None:
    """Delete ``name``'s account with a token issued directly: no login counted against it."""
    authenticator = services_of(app).accounts
    user = authenticator.storage.users.by_name(name)
    token = authenticator.tokens.issue(user.public_id, user.token_generation).token
    response = client.delete("/account", headers={**auth(token), "User_Password": PASSWORD})
    assert response.status_code == 200, response.text


@pytest.fixture
def accounts_and_a_gone_one(app: Flask, client: FlaskClient) -> Iterator[None]:
    register(client, "User1", PASSWORD)
    register(client, "Gone", PASSWORD)
    delete_account(app, client, "Gone")
    yield


NOT_AN_ACCOUNT = {
    "never-existed": "Nobody",
    "deleted": "Gone",
    "case-variant": "user1",
    "forbidden-characters": "no such name!",
    "too-long": "x" * 65,
    "trailing-space": "User1 ",
}


@pytest.mark.usefixtures("accounts_and_a_gone_one")
@pytest.mark.parametrize("accept", [{}, JSON], ids=["text", "json"])
@pytest.mark.parametrize("transport", ["headers", "json"])
def test_no_such_account_answers_like_a_wrong_password(
    client: FlaskClient, transport: str, accept: dict[str, str]
) -> None:
    wrong_password = login(client, "User1", WRONG, transport, **accept)
    assert wrong_password.status_code == 401
    reference = answer(wrong_password)
    different = {
        label: answer(response)
        for label, name in NOT_AN_ACCOUNT.items()
        if answer(response := login(client, name, WRONG, transport, **accept)) != reference
    }
    assert different == {}, f"a wrong password answers {reference}"


@pytest.mark.usefixtures("accounts_and_a_gone_one")
@pytest.mark.parametrize(
    ("label", "name", "transport"),
    [("deleted", "Gone", "headers"), ("never-existed", "Nobody", "json")],
)
def test_no_such_account_costs_what_a_wrong_password_costs(
    client: FlaskClient, label: str, name: str, transport: str
) -> None:
    """The cases test_auth's timing test leaves out: a deleted account, and the JSON transport."""
    assert_similar_cost(
        lambda: login(client, name, WRONG, transport),
        lambda: login(client, "User1", WRONG, transport),
    )


# -- registration of a taken name ----------------------------------------------------------------


def register_as(client: FlaskClient, name: str, password: str, transport: str) -> TestResponse:
    environ = {"REMOTE_ADDR": next(_addresses)}
    fields = {"New_User_Name": name, "New_User_Password": password}
    if transport == "json":
        return client.post("/registration", json=fields, environ_base=environ)
    return client.post("/registration", headers=fields, environ_base=environ)


ATTEMPTS: dict[str, Callable[[str], str]] = {
    "same-password": lambda p: p,
    "another-password": lambda p: "a-different-password",
    "same-password-upper-case": lambda p: p.upper(),
    "same-password-with-a-space": lambda p: p + " ",
}


@pytest.mark.parametrize("transport", ["headers", "json"])
def test_a_taken_name_answers_the_same_whatever_the_password(
    client: FlaskClient, db: Any, transport: str
) -> None:
    public_id = register(client, "Taken", PASSWORD)
    stored = db.users.find_one({"name": "Taken"})
    answers = {
        label: register_as(client, "Taken", attempt(PASSWORD), transport)
        for label, attempt in ATTEMPTS.items()
    }
    reference = answer(answers["another-password"])
    assert reference[0] == 400
    assert {label: answer(r) for label, r in answers.items() if answer(r) != reference} == {}
    body = answers["same-password"].data
    for secret in (public_id, stored["password_hash"], "scrypt", "created", str(stored["_id"])):
        assert secret.encode() not in body
    # Nothing changed, and the password of the real account is still the only one that works.
    assert db.users.count_documents({}) == 1
    assert db.users.find_one({"name": "Taken"}) == stored
    assert login(client, "Taken", PASSWORD, "headers").status_code == 200
    for label, attempt in ATTEMPTS.items():
        if label != "same-password":
            assert login(client, "Taken", attempt(PASSWORD), "headers").status_code == 401
