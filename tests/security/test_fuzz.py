"""Schemathesis against the served OpenAPI document (OWASP API8:2023 and API4:2023; ASVS 5.0 V4 API).

Every operation of ``GET /openapi.json`` is fuzzed on the WSGI app directly: schema-valid requests
(positive) and schema-violating ones (negative), a bounded number each, with a fixed seed, as a
registered user. Each answer must not be a 5xx, and its status, content type, headers and body must
be what the document says. A stateful run then follows links from listings to the file routes.

The document declares no OpenAPI ``links``; schemathesis infers them from the schemas (``FileInfo.id``
of ``GET /files`` and ``GET /files/{id}/info`` feeds the ``{id}`` of the file routes). Nothing links
``POST /upload`` to the file routes (its answer is plain text unless JSON is asked for, and its
request body is raw bytes), so the stateful run starts from files uploaded beforehand.

Schemathesis only sends the query parameters the document declares, in their declared types. A
hypothesis test then sends every route of ``app.url_map`` arbitrary query strings: any key, any
bytes, digits of other scripts (``str.isdigit`` accepts them), huge numbers, broken base64 and
cursors naming out-of-range times. None may answer 5xx.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import checks
from schemathesis.generation.modes import GenerationMode

from cryptofiles.web import services_of
from cryptofiles.web.docs import load_spec
from tests.support.api import auth, register
from tests.support.apps import running_app
from tests.support.settings import settings_for

PASSWORD = "fuzzer-password"
UPLOAD_LIMIT = 64 << 10  # so that over-limit uploads are cheap to generate
HTTP_METHODS = ("get", "put", "post", "patch", "delete", "head", "options")
SPEC = load_spec()
# Schemathesis leaves out the operation that serves the document it loaded (GET /openapi.json).
DOCUMENT = "GET /openapi.json"
# Their only input is a path segment of any text: no value breaks that schema once put in a URL.
NOTHING_TO_NEGATE = {
    "GET /docs/{filename}",
    "GET /app/{name}",
    "GET /s/{token}",
    "GET /s/{token}/file",
}


def operations() -> Iterator[tuple[str, bool]]:
    """("METHOD /path", whether it takes input that a negative case can break) per operation."""
    for path, item in SPEC["paths"].items():
        for method in HTTP_METHODS:
            label = f"{method.upper()} {path}"
            if method in item and label != DOCUMENT:
                operation = item[method]
                has_input = label not in NOTHING_TO_NEGATE and bool(
                    item.get("parameters")
                    or operation.get("parameters")
                    or operation.get("requestBody")
                    or operation.get("security", SPEC.get("security"))
                )
                yield label, has_input


OPERATIONS = [label for label, _ in operations()]
CASES = [
    pytest.param(label, mode, id=f"{label}-{name}")
    for label, has_input in operations()
    for name, mode in (("positive", GenerationMode.POSITIVE), ("negative", GenerationMode.NEGATIVE))
    if has_input or mode is GenerationMode.POSITIVE
]
# tus's body type is raw bytes, like application/octet-stream, under another name.
schemathesis.serializer.alias("application/offset+octet-stream", "application/octet-stream")
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]
TOKEN_HEADERS = {"authorization", "x-access-tokens"}
SEEDED_FILES = 3


def fuzz_settings(**changes: Any) -> settings:
    return settings(
        **{"max_examples": 20, **changes},
        derandomize=True,  # the same cases on every run
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )


class ClosingClient(FlaskClient):
    """Schemathesis's WSGI transport reads each answer but never closes it, which leaves files
    that ``send_file`` opened to the garbage collector (a ResourceWarning, an error here)."""

    def open(self, *args: Any, **kwargs: Any) -> Any:
        response = super().open(*args, **kwargs)
        response.get_data()  # kept on the response...
        response.close()  # ...and what produced it released
        return response


@dataclasses.dataclass
class Fuzz:
    app: Flask
    client: FlaskClient
    schema: Any
    public_id: str
    session: ClosingClient

    def token(self) -> str:
        """A fresh token of the fuzzer's (a generated POST /logout may revoke any one of them)."""
        authenticator = services_of(self.app).accounts
        user = authenticator.storage.users.by_public_id(self.public_id)
        return str(authenticator.tokens.issue(user.public_id, user.token_generation).token)

    def authorize(self, case: Any) -> dict[str, str]:
        """Drop whatever credentials were generated; the call then carries a valid token."""
        if case.headers:
            for name in [n for n in case.headers if n.lower() in TOKEN_HEADERS]:
                del case.headers[name]
        return auth(self.token())

    def seed(self) -> None:
        """Keep a few of the fuzzer's files around for the stateful run's links to find."""
        listed = self.client.get("/files", headers=auth(self.token())).json
        for n in range(SEEDED_FILES - len(listed["files"])):  # type: ignore[index]
            response = self.client.post(
                "/upload",
                data=os.urandom(100 + n),
                headers={**auth(self.token()), "X-File-Name": f"seed-{n}.bin"},
            )
            assert response.status_code == 201, response.text

    def reseed(self) -> None:
        """Exactly the seeded files, nothing a previous example left: hypothesis replays examples
        and must see the same listing each time (its length shapes what the next steps draw)."""
        token = self.token()
        storage = services_of(self.app).storage
        for file_id, _ in storage.files.owned_by(self.public_id):
            services_of(self.app).files.discard(file_id)
        assert self.client.get("/files", headers=auth(token)).json["files"] == []  # type: ignore[index]
        self.seed()


