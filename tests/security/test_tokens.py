"""Token attacks over HTTP (RFC 8725, OWASP API2:2023 broken authentication, ASVS 5.0 V9).

tests/test_auth.py forges tokens against ``TokenService`` and ``GET /test_login``. This module adds
what it lacks: every ``alg`` spelling of "none" and every foreign algorithm in the header of a token
that carries a *valid* HMAC of the secret (so only the algorithm pin can refuse it), key-locating
headers with network access watched during decoding, and each attack against a file route too (the
victim's key, which a forgery would hand over), plus where tokens may not come from and the secret's
minimum length at start-up. The crafting helpers are test_auth's.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from flask import Flask
from flask.testing import FlaskClient

from cryptofiles.accounts import TokenService
from cryptofiles.config import ConfigError
from cryptofiles.dev.database import free_port
from cryptofiles.dev.serve import GENERATED_SECRETS
from cryptofiles.web import create_app
from tests.support.api import auth, login, register, upload
from tests.support.apps import running_app
from tests.support.settings import settings_for
from tests.test_auth import b64url, make_token, unsigned

PASSWORD = "token-tests-password"
ROOT = Path(__file__).resolve().parents[2]
ATTACKER_KEY = b"attacker-key-attacker-key-attack"
ATTACKER_URL = "https://attacker.example/.well-known/jwks.json"


@dataclasses.dataclass
class Victim:
    app: Flask
    client: FlaskClient
    secret: str
    sub: str  # the victim's public id
    token: str  # a genuine token of the victim's
    other_token: str  # a genuine token of another user's
    file_id: str  # the victim's file: its key is what a forgery would get

    def claims(self, **changes: Any) -> dict[str, Any]:
        now = int(time.time())
        claims = {"sub": self.sub, "iat": now, "exp": now + 600, "jti": uuid.uuid4().hex}
        return {**claims, **changes}


@pytest.fixture(scope="module")
def victim(mongodb_uri: str, master_keys: str) -> Iterator[Victim]:
    settings = settings_for(mongodb_uri, master_keys)
    with running_app(settings) as app:
        client = app.test_client()
        sub = register(client, "victim", PASSWORD)
        register(client, "other", PASSWORD)
        token = login(client, "victim", PASSWORD)
        file_id = upload(client, token, b"the victim's file")["id"]
        other = login(client, "other", PASSWORD)
        yield Victim(app, client, settings.secret_key, sub, token, other, file_id)


# Each attack is tried on both: the token check itself, and a route that would hand over a secret.
ROUTES = {"test_login": "/test_login", "file-key": "/files/{}/key"}


def ask(victim: Victim, route: str, headers: dict[str, str], query: str = "") -> Any:
    return victim.client.get(route.format(victim.file_id) + query, headers=headers)


@pytest.fixture
def watched_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Fails the test if decoding a token tries to open a connection (to fetch a key, say).

    Only the thread that is decoding is watched: pymongo's monitors keep their own connections.
    """
    decoding = threading.local()
    attempts: list[Any] = []

    def guard(real: Callable[..., Any]) -> Callable[..., Any]:
        def guarded(*args: Any, **kwargs: Any) -> Any:
            if getattr(decoding, "active", False):
                attempts.append(args)
                raise AssertionError(f"network access while decoding a token: {args!r}")
            return real(*args, **kwargs)

        return guarded

    real_decode = TokenService.decode

    def watched_decode(self: TokenService, token: str) -> dict[str, Any]:
        decoding.active = True
        try:
            return real_decode(self, token)
        finally:
            decoding.active = False

    monkeypatch.setattr(TokenService, "decode", watched_decode)
    monkeypatch.setattr(socket, "create_connection", guard(socket.create_connection))
    monkeypatch.setattr(socket.socket, "connect", guard(socket.socket.connect))
    monkeypatch.setattr(socket, "getaddrinfo", guard(socket.getaddrinfo))
    monkeypatch.setattr(jwt, "PyJWKClient", guard(jwt.PyJWKClient))
    yield attempts
    assert attempts == []


# -- the algorithm is pinned ------------------------------------------------------------------------

NONE_SPELLINGS = ["none", "None", "NONE", "nOnE"]
FOREIGN_ALGS = ["RS256", "ES256", "PS256", "EdDSA", "hs256", "HS256 ", ""]


