"""Hostile input (ASVS 5.0 V1 encoding and sanitization, V2 validation; OWASP API8:2023, API4:2023).

Operator objects and other non-strings in every JSON field of the account routes, names built to be
paths or to break lines, JSON that is deeply nested or not quite Unicode, file names that are paths,
paths that climb out of the asset folders, and headers and bodies far over any sensible size. The
rule everywhere: a 4xx that names the rule and changes nothing; never a 5xx.

Already covered elsewhere and not repeated: a few operator objects in registration and login
(tests/test_accounts.py), CR/LF/NUL in file names and Content-Disposition (tests/test_files.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import re
import socket
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cryptofiles.web import services_of
from cryptofiles.web.inputs import MAX_JSON_BYTES
from tests.support.api import auth, register, upload
from tests.support.apps import running_app
from tests.support.server import Server
from tests.support.settings import settings_for

PASSWORD = "input-tests-password"
MiB = 1 << 20


@dataclasses.dataclass
class Target:
    app: Flask
    client: FlaskClient
    db: Any
    name: str
    public_id: str

    def token(self) -> str:
        """A fresh token of the target's, issued directly (no login, no rate limit counted)."""
        authenticator = services_of(self.app).accounts
        user = authenticator.storage.users.by_public_id(self.public_id)
        return str(authenticator.tokens.issue(user.public_id, user.token_generation).token)

    def snapshot(self) -> tuple[Any, ...]:
        """Everything an account request could change."""
        return (
            sorted((u["name"], u["password_hash"], u.get("token_generation", 0)) for u in
                   self.db.users.find({}, {"_id": 0}))
        ), self.db.revoked_tokens.count_documents({}), self.db.files.count_documents({})  # fmt: skip


@pytest.fixture(scope="module")
def target(mongodb_uri: str, master_keys: str) -> Iterator[Target]:
    with running_app(settings_for(mongodb_uri, master_keys)) as app:
        client = app.test_client()
        public_id = register(client, "target", PASSWORD)
        db = services_of(app).storage.db
        yield Target(app, client, db, "target", public_id)


# -- non-strings in the account routes' JSON fields --------------------------------------------------

NEW_PASSWORD = "a-new-password"
ROUTES: dict[str, tuple[str, str, dict[str, str]]] = {
    "registration": (
        "POST",
        "/registration",
        {"New_User_Name": "newcomer", "New_User_Password": PASSWORD},
    ),
    "login": ("GET", "/login", {"User_Name": "target", "User_Password": PASSWORD}),
    "change-password": (
        "PUT",
        "/account/password",
        {"User_Password": PASSWORD, "New_User_Password": NEW_PASSWORD},
    ),
    "delete-account": ("DELETE", "/account", {"User_Password": PASSWORD}),
}
FIELDS = [(route, field) for route, (_, _, body) in ROUTES.items() for field in body]
OPERATORS: dict[str, Any] = {
    "gt": {"$gt": ""},
    "ne-null": {"$ne": None},
    "regex": {"$regex": ".*"},
    "where": {"$where": "sleep(1000) || true"},
    "in": {"$in": ["target", PASSWORD]},
    "exists": {"$exists": True},
    "array": ["target"],
    "array-of-operator": [{"$gt": ""}],
    "nested": {"name": {"$gt": ""}},
    "number": 0,
    "boolean": True,
    "null": None,
}


def send(target: Target, route: str, body: Any, raw: bytes | None = None) -> Any:
    method, path, _ = ROUTES[route]
    headers = auth(target.token()) if path.startswith("/account") else {}
    if raw is not None:
        return target.client.open(
            path, method=method, data=raw, content_type="application/json", headers=headers
        )
    return target.client.open(path, method=method, json=body, headers=headers)


@pytest.mark.parametrize("operator", OPERATORS.values(), ids=OPERATORS.keys())
@pytest.mark.parametrize(("route", "field"), FIELDS, ids=[f"{r}-{f}" for r, f in FIELDS])
def test_non_string_fields_are_400_and_change_nothing(
    target: Target, route: str, field: str, operator: Any
) -> None:
    before = target.snapshot()
    response = send(target, route, {**ROUTES[route][2], field: operator})
    assert response.status_code == 400, response.text
    assert field in response.text  # "X must be a string." or "Missing X ..."
    assert "eyJ" not in response.text  # no token
    assert target.snapshot() == before
    assert target.client.get("/test_login", headers=auth(target.token())).status_code == 200


# -- names that are paths, control sequences or huge ----------------------------------------------