@pytest.fixture(scope="module")
def fuzz(mongodb_uri: str, master_keys: str) -> Iterator[Fuzz]:
    settings = settings_for(mongodb_uri, master_keys, MAX_UPLOAD_BYTES=str(UPLOAD_LIMIT))
    with running_app(settings) as app:
        client = app.test_client()
        public_id = register(client, "fuzzer", PASSWORD)
        schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
        fuzz = Fuzz(app, client, schema, public_id, ClosingClient(app, use_cookies=False))
        fuzz.seed()
        yield fuzz


@pytest.mark.parametrize(("label", "mode"), CASES)
def test_operation(fuzz: Fuzz, label: str, mode: GenerationMode) -> None:
    method, path = label.split(" ", 1)
    operation = fuzz.schema[path][method]

    @fuzz_settings()
    @given(case=operation.as_strategy(generation_mode=mode))
    def call_and_check(case: Any) -> None:
        response = case.call(session=fuzz.session, headers=fuzz.authorize(case))
        case.validate_response(response, checks=CHECKS)

    call_and_check()


def test_the_document_is_what_is_fuzzed(fuzz: Fuzz) -> None:
    """The parametrization above (from the packaged YAML) covers what the app serves."""
    served = {
        f"{operation.ok().method.upper()} {operation.ok().path}"
        for operation in fuzz.schema.get_all_operations()
    }
    assert served == set(OPERATIONS)


def test_stateful_links_from_listings_to_the_file_routes(fuzz: Fuzz) -> None:
    # The tus routes are fuzzed one by one above; a creation's Location would feed the machine
    # server-made ids, which make replays draw differently (FlakyStrategyDefinition).
    machine = fuzz.schema.exclude(path_regex="^/uploads/").as_state_machine()
    transitions = [name for name in dir(machine) if "files_id" in name]
    assert transitions, "schemathesis no longer infers links to the file routes"

    reached: set[tuple[str, int]] = set()

    class Workflow(machine):  # type: ignore[misc, valid-type]
        def setup(self) -> None:
            fuzz.reseed()

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"session": fuzz.session, "headers": fuzz.authorize(case)}

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            reached.add((case.operation.label, response.status_code))
            case.validate_response(response, checks=CHECKS)

    Workflow.run(settings=fuzz_settings(stateful_step_count=6))
    # Not vacuous: linked ids really reached the owner-only routes.
    linked = {label for label, status in reached if status in (200, 204)}
    assert linked & {"GET /files/{id}/key", "GET /files/{id}/info", "GET /files/{id}/plaintext"}


