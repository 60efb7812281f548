"""Every query shape a request sends is served from an index: proved with PostgreSQL's own plans.

FerretDB on PostgreSQL with ``auto_explain`` logging the plan of every statement (JSON, nested
statements too); the real app driven through its routes. A sequential scan of a collection's table
during a request fails the test, unless the shape is listed in ALLOWED_SCANS with the reason no
index can serve it (each is off a request's path, or bounded). So a new query that the indexes of
``cryptofiles.dev.pgindexes`` do not serve (a new filter field, a shape FerretDB does not push
down) fails here, not in production; and an entry no longer seen fails too, so that the list stays
true. Admin commands other than the sweep (key rotation: `kek_id $ne`) are not driven.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from pyrage import x25519

from cryptofiles.config import Settings
from cryptofiles.dev.database import LocalDatabase
from cryptofiles.dev.pgindexes import table_prefix
from cryptofiles.web import create_app, services_of
from tests.support.api import JSON, PASSWORD, auth, login, register, upload
from tests.support.settings import fresh_settings_values
from tests.test_devdb_postgres import TOOLS

EXPLAIN_EVERYTHING = {
    "session_preload_libraries": "auto_explain",
    "auto_explain.log_min_duration": "0",
    "auto_explain.log_format": "json",
    "auto_explain.log_nested_statements": "on",
    "auto_explain.log_verbose": "on",  # names each scanned table's schema
}

# (step, collection) -> why a full scan is the only way. Each is off a request's path or bounded.
ALLOWED_SCANS: dict[tuple[str, str], str] = {
    ("start-up", "files"): "the sweep: `$or` of statuses, `distinct(owner)`, `_id $in` of the "
    "files grants and events name; FerretDB pushes down none of them (only $eq/$ne on scalar "
    "top-level fields); once per instance start",
    ("start-up", "users"): "the name_key migration (`$exists`), the sweep's `_id $in` of the "
    "users grants name; once per instance start",
    ("start-up", "grants"): "the sweep's `distinct` of files and users named by grants (dangling "
    "grants, left by a crash mid-deletion); once per instance start",
    ("start-up", "events"): "the sweep's `distinct(file)` and the purge past retention "
    "(`expire_at $lt`: FerretDB has no TTL index); once per instance start",
    ("admin sweep", "grants"): "`admin sweep`: the start-up sweep's `distinct`s; an admin command",
    ("admin sweep", "events"): "`admin sweep`: the start-up sweep's `distinct` and purge; an admin "
    "command",
    ("admin sweep", "ciphertext.chunks"): "`admin sweep`'s `distinct(files_id)` (orphaned chunks): "
    "FerretDB reads every row for distinct; an admin command",
    ("admin sweep", "ciphertext.files"): "`admin sweep`'s `distinct(_id)`; an admin command",
    ("admin sweep", "files"): "`admin sweep`: the start-up sweep's shapes, and `_id $in` (FerretDB "
    "pushes $in down nowhere); an admin command",
    ("admin sweep", "users"): "`admin sweep`: `_id $in` of the owners; an admin command",
    ("logout", "revoked_tokens"): "the purge of expired revocations (`expires_at $lt`, FerretDB "
    "has no TTL index); on logout, bounded by the revocations still inside one token lifetime",
}


@dataclass
class Scan:
    step: str
    collection: str
    query: str


class PlanLog:
    """The plans PostgreSQL logged since the last look, as (collection, query text) of each scan."""

    def __init__(self, log_file: Path, schema: str) -> None:
        self.log_file = log_file
        self.schema = schema
        self.offset = log_file.stat().st_size
        self.plans = 0
        tables = {table_prefix(c): c for _, c in ALLOWED_SCANS} | {
            table_prefix(c): c
            for c in (
                "files",
                "users",
                "revoked_tokens",
                "rate_counters",
                "grants",
                "events",
                "links",
                "link_downloads",
            )
        }
        self.collections = tables

    def scans(self) -> list[tuple[str, str]]:
        time.sleep(0.3)  # the backend writes the plan as the statement ends; let the log catch up
        with self.log_file.open("rb") as log:
            log.seek(self.offset)
            text = log.read().decode(errors="replace")
        self.offset += len(text.encode())
        found = []
        decoder = json.JSONDecoder()
        position = text.find("plan:\n")
        while position >= 0:
            start = text.index("{", position)
            plan, end = decoder.raw_decode(text, start)
            self.plans += 1
            found += [(t, plan["Query Text"]) for t in self._seq_scans(plan["Plan"])]
            position = text.find("plan:\n", end)
        return found

    def _seq_scans(self, node: dict[str, Any]) -> Iterator[str]:
        table = node.get("Relation Name", "")
        scan = node.get("Node Type") == "Seq Scan" and node.get("Schema") == self.schema
        if scan and not table.startswith("_ferretdb_"):  # FerretDB's catalogue: one row a table
            yield self._collection(table)
        for child in node.get("Plans", []):
            yield from self._seq_scans(child)

    @staticmethod
    def _collection(table: str) -> str:
        prefix = table[:-9]  # FerretDB's "_<8 hex digits>" suffix
        names = ("files", "users", "revoked_tokens", "rate_counters", "ciphertext.files",
                 "ciphertext.chunks", "grants", "events")  # fmt: skip
        return next((n for n in names if table_prefix(n) == prefix), prefix)


@pytest.fixture(scope="module")
def explained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalDatabase]:
    database = LocalDatabase(
        tmp_path_factory.mktemp("plans") / "db", tools=TOOLS, engine="postgresql",
        postgres_settings=EXPLAIN_EVERYTHING,
    )  # fmt: skip
    database.start()
    yield database
    database.stop()


def test_every_request_query_uses_an_index(explained: LocalDatabase, master_keys: str) -> None:
    assert explained.postgres is not None
    values = fresh_settings_values(explained.uri, master_keys)
    plans = PlanLog(explained.postgres.log_file, values["MONGODB_DB"].lower())
    seen: list[Scan] = []

    def step(name: str, action: Callable[[], object]) -> None:
        action()
        seen.extend(Scan(name, c, q) for c, q in plans.scans())

    apps: list[Any] = []

    def start() -> None:
        apps.append(create_app(Settings.from_mapping(values)))

    step("start-up", start)
    try:
        _drive(apps[0].test_client(), step)
        bob = login(apps[0].test_client(), "bob", PASSWORD)
        upload(apps[0].test_client(), bob, b"kept")
        step("start-up", start)  # a second instance, its sweep on a database with data
        step("admin sweep", lambda: services_of(apps[0]).files.sweep(orphans=True))
    finally:
        for app in apps:
            services_of(app).storage.close()

    assert plans.plans > 50, "auto_explain logged (almost) nothing: the test proves nothing"
    stale = set(ALLOWED_SCANS) - {(s.step, s.collection) for s in seen}
    assert stale == set(), "ALLOWED_SCANS entries no longer seen: remove them"
    unexpected = [s for s in seen if (s.step, s.collection) not in ALLOWED_SCANS]
    assert unexpected == [], "sequential scans outside ALLOWED_SCANS:\n" + "\n".join(
        f"{s.step}: {s.collection}: {s.query}" for s in unexpected
    )


def test_a_query_no_index_serves_is_caught(explained: LocalDatabase, master_keys: str) -> None:
    """The detector's own check: an equality filter on a field without an index is a scan."""
    assert explained.postgres is not None
    values = fresh_settings_values(explained.uri, master_keys)
    app = create_app(Settings.from_mapping(values))
    try:
        plans = PlanLog(explained.postgres.log_file, values["MONGODB_DB"].lower())
        files = services_of(app).storage.db["files"]
        files.insert_one({"_id": "f", "owner": "o", "size": 5})
        plans.scans()
        assert files.find_one({"owner": "o"}) is not None  # indexed
        assert plans.scans() == []
        assert files.find_one({"size": 5}) is not None  # pushed down, but no index on size
        assert [c for c, _ in plans.scans()] == ["files"]
    finally:
        services_of(app).storage.close()


