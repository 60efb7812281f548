"""Shared fixtures: a real database server for the session, a fresh database for every test.

``MONGODB_URI`` in the environment points the suite at a server you run; otherwise the suite starts
its own (mongod, or FerretDB on PostgreSQL, see ``cryptofiles.dev.database``) on a private Unix
socket with its data in a temp folder. The helpers the tests share (accounts, settings, servers)
live in ``tests/support/``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cryptofiles.config import Settings
from cryptofiles.crypto import KeyRing
from cryptofiles.dev.database import LocalDatabase
from cryptofiles.web import create_app, services_of
from tests.support.api import Accounts
from tests.support.settings import fresh_settings_values


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


@pytest.fixture
def accounts(client: FlaskClient) -> Accounts:
    return Accounts(client)