BAD_NAMES = {
    "dotdot-slash": "../admin",
    "slash": "a/b/c",
    "backslash": "a\\b",
    "two-dots": "..",
    "crlf": "evil\r\nSet-Cookie: session=1",
    "lf": "abc\ndef",
    "nul": "abc\x00def",
    "tab": "abc\tdef",
    "escape": "abc\x1b[31m",
    "operator-text": "$where",
    "cyrillic-lookalike": "t\u0430rget",  # CYRILLIC SMALL LETTER A for the "a"
    "fullwidth": "\uff54\uff41\uff52\uff47\uff45\uff54",
    "right-to-left-override": "abc\u202etxt",
    "zero-width": "tar\u200bget",
    "65-chars": "x" * 65,
    "1-MiB": "x" * MiB,
}


@pytest.mark.parametrize("name", BAD_NAMES.values(), ids=BAD_NAMES.keys())
def test_names_outside_the_rule_are_refused_everywhere(target: Target, name: str) -> None:
    before = target.snapshot()
    body = {"New_User_Name": name, "New_User_Password": PASSWORD}
    response = target.client.post("/registration", json=body)
    if len(name) > MAX_JSON_BYTES:  # the body itself is refused before it is parsed
        assert response.status_code == 413
        assert target.snapshot() == before
        login = {"User_Name": name, "User_Password": PASSWORD}
        assert target.client.get("/login", json=login).status_code == 413
        return
    assert response.status_code == 400
    assert response.text.startswith("User name must be")
    assert target.snapshot() == before
    # Logging in under such a name is just a wrong login: never a match, never an error.
    response = target.client.get("/login", json={"User_Name": name, "User_Password": PASSWORD})
    assert response.status_code == 401
    assert response.text == "Wrong user name or password.\n"


# -- JSON bodies that are hostile in themselves ------------------------------------------------------

DEEP = 100_000


def nested(depth: int, inner: bytes = b"") -> bytes:
    return b"[" * depth + inner + b"]" * depth


def with_field(fields: dict[str, str], field: str, raw_value: bytes) -> bytes:
    """``fields`` as a JSON object whose ``field`` holds ``raw_value`` verbatim."""
    return json.dumps({**fields, field: "@@"}).encode().replace(b'"@@"', raw_value)


# label -> how to build the body from the route's valid fields and the field under attack
BODIES: dict[str, Any] = {
    "array-nesting": lambda fields, field: nested(DEEP),
    "object-nesting": lambda fields, field: b'{"a":' * DEEP + b"1" + b"}" * DEEP,
    "nesting-in-a-field": lambda fields, field: with_field(fields, field, nested(DEEP)),
    "lone-surrogate": lambda fields, field: with_field(fields, field, b'"\\ud800abcdefgh"'),
    "nan": lambda fields, field: with_field(fields, field, b"NaN"),
    "huge-integer": lambda fields, field: with_field(fields, field, b"1" + b"0" * 5000),
    "invalid-utf-8": lambda fields, field: with_field(fields, field, b'"\xff\xfe"'),
    "top-level-array": lambda fields, field: json.dumps([fields]).encode(),
    "top-level-string": lambda fields, field: b'"text"',
    "truncated": lambda fields, field: json.dumps(fields).encode()[:-3],
    "16-MiB-value": lambda fields, field: json.dumps({**fields, field: "x" * (16 * MiB)}).encode(),
    "100-k-keys": lambda fields, field: json.dumps(
        dict.fromkeys(map(str, range(100_000)), 1)
    ).encode(),
}


PER_FIELD = ("lone-surrogate", "nesting-in-a-field", "16-MiB-value")  # the rest: once a route


def hostile_cases() -> Iterator[Any]:
    for route, (_, _, fields) in ROUTES.items():
        for field in fields:
            for label in BODIES:
                if label not in PER_FIELD and field != next(iter(fields)):
                    continue
                case_id = (
                    f"{route}-{label}" if label not in PER_FIELD else f"{route}-{field}-{label}"
                )
                yield pytest.param(route, field, label, id=case_id)


@pytest.mark.parametrize(("route", "field", "label"), list(hostile_cases()))
def test_hostile_json_bodies_are_4xx(target: Target, route: str, field: str, label: str) -> None:
    before = target.snapshot()
    raw = BODIES[label](ROUTES[route][2], field)
    response = send(target, route, None, raw=raw)
    assert 400 <= response.status_code < 500, response.text
    assert target.snapshot() == before


# -- file names are display names only --------------------------------------------------------------

PATH_LIKE_NAMES = {
    "unix-traversal": "../../etc/passwd",
    "windows-traversal": "..\\..\\windows\\win.ini",
    "absolute": "/etc/shadow",
    "drive": "C:\\Windows\\system.ini",
    "home": "~/.ssh/authorized_keys",
    "two-dots": "..",
    "one-dot": ".",
    "encoded-traversal": "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "quote": 'a"b.txt',
    "parameters": "x.txt; filename=evil.exe; filename*=UTF-8''evil.exe",
    "html": "<script>alert(1)</script>.html",
    "non-ascii": "ünïcødé 文件.txt",
    "unicode-line-separator": "line\u2028break\u0085.txt",
}
FALLBACK_RE = re.compile(r'filename="([^"]*)"')
EXTENDED_RE = re.compile(r"filename\*=UTF-8''([^;\s]*)")
RFC_8187_ATTR_CHARS = re.compile(r"(?:[A-Za-z0-9!#$&+.^_`|~-]|%[0-9A-F]{2})*")