# -- query strings on every route ------------------------------------------------------------------

QUERY_NAMES = sorted(
    {
        parameter["name"]
        for item in SPEC["paths"].values()
        for operation in item.values()
        if isinstance(operation, dict)
        for parameter in operation.get("parameters", [])
        if parameter.get("in") == "query"
    }
)
NOT_ROUTED_BY_US = frozenset({"HEAD", "OPTIONS"})  # Flask answers these itself


def cursor(millis: int, file_id: str) -> bytes:
    """A cursor as the server writes them, naming any time at all."""
    return base64.urlsafe_b64encode(f"{millis}/{file_id}".encode()).rstrip(b"=")


QUERY_VALUES = st.one_of(
    st.binary(max_size=40),
    st.text(max_size=20).map(str.encode),
    # Characters that str.isdigit or int() take for digits: superscripts, fullwidth, other scripts.
    st.text(st.characters(categories=["Nd", "No"]), min_size=1, max_size=4).map(str.encode),
    st.integers(min_value=-(10**40), max_value=10**40).map(lambda n: str(n).encode()),
    st.just(b"9" * 5000),
    st.binary(max_size=60).map(base64.urlsafe_b64encode),
    st.builds(cursor, st.integers(min_value=-(10**22), max_value=10**22), st.uuids().map(str)),
)
QUERY = st.lists(
    st.tuples(
        st.one_of(st.sampled_from(QUERY_NAMES).map(str.encode), st.binary(max_size=12)),
        QUERY_VALUES,
    ),
    min_size=1,
    max_size=4,
)


def every_route(app: Flask) -> list[tuple[str, str, str, frozenset[str]]]:
    """``(method, rule, endpoint, path arguments)`` of every route the app serves itself."""
    return [
        (method, rule.rule, rule.endpoint, frozenset(rule.arguments))
        for rule in app.url_map.iter_rules()
        for method in sorted((rule.methods or set()) - NOT_ROUTED_BY_US)
    ]


def query_string(pairs: list[tuple[bytes, bytes]]) -> str:
    """Percent-encoded as sent on the wire, so that any bytes (not only UTF-8) reach the app."""
    quote = urllib.parse.quote_from_bytes
    return "&".join(f"{quote(k)}={quote(v)}" for k, v in pairs)


def test_query_strings_never_answer_5xx(fuzz: Fuzz) -> None:
    routes = every_route(fuzz.app)
    assert ("GET", "/files", "files.list_files", frozenset()) in routes and len(routes) > 10
    adapter = fuzz.app.url_map.bind("localhost")

    @fuzz_settings(max_examples=40 * len(routes))
    @given(route=st.sampled_from(routes), pairs=QUERY)
    def call(route: tuple[str, str, str, frozenset[str]], pairs: list[tuple[bytes, bytes]]) -> None:
        method, rule, endpoint, arguments = route
        # An existing file of the fuzzer's (a DELETE example may have removed the last one).
        fuzz.seed()
        listed = fuzz.client.get("/files", headers=auth(fuzz.token())).json
        values = {
            "file_id": listed["files"][0]["id"],  # type: ignore[index]
            "filename": "swagger-ui.css",
            "name": "app.js",
            "user": "fuzzer",  # a grant's user (the owner: no grant, a 404)
            "token": "no-such-link-token",
            "link_id": "4b1b0a4e-9c1f-4a4e-8f3e-2f1b0c5d6e7f",
            "upload_id": "4b1b0a4e-9c1f-4a4e-8f3e-2f1b0c5d6e80",  # no such upload: a 404
        }
        response = fuzz.session.open(
            adapter.build(endpoint, {k: values[k] for k in arguments}, method=method),
            method=method,
            query_string=query_string(pairs),
            headers=auth(fuzz.token()),
            data=b"fuzz" if method == "POST" else None,
        )
        assert response.status_code < 500, (method, rule, pairs, response.text)

    call()