def _drive(client: FlaskClient, step: Callable[[str, Callable[[], object]], None]) -> None:
    """Every route that reaches the database, each as a step of its own."""
    box: dict[str, Any] = {}
    body = bytes(range(256)) * 800  # 200 KiB: several segments, one chunk

    step("register", lambda: box.update(alice=register(client, "alice", PASSWORD)))
    step("register another", lambda: register(client, "bob", PASSWORD))
    step("login", lambda: box.update(token=login(client, "alice", PASSWORD)))
    token = box["token"]
    step("test_login", lambda: _ok(client.get("/test_login", headers=auth(token))))
    step("upload", lambda: box.update(file=upload(client, token, body, **{"X-File-Name": "a"})))
    step("second upload", lambda: upload(client, token, b"small"))
    file_id = box["file"]["id"]
    url = f"/files/{file_id}"
    step("download", lambda: _ok(client.get(url, headers=auth(token))))
    ranged = {**auth(token), "Range": "bytes=100000-100999"}
    step("download a range", lambda: _ok(client.get(url, headers=ranged), 206))
    step("plaintext", lambda: _ok(client.get(f"{url}/plaintext", headers=auth(token))))
    step("plaintext range", lambda: _ok(client.get(f"{url}/plaintext", headers=ranged), 206))
    step("key", lambda: _ok(client.get(f"{url}/key", headers=auth(token))))
    step("account", lambda: _ok(client.get("/account", headers=auth(token))))
    recipients = {"recipients": [str(x25519.Identity.generate().to_public())]}
    step("set recipients", lambda: _ok(client.put(
        "/account/recipients", json=recipients, headers=auth(token))))  # fmt: skip
    step("sealed key", lambda: _ok(client.get(f"{url}/key", headers=auth(token))))
    step("list", lambda: _ok(client.get("/files?limit=1", headers={**auth(token), **JSON})))
    step("info", lambda: _ok(client.get(f"{url}/info", headers=auth(token))))
    step("unknown file", lambda: _ok(client.get(f"{url[:-4]}0000", headers=auth(token)), 404))
    _drive_sharing(client, step, token, file_id)
    share_link_steps(step, client, token, url)
    step("delete", lambda: _ok(client.delete(url, headers=auth(token)), 204))
    step("wrong password", lambda: _ok(_login(client, "alice", "wrong password"), 401))
    step("logout", lambda: _ok(client.post("/logout", headers=auth(token))))
    step("revoked token", lambda: _ok(client.get("/test_login", headers=auth(token)), 401))
    box["token"] = login(client, "alice", PASSWORD)
    password = {**auth(box["token"]), "User_Password": PASSWORD}
    step("change password", lambda: _ok(client.put("/account/password", headers={
        **password, "New_User_Password": PASSWORD + "!"})))  # fmt: skip
    box["token"] = login(client, "alice", PASSWORD + "!")
    upload(client, box["token"], b"to go with the account")
    gone = {**auth(box["token"]), "User_Password": PASSWORD + "!"}
    step("delete account", lambda: _ok(client.delete("/account", headers=gone)))
    step("readyz", lambda: _ok(client.get("/readyz")))