def as_header(text: str) -> str:
    """A header value as WSGI hands over what a client such as curl sends as UTF-8."""
    return text.encode().decode("latin-1")


def check_disposition(value: str, name: str) -> None:
    assert value.isascii() and "\r" not in value and "\n" not in value
    assert value.startswith("attachment;")
    fallbacks, extended = FALLBACK_RE.findall(value), EXTENDED_RE.findall(value)
    assert len(fallbacks) == 1 and len(extended) == 1, value
    fallback = fallbacks[0]
    assert fallback and not set(fallback) & set("/\\\"';:\r\n\x00"), fallback
    assert re.fullmatch(r"[A-Za-z0-9._ -]+", fallback), fallback
    assert RFC_8187_ATTR_CHARS.fullmatch(extended[0]), extended[0]
    assert urllib.parse.unquote(extended[0], errors="strict") == name


@pytest.mark.parametrize("how", ["X-File-Name", "Content-Disposition"])
@pytest.mark.parametrize("name", PATH_LIKE_NAMES.values(), ids=PATH_LIKE_NAMES.keys())
def test_path_like_file_names_are_display_names_only(target: Target, name: str, how: str) -> None:
    token = target.token()
    if how == "X-File-Name":
        headers = {"X-File-Name": as_header(name)}
    else:
        quoted = urllib.parse.quote(name, safe="")
        headers = {"Content-Disposition": f"attachment; filename*=UTF-8''{quoted}"}
    file_id = upload(target.client, token, b"named content", **headers)["id"]
    try:
        assert target.db.files.find_one({"_id": file_id})["name"] == name
        # The stored object is named by its id; the user's name is metadata, never a path.
        assert target.db["ciphertext.files"].find_one({"_id": file_id})["filename"] == file_id
        info = target.client.get(f"/files/{file_id}/info", headers=auth(token)).json
        assert info["name"] == name  # type: ignore[index]
        for route, served_as in (
            (f"/files/{file_id}", f"{name}.enc"),
            (f"/files/{file_id}/plaintext", name),
        ):
            response = target.client.get(route, headers=auth(token))
            assert response.status_code == 200
            check_disposition(response.headers["Content-Disposition"], served_as)
    finally:
        target.client.delete(f"/files/{file_id}", headers=auth(token))


@pytest.mark.parametrize(
    "environ",
    [
        {"HTTP_X_FILE_NAME": "tab\there.txt"},
        {"HTTP_X_FILE_NAME": "ansi\x1b[2J.txt"},
        {"HTTP_X_FILE_NAME": "del\x7f.txt"},
        {"HTTP_CONTENT_DISPOSITION": 'attachment; filename="cr\rlf\n.txt"'},
        {"HTTP_CONTENT_DISPOSITION": "attachment; filename*=UTF-8''tab%09.txt"},
        {"HTTP_CONTENT_DISPOSITION": "attachment; filename*=UTF-8''esc%1B.txt"},
    ],
    ids=["tab", "escape", "delete", "quoted-crlf", "encoded-tab", "encoded-escape"],
)
def test_other_control_characters_in_file_names_are_400(
    target: Target, environ: dict[str, str]
) -> None:
    """Extends tests/test_files.py's CR/LF/NUL cases to the rest of the C0 controls and DEL."""
    before = target.snapshot()
    response = target.client.post(
        "/upload", data=b"x", headers=auth(target.token()), environ_overrides=environ
    )
    assert response.status_code == 400
    assert target.snapshot() == before


# Characters that reorder how the rest of a name is displayed: "invoice\u202efdp.exe" shows as
# "invoiceexe.pdf". Refused like the C0 controls, from either header.
BIDI_CONTROLS = {
    "left-to-right-embedding": "\u202a",
    "right-to-left-embedding": "\u202b",
    "pop-directional-formatting": "\u202c",
    "left-to-right-override": "\u202d",
    "right-to-left-override": "\u202e",
    "left-to-right-isolate": "\u2066",
    "right-to-left-isolate": "\u2067",
    "first-strong-isolate": "\u2068",
    "pop-directional-isolate": "\u2069",
    "left-to-right-mark": "\u200e",
    "right-to-left-mark": "\u200f",
    "arabic-letter-mark": "\u061c",
}


