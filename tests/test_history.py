"""The access history: every key delivery, grant change and download of a file is recorded (time,
user, client address, request id; never a key, token or content), shown to the owner newest first in
cursor pages, kept EVENTS_RETENTION_DAYS, and removed with the file. A key is never delivered
unrecorded: when the record cannot be stored the key route answers 503 without the key.
"""

from __future__ import annotations

import base64
import uuid
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cryptofiles.config import ConfigError, Settings
from cryptofiles.web import create_app, services_of
from tests.support.api import JSON, auth
from tests.support.settings import fresh_settings_values
from tests.test_grants import Clock, People


@pytest.fixture
def people(client: FlaskClient) -> People:
    return People(client)


def events(people: People, query: str = "", who: str = "alice") -> Any:
    response = people.client.get(
        f"/files/{people.file_id}/events{query}", headers=auth(people.tokens[who])
    )
    assert response.status_code == 200, response.text
    return response.json


def test_each_access_is_recorded_with_who_where_and_the_request_id(people: People, db: Any) -> None:
    alice, bob = auth(people.tokens["alice"]), auth(people.tokens["bob"])
    path = f"/files/{people.file_id}"
    steps = [
        ("grant.create", people.grant("alice", "bob")),
        ("grant.update", people.grant("alice", "bob", expires_at="2999-01-01T00:00:00Z")),
        ("key", people.key("bob")),
        ("key", people.key("alice")),
        ("download", people.client.get(path, headers=bob)),
        ("download", people.client.get(path, headers={**alice, "Range": "bytes=0-9"})),
        ("plaintext", people.client.get(f"{path}/plaintext", headers=alice)),
        ("grant.revoke", people.revoke("alice", "bob")),
    ]
    for action, response in steps:
        assert response.status_code < 300, (action, response.text)
    shown = events(people)["events"]
    assert [e["action"] for e in shown] == [a for a, _ in reversed(steps)]  # newest first
    actors = ["alice", "alice", "bob", "alice", "bob", "alice", "alice", "alice"]
    for event, (_, response), name in zip(shown, reversed(steps), reversed(actors), strict=True):
        assert event["request_id"] == response.headers["X-Request-Id"]
        assert event["user"] == {"id": people.ids[name], "name": name}
        assert event["client"] == "127.0.0.1"
    keys = [e for e in shown if e["action"] == "key"]
    assert [e["sealed"] for e in keys] == [False, False]
    revoke, update, create = shown[0], shown[-2], shown[-1]
    assert (create["grantee_name"], create["expires_at"]) == ("bob", None)
    assert update["expires_at"].startswith("2999-01-01T00:00:00")
    assert revoke["grantee_name"] == "bob" and revoke["grantee"] == people.ids["bob"]
    # Never a key, a token or content: not in the answer, not in the database.
    key = base64.b64decode(steps[2][1].text)
    stored = repr(list(db.events.find({}))).encode()
    for secret in (key, key.hex().encode(), steps[2][1].text.encode(), people.data,
                   *(t.encode() for t in people.tokens.values())):  # fmt: skip
        assert secret not in stored
        assert secret not in repr(shown).encode()


def test_a_refused_access_records_nothing(people: People, db: Any) -> None:
    assert people.key("carol").status_code == 404
    unknown = people.client.get(f"/files/{uuid.uuid4()}", headers=auth(people.tokens["bob"]))
    assert unknown.status_code == 404
    assert db.events.count_documents({}) == 0


def test_the_history_pages_with_a_cursor(people: People) -> None:
    for _ in range(5):
        assert people.key("alice").status_code == 200
    first = events(people, "?limit=2")
    assert len(first["events"]) == 2 and first["next_cursor"]
    seen = [e["id"] for e in first["events"]]
    cursor = first["next_cursor"]
    while cursor:
        page = events(people, f"?limit=2&cursor={cursor}")
        seen += [e["id"] for e in page["events"]]
        cursor = page["next_cursor"]
    assert len(seen) == len(set(seen)) == 5
    assert seen == [e["id"] for e in events(people)["events"]]
    at = [e["at"] for e in events(people)["events"]]
    assert at == sorted(at, reverse=True)


