"""Shared fixtures: a real database server for the session, a fresh database for every test.

``MONGODB_URI`` in the environment points the suite at a server you run; otherwise the suite starts
its own (mongod or FerretDB, see ``cryptofiles.dev.database``) on a private Unix socket with its data in a
temp folder.
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cryptofiles.app import create_app, services_of
from cryptofiles.config import Settings
from cryptofiles.crypto import KeyRing
from cryptofiles.dev.database import LocalDatabase

# Cheaper than production's scrypt cost so that the suite stays fast; tests of the cost itself
# set PASSWORD_HASH explicitly.
TEST_PASSWORD_HASH = "scrypt:16384:8:1"
PASSWORD = "correct horse battery"


@pytest.fixture(scope="session")
def mongodb_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if uri := os.environ.get("MONGODB_URI"):
        yield uri
        return
    with LocalDatabase(tmp_path_factory.mktemp("database")) as database:
        yield database.uri


@pytest.fixture(scope="session")
def master_keys() -> str:
    return KeyRing.generate_entry("test1")


def fresh_settings_values(mongodb_uri: str, master_keys: str) -> dict[str, str]:
    """Settings of a test app on a database of its own (fixtures of any scope build on this)."""
    return {
        "SECRET_KEY": secrets.token_urlsafe(32),
        "MASTER_KEYS": master_keys,
        "MONGODB_URI": mongodb_uri,
        "MONGODB_DB": f"test_{uuid.uuid4().hex[:16]}",
        "PASSWORD_HASH": TEST_PASSWORD_HASH,
        # Tests register and log in far more often than people; tests of the limits set their own.
        "RATE_LIMIT_LOGIN_NAME": "1000/minute",
        "RATE_LIMIT_LOGIN_ADDRESS": "1000/minute",
        "RATE_LIMIT_REGISTRATION": "1000/minute",
    }


@pytest.fixture
def settings_values(mongodb_uri: str, master_keys: str) -> dict[str, str]:
    return fresh_settings_values(mongodb_uri, master_keys)


@pytest.fixture
def settings(settings_values: dict[str, str]) -> Settings:
    return Settings.from_mapping(settings_values)


@pytest.fixture
def app(settings: Settings) -> Iterator[Flask]:
    app = create_app(settings)
    yield app
    storage = services_of(app).storage
    storage.client.drop_database(settings.mongodb_db)
    storage.close()


@pytest.fixture
def make_app(app: Flask, settings_values: dict[str, str]) -> Iterator[Callable[..., Flask]]:
    """More app instances on the test's database, with some settings changed; closed at the end."""
    made: list[Flask] = []

    def make(**overrides: str) -> Flask:
        made.append(create_app(Settings.from_mapping({**settings_values, **overrides})))
        return made[-1]

    yield make
    for other in made:
        services_of(other).storage.close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def db(app: Flask) -> Any:
    """The test's database, for asserting what was (not) stored."""
    return services_of(app).storage.db


class Accounts:
    """Register and log in through the HTTP API, as a client would."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client

    def register(self, name: str = "User1", password: str = PASSWORD) -> None:
        response = self.client.post(
            "/registration", headers={"New_User_Name": name, "New_User_Password": password}
        )
        assert response.status_code == 201, response.text

    def login(self, name: str = "User1", password: str = PASSWORD) -> str:
        response = self.client.get("/login", headers={"User_Name": name, "User_Password": password})
        assert response.status_code == 200, response.text
        return response.text

    def token(self, name: str = "User1") -> str:
        """A fresh user and a token for it."""
        self.register(name)
        return self.login(name)

    @staticmethod
    def headers(token: str) -> dict[str, str]:
        return {"x-access-tokens": token}


@pytest.fixture
def accounts(client: FlaskClient) -> Accounts:
    return Accounts(client)
