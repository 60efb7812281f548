"""Object-level authorization (OWASP API1:2023 BOLA, API3:2023 property level; ASVS 5.0 V8).

Who may reach which file, found by walking ``app.url_map`` so that a route added later is covered
without anyone remembering to list it here: every route but the public ones needs a token; every
per-file route but the ciphertext download is for the owner only, and answers anybody else exactly
as it answers an id that does not exist. A hypothesis state machine then plays random users, tokens
and files against a model of who owns what.

tests/test_files.py already compares the key route's 404s; this module extends that to every
owner-only route (info, plaintext, DELETE) and to the things around them: listing, metadata,
client-sent ownership fields, and the operator's /metrics (API5:2023, function level).
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
import os
import secrets
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from cryptofiles import crypto
from cryptofiles.web import services_of
from tests.support.answers import answer, keys_of
from tests.support.api import JSON, auth, login, register, upload
from tests.support.apps import running_app
from tests.support.settings import settings_for

PASSWORD = "object-level-password"
CHEAP_HASH = "scrypt:1024:8:1"
PUBLIC_RULES = frozenset(
    {"/registration", "/login", "/healthz", "/readyz", "/openapi.json", "/docs"}
    | {"/docs/<path:filename>"}
    # The web page and its scripts: the page asks for a token through the API, like curl.
    | {"/", "/app/", "/app/<name>"}
    # A share link's page and download: the link's token is the credential (tests/test_links.py).
    | {"/s/<token>", "/s/<token>/file"}
    # Flask's own route for the package's static/ folder, which does not exist: it serves nothing
    # (tests/security/test_input.py checks that, traversal included).
    | {"/static/<path:filename>"}
)
NOT_ROUTED_BY_US = frozenset({"HEAD", "OPTIONS"})  # Flask answers these itself
ACCEPTS = {"text": {}, "json": JSON}
# Fields of the stored record that no answer may carry (the record's internals and who owns it).
INTERNAL_FIELDS = frozenset(
    {"wrapped_key", "kek_id", "owner", "status", "heartbeat", "heartbeat_at", "_id"}
)
# The owner-only routes, as the walk below must find them (it fails on any other finding). The key
# and the info are also for the users the owner granted the key (the state machine checks that);
# to a stranger they answer as the rest do.
OWNER_ONLY = [
    ("GET", "/files/{}/key"),
    ("GET", "/files/{}/info"),
    ("GET", "/files/{}/plaintext"),
    ("DELETE", "/files/{}"),
    ("POST", "/files/{}/grants"),
    ("GET", "/files/{}/grants"),
    ("DELETE", "/files/{}/grants/{}"),
    ("GET", "/files/{}/events"),
    ("POST", "/files/{}/links"),
    ("GET", "/files/{}/links"),
    ("DELETE", "/files/{}/links/{}"),
    # A resumable upload's id is its file's id; its routes answer strangers as for an unknown one.
    ("PATCH", "/uploads/{}"),
    ("DELETE", "/uploads/{}"),
]
# Sent with every request: the tus routes refuse any other (412) before they look at the token.
TUS = {"Tus-Resumable": "1.0.0"}
DOWNLOAD = ("GET", "/files/{}")
PLACEHOLDER = "file-id-placeholder"


@dataclasses.dataclass
class World:
    app: Flask
    client: FlaskClient
    db: Any
    alice: str  # the owner's token
    alice_id: str  # her public id
    bob: str  # a stranger's token
    bob_id: str
    revoked: str  # a well-signed token of Bob's, logged out
    file_id: str  # Alice's file
    plaintext: bytes


@pytest.fixture(scope="module")
def world(mongodb_uri: str, master_keys: str) -> Iterator[World]:
    with running_app(settings_for(mongodb_uri, master_keys)) as app:
        client = app.test_client()
        alice_id = register(client, "alice", PASSWORD)
        bob_id = register(client, "bob", PASSWORD)
        alice, bob = login(client, "alice", PASSWORD), login(client, "bob", PASSWORD)
        revoked = login(client, "bob", PASSWORD)
        assert client.post("/logout", headers=auth(revoked)).status_code == 200
        plaintext = b"alice's secret " + os.urandom(64)
        file_id = upload(client, alice, plaintext, **{"X-File-Name": "alice-secret.txt"})["id"]
        db = services_of(app).storage.db
        yield World(app, client, db, alice, alice_id, bob, bob_id, revoked, file_id, plaintext)


def fill(template: str, value: object) -> str:
    """``template`` with every ``{}`` set to ``value`` (a grant's route also names a user)."""
    return template.replace("{}", str(value))


def rule_routes(app: Flask) -> Iterator[tuple[str, str, str]]:
    """(method, rule, endpoint) of every route the app has, bar Flask's own HEAD and OPTIONS."""
    for url_rule in app.url_map.iter_rules():
        for method in sorted((url_rule.methods or set()) - NOT_ROUTED_BY_US):
            yield method, url_rule.rule, url_rule.endpoint


def url_of(app: Flask, endpoint: str, method: str, file_id: str) -> str:
    """The route's URL with every parameter set to ``file_id`` (a real file's id)."""
    url_rule = next(r for r in app.url_map.iter_rules() if r.endpoint == endpoint)
    values = dict.fromkeys(url_rule.arguments, file_id)
    return str(app.url_map.bind("localhost").build(endpoint, values, method=method))


def file_is_intact(world: World) -> bool:
    response = world.client.get(f"/files/{world.file_id}/plaintext", headers=auth(world.alice))
    return response.status_code == 200 and response.data == world.plaintext


# -- authentication on every route ---------------------------------------------------------------


def test_every_route_but_the_public_ones_needs_a_token(world: World) -> None:
    stored = b"".join(
        bytes(c["data"]) for c in world.db["ciphertext.chunks"].find({"files_id": world.file_id})
    )
    credentials = {
        "no token": {},
        "garbage": {"x-access-tokens": "garbage"},
        "revoked": auth(world.revoked),
        "revoked-bearer": {"Authorization": f"Bearer {world.revoked}"},
    }
    secured, failures = [], []
    for method, path, endpoint in rule_routes(world.app):
        url = url_of(world.app, endpoint, method, world.file_id)
        if path in PUBLIC_RULES:
            # The exemption list stays honest: these really answer without a token.
            response = world.client.open(url, method=method)
            response.close()  # a served file's handle, for the page's assets
            if response.status_code == 401:
                failures.append(f"{method} {path} is listed public but wants a token")
            continue
        secured.append((method, path))
        for label, headers in credentials.items():
            for accept in ACCEPTS.values():
                response = world.client.open(
                    url, method=method, headers={**headers, **accept, **TUS}, data=b"uploaded body"
                )
                if response.status_code != 401:
                    failures.append(f"{method} {path} ({label}): {response.status_code}")
                elif response.headers.get("WWW-Authenticate") != "Bearer":
                    failures.append(f"{method} {path} ({label}): no WWW-Authenticate: Bearer")
                for secret in (world.plaintext, stored[-32:], b"alice-secret"):
                    if secret in response.data:
                        failures.append(f"{method} {path} ({label}) leaked file data")
    assert failures == []
    # The walk really walked: the file routes and the account routes are all among the secured.
    assert len(secured) >= 11, secured
    assert file_is_intact(world)  # DELETE without a valid token deleted nothing
    assert world.db.files.count_documents({}) == 1  # and uploads without one stored nothing


def test_every_per_file_route_is_owner_only_except_the_download(world: World) -> None:
    """Classify each route with a file id by what a stranger gets for a real file: only the
    ciphertext download may answer 200; everything else must answer what an unknown id gets."""
    found = set()
    for method, path, endpoint in rule_routes(world.app):
        url_rule = next(r for r in world.app.url_map.iter_rules() if r.endpoint == endpoint)
        if path in PUBLIC_RULES or not url_rule.arguments:
            continue
        template = url_of(world.app, endpoint, method, PLACEHOLDER).replace(PLACEHOLDER, "{}")
        headers = {**auth(world.bob), **TUS}
        real = world.client.open(fill(template, world.file_id), method=method, headers=headers)
        unknown = world.client.open(fill(template, uuid.uuid4()), method=method, headers=headers)
        if (method, template) == DOWNLOAD:
            assert real.status_code == 200
            continue
        what = "upload" if template.startswith("/uploads/") else "file"
        no_such_file = (404, f"No such {what}.\n".encode())
        assert (unknown.status_code, unknown.data) == no_such_file, f"{method} {path}"
        assert (real.status_code, real.data) == no_such_file, f"{method} {path} tells a stranger"
        found.add((method, template))
    assert found == set(OWNER_ONLY), "a per-file route is missing from OWNER_ONLY, or gone"
    assert file_is_intact(world)


def malformed_forms(file_id: str) -> dict[str, str]:
    return {
        "word": "abc",
        "upper": file_id.upper(),
        "hex": uuid.UUID(file_id).hex,
        "urn": f"urn:uuid:{file_id}",
        "braces": "%7B" + file_id + "%7D",
        "nil": str(uuid.UUID(int=0)),
        "spaces": f"%20{file_id}%20",
        "operator": "%7B%22%24ne%22%3A%20null%7D",  # {"$ne": null}
    }


@pytest.mark.parametrize("accept", ACCEPTS.values(), ids=ACCEPTS.keys())
@pytest.mark.parametrize(("method", "route"), OWNER_ONLY, ids=[f"{m} {r}" for m, r in OWNER_ONLY])
def test_strangers_get_the_answer_of_an_unknown_id(
    world: World, method: str, route: str, accept: dict[str, str]
) -> None:
    def ask(file_id: str, token: str) -> tuple[Any, ...]:
        response = world.client.open(
            fill(route, file_id), method=method, headers={**auth(token), **accept, **TUS}
        )
        # The rate-limit counters count requests, whatever they ask for: not an oracle.
        status, content_type, body, headers = answer(response)
        headers.pop("x-ratelimit-remaining", None)
        return status, content_type, body, headers

    reference = ask(str(uuid.uuid4()), world.bob)
    assert reference[0] == 404
    probes = {
        "stranger, real id": ask(world.file_id, world.bob),
        "owner, unknown id": ask(str(uuid.uuid4()), world.alice),
    }
    for label, form in malformed_forms(world.file_id).items():
        probes[f"stranger, {label}"] = ask(form, world.bob)
        probes[f"owner, {label}"] = ask(form, world.alice)
    different = {label: got for label, got in probes.items() if got != reference}
    assert different == {}, f"expected {reference}"
    assert file_is_intact(world)


METRICS_TOKEN = "metrics-token-for-the-operator"


@pytest.mark.parametrize("configured", [True, False], ids=["metrics-token-set", "no-metrics-token"])
def test_metrics_open_to_the_operators_token_only(
    mongodb_uri: str, master_keys: str, configured: bool
) -> None:
    """Function-level authorization (API5:2023): a user's token is not the operator's."""
    extra = {"METRICS_TOKEN": METRICS_TOKEN} if configured else {}
    with running_app(settings_for(mongodb_uri, master_keys, **extra)) as app:
        client = app.test_client()
        public_id = register(client, "metered-user", PASSWORD)
        token = login(client, "metered-user", PASSWORD)
        file_id = upload(client, token, b"counted", **{"X-File-Name": "private-name.txt"})["id"]
        client.get(f"/files/{file_id}/key", headers=auth(token))
        refused = {
            "nothing": {},
            "user-token": auth(token),
            "user-token-as-bearer": {"Authorization": f"Bearer {token}"},
            "wrong-token": {"Authorization": "Bearer " + "x" * len(METRICS_TOKEN)},
            "token-prefix": {"Authorization": f"Bearer {METRICS_TOKEN[:-1]}"},
            "empty-bearer": {"Authorization": "Bearer "},
            "none": {"Authorization": "Bearer None"},
            "basic": {"Authorization": f"Basic {METRICS_TOKEN}"},
        }
        for label, headers in refused.items():
            assert client.get("/metrics", headers=headers).status_code == 401, label
        response = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        if not configured:
            assert response.status_code == 401
            return
        assert response.status_code == 200
        # Series are by route pattern: no file id, user id, name or token in them.
        for secret in (file_id, public_id, "private-name", "metered-user", token):
            assert secret not in response.text


# -- listing and metadata --------------------------------------------------------------------------


def listed(client: FlaskClient, token: str, query: str = "") -> list[str]:
    response = client.get(f"/files{query}", headers=auth(token))
    assert response.status_code == 200, response.text
    return [f["id"] for f in response.json["files"]]  # type: ignore[index]


def test_the_list_holds_only_your_own_files(client: FlaskClient) -> None:
    ids = {name: register(client, name, PASSWORD) for name in ("alice", "bob", "carol")}
    tokens = {name: login(client, name, PASSWORD) for name in ids}
    own = {
        "alice": {upload(client, tokens["alice"], b"a%d" % i)["id"] for i in range(3)},
        "bob": {upload(client, tokens["bob"], b"bob's")["id"]},
        "carol": set(),
    }
    first_page = client.get("/files?limit=1", headers=auth(tokens["alice"])).json
    alices_cursor = first_page["next_cursor"]  # type: ignore[index]
    assert alices_cursor
    for name, token in tokens.items():
        for query in (
            "",
            "?limit=1000",
            f"?owner={ids['alice']}",
            f"?user={ids['alice']}&owner_id={ids['alice']}",
            f"?owner[$ne]={ids[name]}",
        ):
            assert set(listed(client, token, query)) == own[name], (name, query)
        # Alice's cursor names her file; in anybody else's hands it pages through their own.
        assert set(listed(client, token, f"?cursor={alices_cursor}")) <= own[name]


def test_metadata_never_shows_the_records_internals(world: World) -> None:
    record = world.db.files.find_one({"_id": world.file_id})
    wrapped = bytes(record["wrapped_key"])
    internals = [
        world.alice_id.encode(),  # the owner
        base64.b64encode(wrapped),
        base64.urlsafe_b64encode(wrapped),
        wrapped.hex().encode(),
    ]
    answers = {
        "upload": world.client.post(
            "/upload", data=b"metadata", headers={**auth(world.alice), **JSON}
        ),
        "info": world.client.get(f"/files/{world.file_id}/info", headers=auth(world.alice)),
        "list": world.client.get("/files", headers=auth(world.alice)),
        "key": world.client.get(
            f"/files/{world.file_id}/key", headers={**auth(world.alice), **JSON}
        ),
    }
    for label, response in answers.items():
        assert response.status_code in (200, 201), (label, response.text)
        assert keys_of(response.json) & INTERNAL_FIELDS == set(), label
        for secret in internals:
            assert secret not in response.data, label
    uploaded = answers["upload"].json["id"]  # type: ignore[index]
    assert world.client.delete(f"/files/{uploaded}", headers=auth(world.alice)).status_code == 204


@pytest.mark.parametrize("where", ["query", "headers", "both"])
def test_client_sent_owner_id_and_size_are_ignored(world: World, where: str) -> None:
    chosen_id = str(uuid.uuid4())
    claims = {"owner": world.alice_id, "id": chosen_id, "size": "1", "status": "pending"}
    query = "?" + "&".join(f"{k}={v}" for k, v in claims.items()) if where != "headers" else ""
    headers = {}
    if where != "query":
        headers = {
            "X-Owner": world.alice_id,
            "Owner": world.alice_id,
            "X-User-Id": world.alice_id,
            "X-Forwarded-User": "alice",
            "X-File-Id": chosen_id,
            "X-Id": chosen_id,
            "X-Size": "1",
            "X-File-Size": "1",
        }
    body = b"bob pretends this is alice's " + os.urandom(32)
    response = world.client.post(
        f"/upload{query}", data=body, headers={**auth(world.bob), **JSON, **headers}
    )
    assert response.status_code == 201, response.text
    file_id = response.json["id"]  # type: ignore[index]
    record = world.db.files.find_one({"_id": file_id})
    assert record["owner"] == world.bob_id
    assert file_id != chosen_id and world.db.files.find_one({"_id": chosen_id}) is None
    assert (record["size"], response.json["size"]) == (len(body), len(body))  # type: ignore[index]
    assert record["status"] == "complete"
    assert file_id not in listed(world.client, world.alice)
    alice_key = world.client.get(f"/files/{file_id}/key", headers=auth(world.alice))
    assert alice_key.status_code == 404
    assert world.client.get(f"/files/{file_id}/key", headers=auth(world.bob)).status_code == 200
    assert world.client.delete(f"/files/{file_id}", headers=auth(world.bob)).status_code == 204


# -- the state machine -----------------------------------------------------------------------------

OPS = ["key", "info", "plaintext", "download", "delete"]
READ_OPS = OPS[:-1]
ROUTE_OF = {
    "key": ("GET", "/files/{}/key"),
    "info": ("GET", "/files/{}/info"),
    "plaintext": ("GET", "/files/{}/plaintext"),
    "download": ("GET", "/files/{}"),
    "delete": ("DELETE", "/files/{}"),
}


@dataclasses.dataclass
class Account:
    password: str
    public_id: str
    alive: bool = True


@dataclasses.dataclass
class Token:
    name: str
    public_id: str
    live: bool = True


@dataclasses.dataclass
class File:
    owner: str  # public id
    data: bytes
    alive: bool = True
    # grantee public id -> expiry (None: until revoked), as the owner last set it
    grants: dict[str, datetime | None] = dataclasses.field(default_factory=dict)

    def granted(self, public_id: str, now: datetime) -> bool:
        if public_id not in self.grants:
            return False
        expires_at = self.grants[public_id]
        return expires_at is None or expires_at > now


class MovingClock:
    """The grants' time: now plus whatever the machine has moved it by."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


# A grant's life, as the machine draws it; the clock moves by STEP: a grant of 10 minutes dies at
# the first move, one of 40 at the third (real time adds milliseconds, never a boundary).
GRANT_LIVES = [None, timedelta(minutes=10), timedelta(minutes=40)]
STEP = timedelta(minutes=15)


class OwnershipMachine(RuleBasedStateMachine):
    """Random users, tokens and files against a model of who owns what and which tokens live.

    Every run starts with two users, each with a token and a file; the steps then register, log
    in and out, upload, change passwords, delete accounts, grant and revoke keys, move the clock
    past grants' expiry and use files with random tokens. After every step, every live token asks
    every file (key, info, plaintext or download, in turn), every dead token one file, and all get
    exactly the model's answer: a key reaches only its owner or a user with a live grant. Every live
    token lists exactly its user's live files, and the files shared with it; every owner sees
    exactly the live grants. Names are unique per run: one app (and database) serves all the runs.
    """

    client: ClassVar[FlaskClient]
    runs: ClassVar[Iterator[int]]
    clock: ClassVar[MovingClock]
    count_grants: ClassVar[Callable[[dict[str, Any]], int]]  # the grants stored that match

    def __init__(self) -> None:
        super().__init__()
        self.run = next(self.runs)
        self.serial = itertools.count()
        self.accounts: dict[str, Account] = {}
        self.token_of: dict[str, Token] = {}
        self.file_of: dict[str, File] = {}

    # -- helpers

    def fresh_password(self) -> str:
        return f"pw-{secrets.token_hex(6)}"

    def expected(self, token: str, file_id: str, op: str) -> int:
        holder, target = self.token_of[token], self.file_of[file_id]
        if not holder.live:
            return 401
        if not target.alive:
            return 404
        if op == "download":
            return 200
        if op in ("key", "info") and target.granted(holder.public_id, self.clock()):
            return 200
        if target.owner != holder.public_id:
            return 404
        return 204 if op == "delete" else 200

    def kill_tokens_of(self, public_id: str) -> None:
        for token in self.token_of.values():
            if token.public_id == public_id:
                token.live = False

    def new_user(self) -> str:
        name = f"m{self.run}u{next(self.serial)}"
        password = self.fresh_password()
        self.accounts[name] = Account(password, register(self.client, name, password))
        return name

    # Draws pick from the dicts in insertion order, never sorted: tokens and file ids are random,
    # so a sorted order differs when hypothesis replays a case, and so would what it draws next
    # (a one-element choice draws nothing), which it reports as FlakyStrategyDefinition.
    def a_token(self, data: st.DataObject) -> str:
        return data.draw(st.sampled_from(list(self.token_of)), label="token")

    def a_file_and_a_user(self, data: st.DataObject, holder: Token) -> tuple[str, str]:
        """A file and a user name for a grant: mostly the holder's own live file and another
        live user (the cases that change something), sometimes any file and any name."""
        own = [f for f, t in self.file_of.items() if t.owner == holder.public_id and t.alive]
        others = [n for n, a in self.accounts.items() if a.alive and n != holder.name]
        anything = data.draw(st.integers(0, 3), label="anything") == 0
        files = own if own and not anything else list(self.file_of)
        names = others if others and not anything else list(self.accounts)
        file_id = data.draw(st.sampled_from(files), label="file")
        return file_id, data.draw(st.sampled_from(names), label="user")

    # -- rules

    @initialize()
    def two_users_with_a_token_and_a_file_each(self) -> None:
        """...and the first grants the second a key for 10 minutes (so every run has a grant
        that the clock can end, and one to revoke)."""
        tokens = []
        for _ in range(2):
            name = self.new_user()
            token = login(self.client, name, self.accounts[name].password)
            self.token_of[token] = Token(name, self.accounts[name].public_id)
            tokens.append(token)
            data = os.urandom(16)
            self.file_of[upload(self.client, token, data)["id"]] = File(
                self.accounts[name].public_id, data
            )
        first_file = next(iter(self.file_of))
        self.grant_as(tokens[0], first_file, self.token_of[tokens[1]].name, GRANT_LIVES[1])

    @rule()
    def register(self) -> None:
        self.new_user()

    @rule(data=st.data())
    def register_a_taken_or_freed_name(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(list(self.accounts)), label="name")
        account = self.accounts[name]
        password = self.fresh_password()
        response = self.client.post(
            "/registration",
            headers={"New_User_Name": name, "New_User_Password": password, **JSON},
        )
        if account.alive:
            assert response.status_code == 400, response.text
        else:  # a deleted account's name is free again, for a new identity
            assert response.status_code == 201, response.text
            public_id = response.json["id"]  # type: ignore[index]
            assert public_id != account.public_id
            self.accounts[name] = Account(password, public_id)

    @rule(data=st.data())
    def log_in(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(list(self.accounts)), label="name")
        account = self.accounts[name]
        response = self.client.get(
            "/login", headers={"User_Name": name, "User_Password": account.password}
        )
        if not account.alive:
            assert response.status_code == 401
            return
        assert response.status_code == 200, response.text
        self.token_of[response.text] = Token(name, account.public_id)

    @rule(data=st.data(), content=st.binary(min_size=1, max_size=64))
    def upload(self, data: st.DataObject, content: bytes) -> None:
        token = self.a_token(data)
        holder = self.token_of[token]
        response = self.client.post("/upload", data=content, headers=auth(token))
        if not holder.live:
            assert response.status_code == 401
            return
        assert response.status_code == 201, response.text
        self.file_of[response.text] = File(holder.public_id, content)

    @rule(data=st.data())
    def log_out(self, data: st.DataObject) -> None:
        token = self.a_token(data)
        holder = self.token_of[token]
        response = self.client.post("/logout", headers=auth(token))
        assert response.status_code == (200 if holder.live else 401)
        holder.live = False

    @rule(data=st.data(), right=st.booleans())
    def change_password(self, data: st.DataObject, right: bool) -> None:
        token = self.a_token(data)
        holder = self.token_of[token]
        account = self.accounts[holder.name]
        new = self.fresh_password()
        current = account.password if right else "not-the-password"
        response = self.client.put(
            "/account/password",
            headers={**auth(token), "User_Password": current, "New_User_Password": new},
        )
        if not holder.live or not right:
            assert response.status_code == 401
            return
        assert response.status_code == 200, response.text
        account.password = new
        self.kill_tokens_of(holder.public_id)

    @rule(data=st.data(), right=st.booleans())
    def delete_account(self, data: st.DataObject, right: bool) -> None:
        token = self.a_token(data)
        holder = self.token_of[token]
        account = self.accounts[holder.name]
        password = account.password if right else "not-the-password"
        response = self.client.delete(
            "/account", headers={**auth(token), "User_Password": password}
        )
        if not holder.live or not right:
            assert response.status_code == 401
            return
        assert response.status_code == 200, response.text
        account.alive = False
        self.kill_tokens_of(holder.public_id)
        for target in self.file_of.values():
            target.grants.pop(holder.public_id, None)  # what was granted to the account goes
            if target.owner == holder.public_id:
                target.alive = False
                target.grants.clear()

    @rule(data=st.data(), life=st.sampled_from(GRANT_LIVES))
    def grant(self, data: st.DataObject, life: timedelta | None) -> None:
        token = self.a_token(data)
        file_id, name = self.a_file_and_a_user(data, self.token_of[token])
        self.grant_as(token, file_id, name, life)

    def grant_as(self, token: str, file_id: str, name: str, life: timedelta | None) -> None:
        holder = self.token_of[token]
        target, grantee = self.file_of[file_id], self.accounts[name]
        now = self.clock()
        body: dict[str, Any] = {"user": name}
        if life is not None:
            body["expires_at"] = (now + life).isoformat()
        response = self.client.post(f"/files/{file_id}/grants", json=body, headers=auth(token))
        if not holder.live:
            assert response.status_code == 401
        elif not target.alive or target.owner != holder.public_id:
            assert (response.status_code, response.data) == (404, b"No such file.\n")
        elif not grantee.alive or grantee.public_id == holder.public_id:
            assert response.status_code == 400, response.text
        else:
            renewed = target.granted(grantee.public_id, now)
            assert response.status_code == (200 if renewed else 201), response.text
            target.grants[grantee.public_id] = None if life is None else now + life

    @rule(data=st.data())
    def revoke(self, data: st.DataObject) -> None:
        token = self.a_token(data)
        holder = self.token_of[token]
        file_id, name = self.a_file_and_a_user(data, holder)
        target, grantee = self.file_of[file_id], self.accounts[name]
        response = self.client.delete(f"/files/{file_id}/grants/{name}", headers=auth(token))
        if not holder.live:
            assert response.status_code == 401
        elif not target.alive or target.owner != holder.public_id:
            assert (response.status_code, response.data) == (404, b"No such file.\n")
        elif grantee.alive and target.granted(grantee.public_id, self.clock()):
            assert response.status_code == 204, response.text
            del target.grants[grantee.public_id]
        else:
            assert (response.status_code, response.data) == (404, b"No such grant.\n")

    @rule()
    def time_passes(self) -> None:
        self.clock.offset += STEP

    @rule(data=st.data(), op=st.sampled_from(OPS))
    def use_a_file(self, data: st.DataObject, op: str) -> None:
        token = self.a_token(data)
        file_id = data.draw(st.sampled_from(list(self.file_of)), label="file")
        self.check(token, file_id, op)

    def check(self, token: str, file_id: str, op: str) -> None:
        expected = self.expected(token, file_id, op)
        method, route = ROUTE_OF[op]
        response = self.client.open(route.format(file_id), method=method, headers=auth(token))
        assert response.status_code == expected, (
            op,
            self.token_of[token],
            self.file_of[file_id],
            response.data[:100],
        )
        target = self.file_of[file_id]
        if expected == 204:
            target.alive = False
        elif expected == 200 and op == "plaintext":
            assert response.data == target.data
        elif expected == 200 and op == "download":
            assert len(response.data) == crypto.ciphertext_size(len(target.data))
            assert len(target.data) < 8 or target.data not in response.data  # short ones by chance
        elif expected == 200 and op == "key":
            assert len(base64.b64decode(response.text, validate=True)) == crypto.KEY_SIZE
        elif expected == 200 and op == "info":
            info = response.json
            assert (info["id"], info["size"]) == (file_id, len(target.data))  # type: ignore[index]

    # -- invariants

    @invariant()
    def every_token_gets_the_models_answer_for_every_file(self) -> None:
        turn = next(self.serial)
        op = READ_OPS[turn % len(READ_OPS)]
        files = list(self.file_of)
        for token, holder in self.token_of.items():
            if holder.live:
                for file_id in files:
                    self.check(token, file_id, op)
            else:  # 401 whatever the file: one file, in turn, is enough
                self.check(token, files[turn % len(files)], op)

    @invariant()
    def live_tokens_list_exactly_their_users_live_files(self) -> None:
        for token, holder in self.token_of.items():
            if holder.live:
                mine = {
                    file_id
                    for file_id, target in self.file_of.items()
                    if target.alive and target.owner == holder.public_id
                }
                assert set(listed(self.client, token, "?limit=1000")) == mine
                now = self.clock()
                shared = {
                    file_id
                    for file_id, target in self.file_of.items()
                    if target.alive and target.granted(holder.public_id, now)
                }
                assert set(listed(self.client, token, "?shared=with-me&limit=1000")) == shared

    @invariant()
    def grants_are_stored_only_while_file_and_users_live(self) -> None:
        """Deleting a file or either account removes its grants from the database too (expired
        ones stay until revoked or swept, harmless: they answer like none)."""
        stored = self.count_grants({"file": {"$in": sorted(self.file_of)}})
        assert stored == sum(len(t.grants) for t in self.file_of.values() if t.alive)

    @invariant()
    def owners_see_exactly_the_live_grants(self) -> None:
        names = {a.public_id: n for n, a in self.accounts.items() if a.alive}
        owner_token = {t.public_id: k for k, t in self.token_of.items() if t.live}
        now = self.clock()
        for file_id, target in self.file_of.items():
            token = owner_token.get(target.owner)
            if not target.alive or token is None:
                continue
            response = self.client.get(f"/files/{file_id}/grants", headers=auth(token))
            assert response.status_code == 200, response.text
            live = {names[g] for g in target.grants if target.granted(g, now)}
            assert {g["user"] for g in response.json["grants"]} == live  # type: ignore[index]


def test_ownership_state_machine(mongodb_uri: str, master_keys: str) -> None:
    # One app for all runs; the cheapest scrypt cost, since the machine logs in a lot.
    with running_app(settings_for(mongodb_uri, master_keys, PASSWORD_HASH=CHEAP_HASH)) as app:
        OwnershipMachine.client = app.test_client()
        OwnershipMachine.runs = itertools.count()
        # Only the grants' clock moves: tokens are checked against the real time (PyJWT refuses a
        # token issued in its future), and the machine keeps logging in.
        OwnershipMachine.clock = MovingClock()
        # A function, not the collection: hypothesis looks at the machine's attributes.
        OwnershipMachine.count_grants = services_of(app).storage.db.grants.count_documents
        services_of(app).sharing.clock = OwnershipMachine.clock
        run_state_machine_as_test(
            OwnershipMachine,
            settings=settings(
                max_examples=15,
                stateful_step_count=12,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            ),
        )