def alg_attacks() -> dict[str, Callable[[Victim], str]]:
    attacks: dict[str, Callable[[Victim], str]] = {}
    for alg in NONE_SPELLINGS:
        attacks[f"alg-{alg}-unsigned"] = lambda v, alg=alg: unsigned(v.claims(), alg)
        # A valid HMAC over this very header: only the algorithm pin stands in the way.
        attacks[f"alg-{alg}-with-valid-hmac"] = lambda v, alg=alg: make_token(
            v.claims(), v.secret, header={"alg": alg}
        )
        attacks[f"alg-{alg}-with-a-real-tokens-signature"] = lambda v, alg=alg: unsigned(
            v.claims(), alg, v.token.rpartition(".")[2]
        )
    for alg in FOREIGN_ALGS:
        # The header names another algorithm; the signature is HS256 with the secret.
        attacks[f"header-{alg.strip() or 'empty'}{'-space' if alg.endswith(' ') else ''}"] = (
            lambda v, alg=alg: make_token(v.claims(), v.secret, header={"alg": alg})
        )
    attacks["HS384-same-secret"] = lambda v: make_token(v.claims(), v.secret, alg="HS384")
    attacks["HS512-same-secret"] = lambda v: make_token(v.claims(), v.secret, alg="HS512")
    attacks["nbf-in-future"] = lambda v: make_token(v.claims(nbf=int(time.time()) + 600), v.secret)
    attacks["iat-in-future"] = lambda v: make_token(v.claims(iat=int(time.time()) + 600), v.secret)
    attacks["unknown-crit-extension"] = lambda v: make_token(
        v.claims(), v.secret, header={"crit": ["x-attacker"], "x-attacker": True}
    )
    attacks["unencoded-payload-b64-false"] = lambda v: make_token(
        v.claims(), v.secret, header={"b64": False, "crit": ["b64"]}
    )
    return attacks


ALG_ATTACKS = alg_attacks()


@pytest.mark.parametrize("route", ROUTES.values(), ids=ROUTES.keys())
@pytest.mark.parametrize("make", ALG_ATTACKS.values(), ids=ALG_ATTACKS.keys())
def test_tokens_not_hs256_or_not_yet_valid_are_refused(
    victim: Victim, watched_network: list[Any], route: str, make: Callable[[Victim], str]
) -> None:
    response = ask(victim, route, auth(make(victim)))
    assert response.status_code == 401
    assert response.text == "Token is invalid or expired.\n"
    assert response.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize("route", ROUTES.values(), ids=ROUTES.keys())
def test_the_same_crafting_done_right_is_accepted(victim: Victim, route: str) -> None:
    """The control: the attacks fail for what they change, not for how they were made."""
    assert ask(victim, route, auth(make_token(victim.claims(), victim.secret))).status_code == 200
    assert ask(victim, route, auth(victim.token)).status_code == 200


# -- headers that locate keys are never followed ----------------------------------------------------

KEY_HEADERS: dict[str, dict[str, Any]] = {
    "kid-url": {"kid": ATTACKER_URL},
    "kid-traversal": {"kid": "../../../../../../dev/null"},
    "kid-injection": {"kid": "x' UNION SELECT 'attacker-key"},
    "kid-operator": {"kid": {"$ne": None}},
    "jku": {"jku": ATTACKER_URL},
    "x5u": {"x5u": "https://attacker.example/cert.pem"},
    "jwk": {"jwk": {"kty": "oct", "k": b64url(ATTACKER_KEY)}},
    "x5c": {"x5c": ["MIIBszCCAVmgAwIBAgIUattacker"]},
    "all-at-once": {
        "kid": ATTACKER_URL,
        "jku": ATTACKER_URL,
        "x5u": ATTACKER_URL,
        "jwk": {"kty": "oct", "k": b64url(ATTACKER_KEY)},
    },
}
# The key each header points an attacker's signature at.
ATTACKER_SIGNING_KEYS = {"kid-traversal": b"", "kid-injection": b"attacker-key"}
# PyJWT refuses a kid that is not a string (RFC 7515 §4.1.4) before it looks at the signature.
GENUINE_STATUS = {"kid-operator": 401}


@pytest.mark.parametrize("route", ROUTES.values(), ids=ROUTES.keys())
@pytest.mark.parametrize("header", KEY_HEADERS.values(), ids=KEY_HEADERS.keys())
def test_key_locating_headers_are_ignored(
    victim: Victim, watched_network: list[Any], route: str, header: dict[str, Any]
) -> None:
    """Decided from accounts.py: PyJWT with a fixed key and algorithms=["HS256"] never reads kid, jku,
    x5u, jwk or x5c. A token is judged by its signature and claims alone, so such headers neither
    help a forgery nor hurt a genuine token, and no key is ever fetched."""
    label = next(k for k, v in KEY_HEADERS.items() if v is header)
    genuine = make_token(victim.claims(), victim.secret, header=header)
    assert ask(victim, route, auth(genuine)).status_code == GENUINE_STATUS.get(label, 200)

    forged = make_token(
        victim.claims(), ATTACKER_SIGNING_KEYS.get(label, ATTACKER_KEY), header=header
    )
    response = ask(victim, route, auth(forged))
    assert response.status_code == 401
    assert response.text == "Token is invalid or expired.\n"