@pytest.mark.parametrize("how", ["X-File-Name", "Content-Disposition"])
@pytest.mark.parametrize("control", BIDI_CONTROLS.values(), ids=BIDI_CONTROLS.keys())
def test_bidirectional_controls_in_file_names_are_400(
    target: Target, control: str, how: str
) -> None:
    name = f"invoice{control}fdp.exe"
    if how == "X-File-Name":
        environ = {"HTTP_X_FILE_NAME": as_header(name)}
    else:
        quoted = urllib.parse.quote(name, safe="")
        environ = {"HTTP_CONTENT_DISPOSITION": f"attachment; filename*=UTF-8''{quoted}"}
    before = target.snapshot()
    response = target.client.post(
        "/upload", data=b"x", headers=auth(target.token()), environ_overrides=environ
    )
    assert response.status_code == 400
    assert "control characters" in response.text
    assert target.snapshot() == before


@pytest.mark.parametrize(
    "path",
    [
        "/static/app.py",
        "/static/../app.py",
        "/static/..%2fapp.py",
        "/static/%2e%2e/config.py",
        "/docs/../../../../../../etc/passwd",
        "/docs/..%2f..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
        "/docs/%2e%2e/%2e%2e/%2e%2e/flask_swagger_ui/__init__.py",
        "/docs/..\\..\\..\\flask_swagger_ui\\__init__.py",
        "/docs//etc/passwd",
        "/docs/%00",
        "/app/../page.py",
        "/app/..%2fpage.py",
        "/app/%2e%2e/config.py",
        "/app/..%2f..%2fconfig.py",
        "/app/..\\page.py",
        "/app/%00",
        "/app/.",
    ],
)
def test_asset_routes_serve_nothing_outside_their_folder(target: Target, path: str) -> None:
    response = target.client.get(path, follow_redirects=True)  # "//" is redirected to "/"
    response.close()
    assert response.status_code in (400, 404), path
    assert b"root:" not in response.data and b"import " not in response.data


def test_the_asset_routes_do_serve_their_folders(target: Target) -> None:
    """The control for the traversal attempts above."""
    for path in ("/docs/swagger-ui.css", "/app/app.js"):
        response = target.client.get(path)
        response.close()
        assert response.status_code == 200, path
    # The page's folder is web/static/, but Flask's own /static/ route is off: it is served only
    # under /app/, with the page's security headers.
    assert (Path(target.app.root_path) / "static" / "app.js").exists()
    assert target.client.get("/static/app.js").status_code == 404


# -- oversized requests over real HTTP --------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("serve-input"))
    yield server
    server.stop()


def raw_request(server: Server, head: bytes, body: bytes = b"") -> int:
    """Send bytes as they are; the status of the answer (0 if the server closed without one)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        # It may answer and close before reading everything: the answer is what counts.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(head + body)
        try:
            answer = http.client.HTTPResponse(sock)
            answer.begin()
        except (http.client.RemoteDisconnected, ConnectionResetError):
            return 0
        return answer.status


OVERSIZED = {
    "one-64-KiB-header": b"X-Padding: " + b"a" * (64 << 10) + b"\r\n",
    "one-64-KiB-token": b"x-access-tokens: " + b"a" * (64 << 10) + b"\r\n",
    "one-64-KiB-password": b"User_Name: x\r\nUser_Password: " + b"a" * (64 << 10) + b"\r\n",
    "500-headers": b"".join(b"X-H%d: v\r\n" % i for i in range(500)),
    "8-KiB-header-names": b"X-" + b"n" * 8192 + b": v\r\n",
    "1-MiB-of-headers": b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 4000) for i in range(256)),
}


@pytest.mark.e2e
@pytest.mark.parametrize("path", ["/login", "/upload", "/files"])
@pytest.mark.parametrize("headers", OVERSIZED.values(), ids=OVERSIZED.keys())
def test_oversized_headers_are_4xx_over_http(server: Server, path: str, headers: bytes) -> None:
    method = b"POST" if path == "/upload" else b"GET"
    head = method + b" " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n"
    assert 400 <= raw_request(server, head) < 500  # gunicorn: 431
    response, _ = server.request("GET", "/healthz")
    assert response.status == 200  # and the server is still there


@pytest.mark.e2e
def test_oversized_request_line_and_body_are_4xx_over_http(server: Server) -> None:
    long_url = b"GET /files/" + b"a" * (64 << 10) + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    assert 400 <= raw_request(server, long_url) < 500
    long_query = b"GET /files?cursor=" + b"a" * (16 << 10) + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    assert 400 <= raw_request(server, long_query) < 500
    body = json.dumps({"User_Name": "x" * (16 * MiB), "User_Password": PASSWORD}).encode()
    head = (
        b"GET /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    assert 400 <= raw_request(server, head, body) < 500
    response, _ = server.request("GET", "/healthz")
    assert response.status == 200
