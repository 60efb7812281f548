"""Helpers shared by the security tests: settings, apps that clean up after themselves, and the
client-side steps (register, log in, upload) that the attacks start from.
"""

from __future__ import annotations

import contextlib
import secrets
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from cryptofiles.config import Settings
from cryptofiles.web import create_app, services_of
from tests.conftest import TEST_PASSWORD_HASH

JSON = {"Accept": "application/json"}

# The rate limits are a control of their own (and tested elsewhere); here they would only turn the
# answers under test into 429s after a few dozen requests.
GENEROUS_LIMITS = {
    "RATE_LIMIT_LOGIN_NAME": "100000/minute",
    "RATE_LIMIT_LOGIN_ADDRESS": "100000/minute",
    "RATE_LIMIT_REGISTRATION": "100000/hour",
    "RATE_LIMIT_KEYS": "100000/minute",
}

# Headers whose value changes from one request to the next whatever the request was: leaving them
# out is what makes "the same answer" comparable. Everything else must match exactly.
VOLATILE_HEADERS = frozenset(
    {"date", "x-request-id", "x-ratelimit-reset", "ratelimit-reset", "ratelimit-policy"}
)


def settings_for(mongodb_uri: str, master_keys: str, **overrides: str) -> Settings:
    """Settings on a fresh database of the session's server, as conftest's fixtures make them."""
    values = {
        "SECRET_KEY": secrets.token_urlsafe(32),
        "MASTER_KEYS": master_keys,
        "MONGODB_URI": mongodb_uri,
        "MONGODB_DB": f"test_{uuid.uuid4().hex[:16]}",
        "PASSWORD_HASH": TEST_PASSWORD_HASH,
        **GENEROUS_LIMITS,
        **overrides,
    }
    return Settings.from_mapping(values)


@contextlib.contextmanager
def running_app(settings: Settings) -> Iterator[Flask]:
    """An app on ``settings``; its database is dropped and its client closed afterwards."""
    app = create_app(settings)
    storage = services_of(app).storage
    try:
        yield app
    finally:
        storage.client.drop_database(settings.mongodb_db)
        storage.close()


def auth(token: str) -> dict[str, str]:
    return {"x-access-tokens": token}


def register(client: FlaskClient, name: str, password: str) -> str:
    """Register through the API; returns the new user's public id."""
    response = client.post(
        "/registration",
        headers={"New_User_Name": name, "New_User_Password": password, **JSON},
    )
    assert response.status_code == 201, response.text
    return str(response.json["id"])  # type: ignore[index]


def login(client: FlaskClient, name: str, password: str) -> str:
    response = client.get("/login", headers={"User_Name": name, "User_Password": password})
    assert response.status_code == 200, response.text
    return response.text


def upload(client: FlaskClient, token: str, body: bytes, **headers: str) -> dict[str, Any]:
    """Upload ``body``; returns the JSON answer (id, name, size, ...)."""
    response = client.post("/upload", data=body, headers={**auth(token), **JSON, **headers})
    assert response.status_code == 201, response.text
    return response.json  # type: ignore[return-value]


def stable_headers(response: TestResponse) -> dict[str, str]:
    """The answer's headers without the per-request ones (see VOLATILE_HEADERS)."""
    return {k.lower(): v for k, v in response.headers.items() if k.lower() not in VOLATILE_HEADERS}


def answer(response: TestResponse) -> tuple[int, str | None, bytes, dict[str, str]]:
    """Everything a client can observe of an answer, bar the per-request headers."""
    return response.status_code, response.content_type, response.data, stable_headers(response)


def keys_of(value: Any) -> set[str]:
    """Every key of every object nested in a JSON value."""
    if isinstance(value, Mapping):
        return set(value) | {k for v in value.values() for k in keys_of(v)}
    if isinstance(value, list):
        return {k for v in value for k in keys_of(v)}
    return set()