def _drive_sharing(
    client: FlaskClient, step: Callable[[str, Callable[[], object]], None], token: str, file_id: str
) -> None:
    """The grant routes, a grantee's key and listing, the history (alice owns ``file_id``)."""
    url = f"/files/{file_id}"
    bob = auth(login(client, "bob", PASSWORD))
    grant = {"user": "bob", "expires_at": "2999-01-01T00:00:00Z"}
    step("grant", lambda: _ok(client.post(f"{url}/grants", json=grant, headers=auth(token)), 201))
    step("grant again", lambda: _ok(client.post(f"{url}/grants", json=grant, headers=auth(token))))
    step("grants", lambda: _ok(client.get(f"{url}/grants", headers=auth(token))))
    step("grantee's key", lambda: _ok(client.get(f"{url}/key", headers=bob)))
    step("shared with me", lambda: _ok(client.get("/files?shared=with-me&limit=1", headers=bob)))
    step("events", lambda: _ok(client.get(f"{url}/events?limit=2", headers=auth(token))))
    revoke = f"{url}/grants/bob"
    step("revoke", lambda: _ok(client.delete(revoke, headers=auth(token)), 204))
    step("grant for the deletion", lambda: client.post(f"{url}/grants", json=grant,
                                                       headers=auth(token)))  # fmt: skip


def share_link_steps(step: Any, client: Any, token: str, url: str) -> None:
    """Create, list, open, download through and revoke a share link (the file's delete, after
    these, removes its other links)."""
    box: dict[str, Any] = {}
    new = {**auth(token), **JSON}
    step("create link", lambda: box.update(link=client.post(f"{url}/links", headers=new)))
    _ok(box["link"], 201)
    step("second link", lambda: _ok(client.post(f"{url}/links", headers=new, json={}), 201))
    path = "/s/" + box["link"].json["url"].rsplit("/s/", 1)[1]
    step("list links", lambda: _ok(client.get(f"{url}/links", headers=auth(token))))
    step("link page", lambda: _ok(client.get(path)))
    step("link download", lambda: _ok(client.get(f"{path}/file")))
    revoke = f"{url}/links/{box['link'].json['id']}"
    step("revoke link", lambda: _ok(client.delete(revoke, headers=auth(token)), 204))
    step("dead link", lambda: _ok(client.get(f"{path}/file"), 404))


def _login(client: FlaskClient, name: str, password: str) -> Any:
    return client.get("/login", headers={"User_Name": name, "User_Password": password})


def _ok(response: Any, status: int = 200) -> None:
    assert response.status_code == status, response.text