@pytest.mark.parametrize("query", ["?limit=0", "?limit=1001", "?limit=x", "?cursor=garbage"])
def test_bad_history_queries_are_400(people: People, query: str) -> None:
    response = people.client.get(
        f"/files/{people.file_id}/events{query}", headers=auth(people.tokens["alice"])
    )
    assert response.status_code == 400


def refuse_event_writes(db: Any) -> None:
    """A real refusal by the database: one event per file at most (a unique index), so the
    second event of a file clashes."""
    db.events.create_index("file", unique=True, name="one_event_per_file")


def test_a_key_delivery_that_cannot_be_recorded_is_refused(people: People, db: Any) -> None:
    people.grant("alice", "bob")  # the file's one event allowed
    refuse_event_writes(db)
    for who in ("alice", "bob"):
        response = people.client.get(
            f"/files/{people.file_id}/key", headers={**auth(people.tokens[who]), **JSON}
        )
        assert response.status_code == 503, response.text
        assert "key" not in response.json
        assert "access history" in response.json["detail"]
    assert db.events.count_documents({"action": "key"}) == 0
    db.events.drop_index("one_event_per_file")  # the database takes events again: keys flow
    assert people.key("bob").status_code == 200
    assert db.events.count_documents({"action": "key"}) == 1


def test_downloads_and_grant_changes_that_cannot_be_recorded_are_refused(
    people: People, db: Any
) -> None:
    assert people.key("alice").status_code == 200  # the file's one event allowed
    refuse_event_writes(db)
    alice = auth(people.tokens["alice"])
    download = people.client.get(f"/files/{people.file_id}", headers=auth(people.tokens["bob"]))
    plain = people.client.get(f"/files/{people.file_id}/plaintext", headers=alice)
    grant = people.grant("alice", "bob")
    for response in (download, plain, grant):
        assert response.status_code == 503
        assert people.data not in response.data
    assert people.grants().json["grants"] == []  # the grant was not made either


def test_the_history_keeps_events_for_the_retention_only(
    settings_values: dict[str, str], db: Any
) -> None:
    # The tokens are checked against the real time (PyJWT's): only the services' time moves.
    clock = Clock()
    app = create_app(Settings.from_mapping({**settings_values, "EVENTS_RETENTION_DAYS": "2"}),
                     clock=clock)  # fmt: skip
    try:
        people = People(app.test_client())
        assert people.key("alice").status_code == 200
        clock.offset = timedelta(days=1)
        assert people.key("alice").status_code == 200
        assert len(events(people)["events"]) == 2
        clock.offset = timedelta(days=2, hours=1)  # the first is past retention, not the second
        assert len(events(people)["events"]) == 1
        storage = services_of(app).storage
        services_of(app).files.sweep()
        left = storage.db.events.count_documents({})
        # Where the server has TTL indexes it drops the row itself, in its own time.
        assert left == 1 or storage.events.ttl_supported
    finally:
        services_of(app).storage.close()


@pytest.mark.parametrize("value", ["0", "-1", "36501", "ninety"])
def test_the_retention_setting_is_checked(mongodb_uri: str, master_keys: str, value: str) -> None:
    values = {**fresh_settings_values(mongodb_uri, master_keys), "EVENTS_RETENTION_DAYS": value}
    with pytest.raises(ConfigError, match="EVENTS_RETENTION_DAYS"):
        Settings.from_mapping(values)


def test_the_retention_defaults_to_90_days(settings: Settings, app: Flask) -> None:
    assert settings.events_retention_days == 90
    assert services_of(app).history.retention == timedelta(days=90)
