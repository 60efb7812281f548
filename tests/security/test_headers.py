"""Security headers and error answers (ASVS 5.0 V3 web frontend, V14 data protection, V16 errors;
OWASP API8:2023 security misconfiguration).

Answers that carry secrets (a token, a file key, a decrypted file) must not be stored by caches;
downloads must never be rendered by a browser, whatever content type a user claimed at upload; and
an internal failure must answer with the generic message, never with what went wrong inside. The
documentation page runs only scripts it serves itself, cannot be framed, and escapes what it embeds.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import pymongo.errors
import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from cryptofiles import crypto, storage
from cryptofiles.accounts import Authenticator
from cryptofiles.files import FileService
from tests.support.api import JSON, auth, login, register, upload
from tests.support.apps import running_app
from tests.support.settings import settings_for

PASSWORD = "headers-password"
SECRET_DETAIL = "secret detail"


@dataclasses.dataclass
class World:
    app: Flask
    client: FlaskClient
    token: str
    file_id: str
    files: dict[str | None, str]  # claimed content type -> id of a file uploaded with it


HOSTILE_TYPES = [None, "text/html", "image/svg+xml", "application/xhtml+xml", "text/javascript"]
HOSTILE_BODY = b"<html><script>alert(document.cookie)</script></html>"


@pytest.fixture(scope="module")
def world(mongodb_uri: str, master_keys: str) -> Iterator[World]:
    with running_app(settings_for(mongodb_uri, master_keys)) as app:
        client = app.test_client()
        register(client, "owner", PASSWORD)
        token = login(client, "owner", PASSWORD)
        files = {}
        for content_type in HOSTILE_TYPES:
            headers = {"X-Content-Type": content_type} if content_type else {}
            files[content_type] = upload(client, token, HOSTILE_BODY, **headers)["id"]
        yield World(app, client, token, files[None], files)


def directives(response: TestResponse) -> set[str]:
    value = response.headers.get("Cache-Control", "")
    return {d.strip().split("=", 1)[0].lower() for d in value.split(",") if d.strip()}


# -- answers with secrets are never cached ----------------------------------------------------------


CREDENTIALS = {"User_Name": "owner", "User_Password": PASSWORD}


def key_url(world: World) -> str:
    return f"/files/{world.file_id}/key"


def plain_url(world: World) -> str:
    return f"/files/{world.file_id}/plaintext"


SECRET_ANSWERS: dict[str, Callable[[World], TestResponse]] = {
    "login-text": lambda w: w.client.get("/login", headers=CREDENTIALS),
    "login-json": lambda w: w.client.get("/login", headers={**CREDENTIALS, **JSON}),
    "login-json-body": lambda w: w.client.get("/login", json=CREDENTIALS),
    "key-text": lambda w: w.client.get(key_url(w), headers=auth(w.token)),
    "key-json": lambda w: w.client.get(key_url(w), headers={**auth(w.token), **JSON}),
    "plaintext": lambda w: w.client.get(plain_url(w), headers=auth(w.token)),
    "plaintext-range": lambda w: w.client.get(
        plain_url(w), headers={**auth(w.token), "Range": "bytes=0-3"}
    ),
}


@pytest.mark.parametrize("ask", SECRET_ANSWERS.values(), ids=SECRET_ANSWERS.keys())
def test_answers_with_secrets_are_never_stored(
    world: World, ask: Callable[[World], TestResponse]
) -> None:
    response = ask(world)
    assert response.status_code in (200, 206), response.data[:200]
    assert "no-store" in directives(response)
    assert not directives(response) & {"public", "immutable"}


# -- downloads are attachments, never sniffed -----------------------------------------------------


@pytest.mark.parametrize("span", [None, "bytes=0-9"], ids=["whole", "range"])
@pytest.mark.parametrize("route", ["/files/{}", "/files/{}/plaintext"], ids=["ciphertext", "plain"])
@pytest.mark.parametrize("claimed", HOSTILE_TYPES, ids=[str(t) for t in HOSTILE_TYPES])
def test_downloads_are_attachments_that_are_never_sniffed(
    world: World, claimed: str | None, route: str, span: str | None
) -> None:
    headers = auth(world.token) | ({"Range": span} if span else {})
    response = world.client.get(route.format(world.files[claimed]), headers=headers)
    assert response.status_code == (206 if span else 200)
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    disposition = response.headers["Content-Disposition"]
    assert disposition.split(";")[0].strip().lower() == "attachment"
    if route == "/files/{}":
        assert response.mimetype == "application/octet-stream"  # never the claimed type


# -- error answers show nothing of the inside ---------------------------------------------------------

# What a leak would look like: the detail, or a traceback's vocabulary.
LEAK_MARKERS = [
    SECRET_DETAIL,
    "Traceback",
    "Error:",
    "Exception",
    'File "',
    ".py",
    "/work",
    "site-packages",
    "cryptofiles.",
    "pymongo",
    "mongodb://",
]
FAILURES: dict[str, tuple[type[Exception], int]] = {
    "runtime-error": (RuntimeError, 500),
    "key-error": (KeyError, 500),
    "type-error": (TypeError, 500),
    "storage-error": (storage.StorageError, 500),
    "corrupt-file": (storage.CorruptFile, 500),
    "key-ring-error": (crypto.KeyRingError, 500),
    "decryption-error": (crypto.DecryptionError, 500),
    "pymongo-operation-failure": (pymongo.errors.OperationFailure, 500),
    "database-unavailable": (storage.DatabaseUnavailable, 503),
}
# route -> (method, path, the service method made to fail)
FAILING_ROUTES: dict[str, tuple[str, str, Any, str]] = {
    "registration": ("POST", "/registration", Authenticator, "register"),
    "login": ("GET", "/login", Authenticator, "login"),
    "test_login": ("GET", "/test_login", Authenticator, "authenticate"),
    "upload": ("POST", "/upload", FileService, "upload"),
    "list": ("GET", "/files", FileService, "list"),
    "download": ("GET", "/files/{}", FileService, "get"),
    "key": ("GET", "/files/{}/key", FileService, "key"),
    "plaintext": ("GET", "/files/{}/plaintext", FileService, "plaintext"),
    "delete": ("DELETE", "/files/{}", FileService, "delete"),
    "readyz": ("GET", "/readyz", storage.Storage, "ping"),
}
GENERIC = {500: "Internal server error.", 503: "The database is unavailable; try again shortly."}


@pytest.mark.parametrize("failure", FAILURES.values(), ids=FAILURES.keys())
@pytest.mark.parametrize("route", FAILING_ROUTES.values(), ids=FAILING_ROUTES.keys())
def test_internal_failures_answer_only_the_generic_message(
    world: World,
    monkeypatch: pytest.MonkeyPatch,
    route: tuple[str, str, Any, str],
    failure: tuple[type[Exception], int],
) -> None:
    method, path, service, name = route
    exception_type, status = failure

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise exception_type(f"{SECRET_DETAIL} at /work/main/cryptofiles/x.py mongodb://u:p@db")

    monkeypatch.setattr(service, name, fail)
    headers = {
        **auth(world.token),
        "User_Name": "owner",
        "User_Password": PASSWORD,
        "New_User_Name": "newcomer",
        "New_User_Password": PASSWORD,
    }
    url = path.format(world.file_id)
    for accept in ({}, JSON):
        response = world.client.open(url, method=method, headers={**headers, **accept}, data=b"x")
        assert response.status_code == status, response.text
        if accept:
            assert response.mimetype == "application/problem+json"
            assert response.json == {
                "type": "about:blank",
                "title": {500: "Internal Server Error", 503: "Service Unavailable"}[status],
                "status": status,
                "detail": GENERIC[status],
            }
        else:
            assert response.mimetype == "text/plain"
            assert response.text == GENERIC[status] + "\n"
        shown = response.get_data(as_text=True) + "".join(
            f"{k}: {v}\n" for k, v in response.headers.items()
        )
        assert [marker for marker in LEAK_MARKERS if marker in shown] == []


# -- the documentation page runs only the code it serves itself ----------------------------------------

PAGE_CSP = {
    "default-src": {"'self'"},
    "script-src": {"'self'"},
    "style-src": {"'self'"},
    "object-src": {"'none'"},
    "base-uri": {"'none'"},
    "frame-ancestors": {"'none'"},
}
MARKUP_PREFIX = '/x"><script>alert(1)</script><img src=x onerror=alert(2)>'
SCRIPT_TAG_RE = re.compile(r"<script\b([^>]*)>(.*?)</script>", re.DOTALL)


def csp(response: TestResponse) -> dict[str, set[str]]:
    policy = {}
    for directive in response.headers.get("Content-Security-Policy", "").split(";"):
        name, *sources = directive.split()
        policy[name] = set(sources)
    return policy


def test_docs_page_sends_a_strict_policy_and_denies_framing(world: World) -> None:
    response = world.client.get("/docs")
    assert response.status_code == 200
    policy = csp(response)
    for directive, sources in PAGE_CSP.items():
        assert policy.get(directive) == sources, directive
    assert not {s for sources in policy.values() for s in sources} & {
        "'unsafe-inline'",
        "'unsafe-eval'",
        "*",
    }
    assert response.headers["X-Frame-Options"] == "DENY"


def test_docs_page_has_no_inline_code(world: World) -> None:
    page = world.client.get("/docs").text
    assert "<style" not in page and not re.search(r"\s(style|on\w+)\s*=", page, re.IGNORECASE)
    scripts = SCRIPT_TAG_RE.findall(page)
    assert scripts
    for attributes, body in scripts:
        # A script either loads from a URL of ours or is a JSON data block, which never runs.
        assert ('src="/docs/' in attributes and not body.strip()) or (
            'type="application/json"' in attributes
        ), attributes
        if 'src="' in attributes:
            url = re.search(r'src="([^"]+)"', attributes)[1]  # type: ignore[index]
            asset = world.client.get(url, buffered=True)
            assert asset.status_code == 200 and asset.mimetype == "text/javascript", url
            asset.close()


def test_docs_page_escapes_the_path_prefix(world: World) -> None:
    # SCRIPT_NAME, the prefix every URL of the page starts with, as a client once set it.
    response = world.client.get("/docs", environ_overrides={"SCRIPT_NAME": MARKUP_PREFIX})
    assert response.status_code == 200
    page = response.text
    assert "<script>alert" not in page and "<img" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # in the href and src attributes
    assert len(SCRIPT_TAG_RE.findall(page)) == 3  # the data block, the bundle, the start-up
    # The settings block holds the prefix as data, unchanged once parsed, unable to close itself.
    (block,) = re.findall(r'<script type="application/json"[^>]*>(.*?)</script>', page)
    assert "<" not in block
    assert json.loads(block)["url"] == MARKUP_PREFIX + "/openapi.json"
