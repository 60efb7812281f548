"""The real server as ``make run`` starts it (``cryptofiles.dev.harness.Launcher``), set up for tests.

``Server`` is the end-to-end tests' server: rate limits out of the way, an HTTP helper, and the
launcher's own database. ``launcher_env`` is the fault tests' environment for a server on a database
they control.
"""

from __future__ import annotations

import http.client
import secrets
from pathlib import Path
from typing import Any

import pymongo

from cryptofiles.config import Settings
from cryptofiles.crypto import KeyRing
from cryptofiles.dev.harness import PROJECT_ROOT, Launcher
from tests.support.database import PinnedDatabase

ROOT = PROJECT_ROOT
TIMEOUT_MS = 1000  # MONGODB_TIMEOUT_MS for every app under fault tests

E2E_ENV = {
    "WEB_WORKERS": "2",
    "WEB_CONNECTIONS": "1000",
    # Tests register and log in far more often than people do; tests/test_limits.py checks the
    # limits themselves.
    "RATE_LIMIT_LOGIN_NAME": "10000/minute",
    "RATE_LIMIT_LOGIN_ADDRESS": "10000/minute",
    "RATE_LIMIT_REGISTRATION": "10000/minute",
    "RATE_LIMIT_KEYS": "10000/minute",
    "RATE_LIMIT_LINKS": "10000/minute",
}


class Server(Launcher):
    """The launcher with its own secrets and database, ready when constructed."""

    def __init__(self, var_dir: Path, extra_env: dict[str, str] | None = None) -> None:
        super().__init__(var_dir, {**E2E_ENV, **(extra_env or {})})

    def database(self) -> Any:
        """A client of the launcher's own database, found through the URI it logged."""
        uri = self.database_uri()
        assert uri, self.log()
        client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(uri)
        return client

    def request(self, method: str, path: str, body: Any = None, headers: Any = None) -> Any:
        """``(response, body)`` of one request on a fresh connection."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response, response.read()
        finally:
            conn.close()


def new_token(server: Server, name: str) -> str:
    """Register ``name`` on ``server`` and log in: the token."""
    response, _ = server.request(
        "POST", "/registration", None, {"New_User_Name": name, "New_User_Password": "password1"}
    )
    assert response.status == 201
    response, data = server.request(
        "GET", "/login", None, {"User_Name": name, "User_Password": "password1"}
    )
    assert response.status == 200
    return str(data.decode())


def launcher_env(database: PinnedDatabase, **extra: str) -> dict[str, str]:
    """Environment for a ``Launcher`` against our database, secrets known to the test."""
    return {
        "MONGODB_URI": database.uri,
        "MONGODB_TIMEOUT_MS": str(TIMEOUT_MS),
        "SECRET_KEY": secrets.token_urlsafe(32),
        "MASTER_KEYS": KeyRing.generate_entry("fault1"),
        "PASSWORD_HASH": "scrypt:16384:8:1",
        # Every client here is 127.0.0.1: keep the per-address limits out of the way.
        "RATE_LIMIT_REGISTRATION": "1000/hour",
        "RATE_LIMIT_LOGIN_ADDRESS": "1000/minute",
        "RATE_LIMIT_KEYS": "100000/minute",
        "WEB_WORKERS": "2",
        **extra,
    }


def settings_of(env: dict[str, str]) -> Settings:
    return Settings.from_mapping(env)
