"""cryptofiles/openapi.yaml is valid OpenAPI 3.1 and true to the app; /docs works offline.

The document is written by hand; these tests keep it true: its operations are exactly the app's
routes, and real answers to requests covering every operation (status, content type, headers) are
among those it documents for that operation.
"""

from __future__ import annotations

import base64
import hashlib
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from openapi_spec_validator import validate
from pyrage import x25519
from werkzeug.test import TestResponse

from cryptofiles.storage import DatabaseUnavailable
from cryptofiles.web import services_of
from cryptofiles.web.docs import load_spec
from tests.support.api import PASSWORD, Accounts

HTTP_METHODS = ("get", "put", "post", "patch", "delete")  # HEAD and OPTIONS are Flask's own...
TUS_METHODS = ("head", "options")  # ...except under /uploads/, where tus makes them ours
TUS = {"Tus-Resumable": "1.0.0"}
UPLOAD_LIMIT = 1024
JSON = "application/json"


@pytest.fixture
def settings_values(settings_values: dict[str, str]) -> dict[str, str]:
    return {**settings_values, "MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT)}


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def spec() -> dict[str, Any]:
    return load_spec()


def template(path: str) -> str:
    """``/files/<file_id>/key`` and ``/files/{id}/key`` both become ``/files/{}/key``."""
    return re.sub(r"<[^>]+>|\{[^}]+\}", "{}", path)


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method in HTTP_METHODS + TUS_METHODS:
            if method in item:
                yield method, path, item[method]


def resolve(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = spec
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def media_matches(documented: str, actual: str) -> bool:
    (doc_type, doc_sub), (act_type, act_sub) = documented.split("/"), actual.split("/")
    return doc_type in ("*", act_type) and doc_sub in ("*", act_sub)


def check_documented(spec: dict[str, Any], method: str, url: str, response: TestResponse) -> str:
    """Fails unless the answer is documented for its operation; returns the operation's path."""
    path = url.partition("?")[0]
    for doc_path, item in spec["paths"].items():
        segments = ("[^/]+" if s.startswith("{") else re.escape(s) for s in doc_path.split("/"))
        if method in item and re.fullmatch("/".join(segments), path):
            break
    else:
        pytest.fail(f"{method.upper()} {path}: no such operation in the document")
    where = f"{method.upper()} {doc_path}"
    documented = item[method]["responses"]
    status = str(response.status_code)
    assert status in documented, f"{where} answered {status}, documents only {sorted(documented)}"
    answer = resolve(spec, documented[status])
    if "content" in answer:
        types = answer["content"]
        assert any(media_matches(t, response.mimetype or "") for t in types), (
            f"{where} {status} answered {response.mimetype}, documents only {sorted(types)}"
        )
    else:
        assert response.data == b"", f"{where} {status} has a body, documented without one"
    for header in answer.get("headers", {}):
        assert header in response.headers, f"{where} {status}: documented header {header} missing"
    return str(doc_path)


def test_document_is_valid_openapi_3_1(spec: dict[str, Any]) -> None:
    validate(spec)
    assert spec["openapi"].startswith("3.1.")
    schemes = spec["components"]["securitySchemes"]
    token_header = schemes["accessToken"]
    assert (token_header["type"], token_header["in"], token_header["name"]) == (
        "apiKey",
        "header",
        "x-access-tokens",
    )
    assert (schemes["bearerAuth"]["type"], schemes["bearerAuth"]["scheme"]) == ("http", "bearer")


def test_served_as_json_without_a_token(client: FlaskClient, spec: dict[str, Any]) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.json == spec


def test_documented_operations_are_exactly_the_routes(client: FlaskClient) -> None:
    spec = client.get("/openapi.json").json
    assert spec is not None
    routes = {
        (method.lower(), template(rule.rule))
        for rule in client.application.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in rule.methods or ()
        if method.lower() in HTTP_METHODS
        or (rule.endpoint.startswith("uploads.") and method.lower() in TUS_METHODS)
    }
    documented = {(method, template(path)) for method, path, _ in operations(spec)}
    assert sorted(routes - documented) == [], "routes missing from cryptofiles/openapi.yaml"
    assert sorted(documented - routes) == [], "documented operations that the app does not have"


def test_secured_operations_answer_401_without_a_valid_token(
    client: FlaskClient, spec: dict[str, Any]
) -> None:
    secured = [
        (method, path)
        for method, path, operation in operations(spec)
        if operation.get("security", spec["security"])
    ]
    assert len(secured) >= 9
    for method, path in secured:
        url = re.sub(r"\{[^}]+\}", str(uuid.uuid4()), path)
        for headers in ({}, {"x-access-tokens": "nonsense"}, {"Authorization": "Bearer nonsense"}):
            for accept in ("*/*", JSON):
                response = client.open(
                    url, method=method.upper(), headers={"Accept": accept, **TUS, **headers}
                )
                assert response.status_code == 401, (method, path, headers)
                check_documented(spec, method, url, response)


def test_real_answers_are_documented(
    client: FlaskClient, accounts: Accounts, spec: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    answered: set[tuple[str, str]] = set()

    def send(
        method: str,
        url: str,
        status: int,
        *,
        accept: str = "*/*",
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> TestResponse:
        headers = {"Accept": accept, **(headers or {})}
        # buffered: read and close the answer, as a WSGI server would (no file left open)
        response = client.open(url, method=method.upper(), headers=headers, buffered=True, **kwargs)
        assert response.status_code == status, (method, url, response.text)
        answered.add((method, check_documented(spec, method, url, response)))
        return response

    def send_both(method: str, url: str, status: int, **kwargs: Any) -> TestResponse:
        """The same request as curl sends it (plain text) and asking for JSON."""
        send(method, url, status, accept=JSON, **kwargs)
        return send(method, url, status, **kwargs)

    # Accounts, the seed's way (headers) and with JSON bodies.
    new_user = {"New_User_Name": "alice", "New_User_Password": PASSWORD}
    send("post", "/registration", 201, headers=new_user)
    send("post", "/registration", 201, accept=JSON, json={**new_user, "New_User_Name": "bob"})
    send_both("post", "/registration", 400, headers=new_user)  # the name is taken
    login = {"User_Name": "alice", "User_Password": PASSWORD}
    token = send("get", "/login", 200, headers=login).text
    send("get", "/login", 200, accept=JSON, json=login)
    send_both("get", "/login", 401, headers={**login, "User_Password": "wrong password"})
    send_both("get", "/login", 400)
    send("post", "/login", 200, accept=JSON, json=login)
    send_both("post", "/login", 401, json={**login, "User_Password": "wrong password"})
    alice = {"x-access-tokens": token}
    send_both("get", "/test_login", 200, headers={"Authorization": f"Bearer {token}"})

    # Files.
    named = {**alice, "X-File-Name": "notes.txt", "X-Content-Type": "text/plain"}
    file_id = send("post", "/upload", 201, headers=named, data=b"hello " * 100).text
    send("post", "/upload", 201, accept=JSON, headers=alice, data=b"more")
    send_both("post", "/upload", 400, headers=alice, data=b"")
    send_both("post", "/upload", 413, headers=alice, data=b"x" * (UPLOAD_LIMIT + 1))
    send_both("get", "/files", 200, headers=alice)
    send_both("get", "/files?limit=0", 400, headers=alice)
    unknown = str(uuid.uuid4())
    for route in ("/files/{}", "/files/{}/plaintext", "/files/{}/key", "/files/{}/info"):
        send_both("get", route.format(file_id), 200, headers=alice)
        send_both("get", route.format(unknown), 404, headers=alice)
    for route in ("/files/{}", "/files/{}/plaintext"):
        url = route.format(file_id)
        send_both("get", url, 206, headers={**alice, "Range": "bytes=0-9"})
        send_both("get", url, 416, headers={**alice, "Range": "bytes=100000-"})
        etag = send("get", url, 200, headers=alice).headers["ETag"]
        send_both("get", url, 304, headers={**alice, "If-None-Match": etag})
    # Sharing: grants, the grantee's view, the history.
    bob = {"x-access-tokens": accounts.login("bob")}
    grants = f"/files/{file_id}/grants"
    send("post", grants, 201, headers=alice, json={"user": "bob"})
    send_both("post", grants, 200, headers=alice, json={"user": "bob", "expires_at": None})
    send_both("post", grants, 400, headers=alice, json={"user": "alice"})
    send_both("post", f"/files/{unknown}/grants", 404, headers=alice, json={"user": "bob"})
    send_both("get", grants, 200, headers=alice)
    send_both("get", grants, 404, headers=bob)
    send_both("get", f"/files/{file_id}/key", 200, headers=bob)
    send_both("get", "/files?shared=with-me", 200, headers=bob)
    send_both("get", "/files?shared=nope", 400, headers=bob)
    send("delete", f"{grants}/bob", 204, headers=alice)
    send_both("delete", f"{grants}/bob", 404, headers=alice)
    send_both("get", f"/files/{file_id}/events?limit=2", 200, headers=alice)
    send_both("get", f"/files/{file_id}/events?cursor=x", 400, headers=alice)
    send_both("get", f"/files/{file_id}/events", 404, headers=bob)
    share_links(send, send_both, alice, file_id, unknown)
    send_both("delete", f"/files/{unknown}", 404, headers=alice)
    resumable_uploads(send, send_both, alice, unknown)
    send_recipients_and_sealed_keys(send, send_both, alice, file_id)
    send("delete", f"/files/{file_id}", 204, headers=alice)

    # Operations and these docs.
    send_both("get", "/healthz", 200)
    send_both("get", "/readyz", 200)
    send_both("get", "/metrics", 401)  # no METRICS_TOKEN here; the 200 is in tests/test_metrics.py

    def unavailable() -> None:
        raise DatabaseUnavailable("down")

    with monkeypatch.context() as patch:
        patch.setattr(services_of(client.application).storage, "ping", unavailable)
        send_both("get", "/readyz", 503)
    send("get", "/openapi.json", 200)
    send("get", "/docs", 200)
    send("get", "/docs/swagger-ui.css", 200)
    send_both("get", "/docs/no-such-asset.js", 404)
    send("get", "/", 302)
    send("get", "/app/", 200)
    send("get", "/app/app.js", 200)
    send_both("get", "/app/no-such-asset.js", 404)

    # Logging out, last: the token is revoked afterwards.
    send("post", "/logout", 200, headers=alice)
    send_both("post", "/logout", 401, headers=alice)
    send_both("get", "/test_login", 401, headers=alice)
    other = {"x-access-tokens": accounts.login("alice")}
    send("post", "/logout", 200, accept=JSON, headers=other)

    # The account: a new password revokes every token; deleting takes the files along.
    change = {"User_Password": PASSWORD, "New_User_Password": "another password"}
    alice = {"x-access-tokens": accounts.login("alice")}
    send_both("put", "/account/password", 401, headers={**alice, **change, "User_Password": "no"})
    send_both("put", "/account/password", 400, headers=alice)
    send("put", "/account/password", 200, headers={**alice, **change})
    alice = {"x-access-tokens": accounts.login("alice", "another password")}
    back = {"User_Password": "another password", "New_User_Password": PASSWORD}
    send("put", "/account/password", 200, accept=JSON, headers=alice, json=back)
    alice = {"x-access-tokens": accounts.login("alice")}
    send_both("delete", "/account", 400, headers=alice)
    send_both("delete", "/account", 401, headers={**alice, "User_Password": "wrong password"})
    send("delete", "/account", 200, headers={**alice, "User_Password": PASSWORD})
    bob = {"x-access-tokens": accounts.login("bob")}
    send("delete", "/account", 200, accept=JSON, headers=bob, json={"User_Password": PASSWORD})

    assert answered == {(method, path) for method, path, _ in operations(spec)}


def send_recipients_and_sealed_keys(
    send: Any, send_both: Any, alice: dict[str, str], file_id: str
) -> None:
    """The account's age recipients, and the key route's sealed forms and refusals."""
    recipient = str(x25519.Identity.generate().to_public())
    send_both("get", "/account", 200, headers=alice)
    send_both("put", "/account/recipients", 400, headers=alice, json={"recipients": ["age1x"]})
    body = {"recipients": [recipient], "require_sealed": True}
    send_both("put", "/account/recipients", 200, headers=alice, json=body)
    key = f"/files/{file_id}/key"
    send_both("get", key, 200, headers=alice)  # armored text, or JSON holding it
    send("get", key, 200, accept="application/octet-stream", headers=alice)
    send_both("get", key + "?plain=1", 403, headers=alice)
    send_both("get", key + "?plain=2", 400, headers=alice)
    send(
        "put",
        "/account/recipients",
        200,
        headers=alice,
        json={"recipients": [], "require_sealed": False},
    )


def resumable_uploads(send: Any, send_both: Any, alice: dict[str, str], unknown: str) -> None:
    """The tus routes: discovery, creation (with and without a body), status, append, refusals,
    termination."""
    tus = {**alice, **TUS}
    body = {**tus, "Content-Type": "application/offset+octet-stream"}
    send("options", "/uploads/", 204)
    created = send("post", "/uploads/", 201, headers={**tus, "Upload-Length": "10"})
    upload = "/uploads/" + created.headers["Location"].rsplit("/", 1)[1]
    send("options", upload, 204)
    send("head", upload, 200, headers=tus)
    send("head", f"/uploads/{unknown}", 404, headers=tus)
    send_both("post", "/uploads/", 400, headers={**tus, "Upload-Length": "0"})
    send_both("post", "/uploads/", 412, headers={**alice, "Upload-Length": "10"})
    too_long = {**tus, "Upload-Length": str(UPLOAD_LIMIT + 1)}
    send_both("post", "/uploads/", 413, headers=too_long)
    send_both("post", "/uploads/", 415, headers={**tus, "Upload-Length": "3"}, data=b"abc")
    send_both("patch", upload, 409, headers={**body, "Upload-Offset": "5"}, data=b"abcde")
    send_both("patch", upload, 400, headers={**body, "Upload-Offset": "0"}, data=b"x" * 11)
    send_both("patch", upload, 412, headers={**alice, "Upload-Offset": "0"}, data=b"x")
    send_both("patch", upload, 415, headers={**tus, "Upload-Offset": "0"}, data=b"x" * 10)
    send_both("patch", f"/uploads/{unknown}", 404, headers={**body, "Upload-Offset": "0"})
    send_both("delete", f"/uploads/{unknown}", 404, headers=tus)
    send_both("delete", upload, 412, headers=alice)
    wrong = "sha256 " + base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    checked = {**body, "Upload-Offset": "0", "Upload-Checksum": wrong}
    send("patch", upload, 460, headers=checked, data=b"0123456789")
    send("patch", upload, 404, headers={**body, "Upload-Offset": "0"}, data=b"0123456789")
    checked = {**body, "Upload-Length": "4", "Upload-Checksum": wrong}
    send("post", "/uploads/", 460, accept=JSON, headers=checked, data=b"abcd")
    with_body = {**body, "Upload-Length": "4"}
    created = send("post", "/uploads/", 201, headers=with_body, data=b"abcd")
    assert created.headers["Upload-Offset"] == "4"
    upload = "/uploads/" + created.headers["Location"].rsplit("/", 1)[1]
    send("patch", upload, 204, headers={**body, "Upload-Offset": "4"}, data=b"")
    send("delete", upload, 204, headers=tus)


def share_links(
    send: Any, send_both: Any, alice: dict[str, str], file_id: str, unknown: str
) -> None:
    """The share-link routes: create, list, the holder's page and download, revoke."""
    links = f"/files/{file_id}/links"
    send("post", links, 201, headers=alice)
    link = send("post", links, 201, accept=JSON, headers=alice, json={"max_downloads": 1}).json
    send_both("post", links, 400, headers=alice, json={"max_downloads": 0})
    send_both("post", f"/files/{unknown}/links", 404, headers=alice)
    send_both("get", links, 200, headers=alice)
    send_both("get", f"/files/{unknown}/links", 404, headers=alice)
    path = "/s/" + link["url"].rsplit("/s/", 1)[1]
    send("get", path, 200)
    send("get", f"{path}/file", 200)
    send_both("get", path, 404)  # used up
    send_both("get", f"{path}/file", 404)
    send("delete", f"{links}/{link['id']}", 204, headers=alice)
    send_both("delete", f"{links}/{link['id']}", 404, headers=alice)


def test_docs_page_uses_only_local_assets(client: FlaskClient) -> None:
    response = client.get("/docs")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    page = response.text
    assert not re.search(r"https?://", page), "the page must not load anything from elsewhere"
    assert '"url": "/openapi.json"' in page
    assert '"validatorUrl": null' in page  # Swagger UI would otherwise call validator.swagger.io
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert any(url.endswith(".js") for url in assets)
    assert any(url.endswith(".css") for url in assets)
    for url in assets:
        asset = client.get(url, buffered=True)
        assert asset.status_code == 200, url
        assert asset.data, url