# -- where a token may come from --------------------------------------------------------------------

QUERY_NAMES = ["x-access-tokens", "token", "access_token", "jwt", "Authorization"]


@pytest.mark.parametrize("route", ROUTES.values(), ids=ROUTES.keys())
def test_tokens_outside_the_two_headers_are_ignored(victim: Victim, route: str) -> None:
    for name in QUERY_NAMES:
        query = f"?{name}={victim.token}"
        assert ask(victim, route, {}, query).status_code == 401, name
    query = f"?Authorization=Bearer%20{victim.token}"
    assert ask(victim, route, {}, query).status_code == 401
    for cookie in ("x-access-tokens", "token", "access_token", "session"):
        victim.client.set_cookie(cookie, victim.token)
        try:
            assert ask(victim, route, {}).status_code == 401, cookie
        finally:
            victim.client.delete_cookie(cookie)
    for header in ("X-Access-Token", "X-Auth-Token", "Token", "X-Forwarded-Access-Token"):
        assert ask(victim, route, {header: victim.token}).status_code == 401, header


PAIRS: dict[str, Callable[[Victim], tuple[str, str]]] = {
    "two-users": lambda v: (v.token, v.other_token),
    "valid-and-garbage": lambda v: (v.token, "garbage"),
    "garbage-and-valid": lambda v: ("garbage", v.token),
    "valid-and-forged": lambda v: (v.token, unsigned(v.claims(), "none")),
    "forged-and-valid": lambda v: (unsigned(v.claims(), "none"), v.token),
}


@pytest.mark.parametrize("route", ROUTES.values(), ids=ROUTES.keys())
@pytest.mark.parametrize("pair", PAIRS.values(), ids=PAIRS.keys())
def test_two_different_tokens_are_refused(
    victim: Victim, route: str, pair: Callable[[Victim], tuple[str, str]]
) -> None:
    seed, bearer = pair(victim)
    headers = {"x-access-tokens": seed, "Authorization": f"Bearer {bearer}"}
    response = ask(victim, route, headers)
    assert response.status_code == 401
    assert victim.file_id.encode() not in response.data


# -- the signing secret's length ---------------------------------------------------------------------

SHORT_SECRETS = {
    "31-ascii": "k" * 31,
    "16-chars-31-bytes": "é" * 15 + "k",
    "padded-with-spaces": " " * 20 + "k" * 25 + " " * 20,
    "blank": " " * 40,
}


@pytest.mark.parametrize("secret", SHORT_SECRETS.values(), ids=SHORT_SECRETS.keys())
def test_create_app_refuses_a_short_secret(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    settings_values: dict[str, str],
    secret: str,
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env to fall back on
    for name, value in {**settings_values, "SECRET_KEY": secret}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match="SECRET_KEY") as raised:
        create_app()
    if secret.strip():
        assert secret.strip() not in str(raised.value)


@pytest.mark.parametrize("secret", ["k" * 31, "é" * 15 + "k"], ids=["31-ascii", "31-bytes"])
def test_the_launcher_refuses_a_short_secret(
    tmp_path: Path, settings_values: dict[str, str], secret: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MONGODB_", "SECRET_"))}
    env.update(settings_values)
    env.update(
        SECRET_KEY=secret,
        PORT=str(free_port()),
        CRYPTOFILES_VAR_DIR=str(tmp_path / "var"),
        PYTHONPATH=str(ROOT),
    )
    try:
        result = subprocess.run(
            [sys.executable, "-m", "cryptofiles.dev.serve"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail("the launcher started serving with a short SECRET_KEY")
    assert result.returncode == 2, result.stderr
    assert "SECRET_KEY" in result.stderr and "32 bytes" in result.stderr
    assert secret not in result.stdout + result.stderr
    assert not (tmp_path / "var" / "secrets.env").exists()  # nothing generated over it


def test_a_generated_secret_is_long_enough() -> None:
    """What the launcher writes for a missing SECRET_KEY passes the rule it enforces."""
    assert all(len(GENERATED_SECRETS["SECRET_KEY"]().encode()) >= 32 for _ in range(20))
