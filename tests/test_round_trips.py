"""Database round trips per request: each request below has a budget of commands, counted with
pymongo's command monitoring on the app's own client, against the real database.

The budgets are today's counts after the round-trip work of issue 14 (see docs/architecture.md,
"Round trips"): a request that starts sending more commands than its budget fails here, whatever
the time it takes on this machine.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from pyrage import x25519

from cryptofiles.config import Settings
from cryptofiles.services import open_storage
from cryptofiles.web import create_app, services_of
from tests.support.api import JSON, Accounts, auth
from tests.support.commands import CommandCounter

# The most database commands each request may send. Key fetches and downloads each add one small
# insert to the file's access history (issue 12: never more); a grantee's key also reads the grant.
BUDGETS = {
    "key fetch": 5,
    # The recipients are on the user's document, which the token check reads anyway.
    "sealed key fetch": 5,
    "grantee key fetch": 6,
    "upload 4 KiB": 9,
    "download 1 chunk": 5,
    "login": 4,
    "listing": 3,
}
# Files the user already has when counting: the quota must not cost a read per file. (The counted
# upload writes usage version 121: not one of the one-in-16 that also retire old versions, see
# storage/usage.py, which costs one more command then.)
STORED_FILES = 120


@pytest.fixture
def counter() -> CommandCounter:
    return CommandCounter()


@pytest.fixture
def watched_app(settings: Settings, counter: CommandCounter) -> Iterator[Flask]:
    app = create_app(settings, storage=open_storage(settings, event_listeners=[counter]))
    yield app
    storage = services_of(app).storage
    storage.client.drop_database(settings.mongodb_db)
    storage.close()


@pytest.fixture
def stocked(watched_app: Flask) -> tuple[FlaskClient, str, str]:
    """A client, a user's token and one of its 1-chunk files, among STORED_FILES of the user's."""
    client = watched_app.test_client()
    token = Accounts(client).token("counted")
    owner = services_of(watched_app).storage.users.by_name("counted")
    assert owner is not None
    files = services_of(watched_app).files
    for _ in range(STORED_FILES - 1):
        files.upload(owner.public_id, [os.urandom(100)])
    response = client.post("/upload", data=os.urandom(4096), headers=auth(token))
    assert response.status_code == 201
    return client, token, response.text


def within_budget(name: str, commands: list[str]) -> None:
    budget = BUDGETS[name]
    assert commands, f"{name}: no command seen; is the listener attached?"
    assert len(commands) <= budget, f"{name}: {len(commands)} commands > {budget}: {commands}"


def test_key_fetch(stocked: tuple[FlaskClient, str, str], counter: CommandCounter) -> None:
    client, token, file_id = stocked
    with counter.watching() as commands:
        assert client.get(f"/files/{file_id}/key", headers=auth(token)).status_code == 200
    within_budget("key fetch", commands)


def test_sealed_key_fetch(stocked: tuple[FlaskClient, str, str], counter: CommandCounter) -> None:
    client, token, file_id = stocked
    recipients = {"recipients": [str(x25519.Identity.generate().to_public())]}
    assert (
        client.put("/account/recipients", json=recipients, headers=auth(token)).status_code == 200
    )
    with counter.watching() as commands:
        sealed = client.get(f"/files/{file_id}/key", headers=auth(token))
    assert sealed.status_code == 200 and sealed.text.startswith("-----BEGIN AGE ENCRYPTED FILE")
    within_budget("sealed key fetch", commands)


def test_grantee_key_fetch(stocked: tuple[FlaskClient, str, str], counter: CommandCounter) -> None:
    client, token, file_id = stocked
    grantee = Accounts(client).token("grantee")
    granted = client.post(f"/files/{file_id}/grants", json={"user": "grantee"}, headers=auth(token))
    assert granted.status_code == 201
    with counter.watching() as commands:
        assert client.get(f"/files/{file_id}/key", headers=auth(grantee)).status_code == 200
    within_budget("grantee key fetch", commands)


def test_upload(stocked: tuple[FlaskClient, str, str], counter: CommandCounter) -> None:
    client, token, _ = stocked
    with counter.watching() as commands:
        response = client.post("/upload", data=os.urandom(4096), headers=auth(token))
        assert response.status_code == 201
    within_budget("upload 4 KiB", commands)


def test_download(stocked: tuple[FlaskClient, str, str], counter: CommandCounter) -> None:
    client, token, file_id = stocked
    with counter.watching() as commands:
        response = client.get(f"/files/{file_id}", headers=auth(token))
        assert response.status_code == 200
        assert len(response.data) > 4096
    within_budget("download 1 chunk", commands)


def test_login(stocked: tuple[FlaskClient, str, str], counter: CommandCounter) -> None:
    client, _, _ = stocked
    with counter.watching() as commands:
        Accounts(client).login("counted")
    within_budget("login", commands)


def test_listing(stocked: tuple[FlaskClient, str, str], counter: CommandCounter) -> None:
    client, token, _ = stocked
    with counter.watching() as commands:
        response = client.get("/files?limit=50", headers={**auth(token), **JSON})
        assert response.status_code == 200
        assert len(response.json["files"]) == 50  # type: ignore[index]
    within_budget("listing", commands)
