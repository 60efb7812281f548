"""Per-file grants: the owner lets another user fetch one file's key, for a while or until revoked.

Who gets a key: the owner or a user holding a live grant; expired and revoked grants, and every
grant route for anyone but the owner, answer exactly like an unknown id. Deleting the file or either
account removes the grants; the sweep removes what a crash left; grants count in no quota.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cryptofiles.config import Settings
from cryptofiles.web import create_app, services_of
from tests.support.answers import answer
from tests.support.api import JSON, PASSWORD, auth, login, register, upload

NO_SUCH_FILE = (404, b"No such file.\n")


class Clock:
    """The time the app sees: now, until a test moves it."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def timed(settings: Settings, clock: Clock) -> Iterator[Flask]:
    """An app on the test's database whose clock the test moves."""
    app = create_app(settings, clock=clock)
    yield app
    services_of(app).storage.client.drop_database(settings.mongodb_db)
    services_of(app).storage.close()


class People:
    """alice owns a file; bob and carol are other users."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client
        self.ids = {n: register(client, n, PASSWORD) for n in ("alice", "bob", "carol")}
        self.tokens = {n: login(client, n, PASSWORD) for n in self.ids}
        self.data = b"alice shares this " + uuid.uuid4().bytes
        self.file_id = upload(client, self.tokens["alice"], self.data)["id"]

    def grant(self, who: str, to: str, file_id: str | None = None, **body: Any) -> Any:
        return self.client.post(
            f"/files/{file_id or self.file_id}/grants",
            json={"user": to, **body},
            headers={**auth(self.tokens[who]), **JSON},
        )

    def key(self, who: str, file_id: str | None = None) -> Any:
        return self.client.get(
            f"/files/{file_id or self.file_id}/key", headers=auth(self.tokens[who])
        )

    def grants(self, who: str = "alice") -> Any:
        return self.client.get(f"/files/{self.file_id}/grants", headers=auth(self.tokens[who]))

    def revoke(self, who: str, user: str) -> Any:
        return self.client.delete(
            f"/files/{self.file_id}/grants/{user}", headers=auth(self.tokens[who])
        )

    def shared(self, who: str, query: str = "") -> Any:
        return self.client.get(f"/files?shared=with-me{query}", headers=auth(self.tokens[who]))


@pytest.fixture
def people(client: FlaskClient) -> People:
    return People(client)


def in_future(**delta: float) -> str:
    return (datetime.now(UTC) + timedelta(**delta)).isoformat()


def test_a_grantee_gets_the_key_and_strangers_do_not(people: People) -> None:
    assert people.key("bob").status_code == 404
    response = people.grant("alice", "bob")
    assert response.status_code == 201, response.text
    assert response.json["user"] == "bob" and response.json["expires_at"] is None
    key = people.key("bob")
    assert key.status_code == 200
    assert key.text == people.key("alice").text
    assert len(base64.b64decode(key.text)) == 32
    assert (people.key("carol").status_code, people.key("carol").data) == NO_SUCH_FILE


def test_granting_again_updates_the_expiry(people: People) -> None:
    first = people.grant("alice", "bob", expires_at=in_future(hours=1))
    assert first.status_code == 201
    later = in_future(days=2)
    again = people.grant("alice", "bob", expires_at=later)
    assert again.status_code == 200, again.text
    assert again.json["created_at"] == first.json["created_at"]
    listed = people.grants().json["grants"]
    assert len(listed) == 1
    assert datetime.fromisoformat(listed[0]["expires_at"]) == datetime.fromisoformat(
        again.json["expires_at"]
    )
    assert abs(datetime.fromisoformat(listed[0]["expires_at"]) - datetime.fromisoformat(later)) < (
        timedelta(milliseconds=1)
    )
    forever = people.grant("alice", "bob")
    assert forever.status_code == 200 and forever.json["expires_at"] is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"user": "alice"}, "You own this file"),
        ({"user": "nobody-here"}, "No such user."),
        ({"user": "no such name!"}, "No such user."),
        ({}, "Name the user"),
        ({"user": ["bob"]}, "user must be a string"),
        ({"user": "bob", "expires_at": "tomorrow"}, "expires_at must be an ISO 8601"),
        ({"user": "bob", "expires_at": "2030-01-01T00:00:00"}, "with its zone"),
        ({"user": "bob", "expires_at": 1893456000}, "expires_at must be an ISO 8601"),
        ({"user": "bob", "expires_at": "0001-01-01T00:00:00+01:00"}, "with its zone"),
        ({"user": "bob", "expires_at": "2001-01-01T00:00:00Z"}, "must be in the future"),
    ],
)
def test_bad_grants_are_refused_and_change_nothing(
    people: People, db: Any, body: dict[str, Any], message: str
) -> None:
    response = people.client.post(
        f"/files/{people.file_id}/grants", json=body, headers=auth(people.tokens["alice"])
    )
    assert response.status_code == 400, response.text
    assert message in response.text
    assert db.grants.count_documents({}) == 0
    assert db.events.count_documents({"action": {"$regex": "^grant"}}) == 0


def test_every_grant_route_answers_others_like_an_unknown_id(people: People) -> None:
    assert people.grant("alice", "bob").status_code == 201
    unknown = str(uuid.uuid4())
    for who in ("bob", "carol"):  # the grantee too: grants are the owner's business
        for file_id in (people.file_id, unknown):
            headers = auth(people.tokens[who])
            answers = [
                people.client.post(f"/files/{file_id}/grants", json={"user": "carol"},
                                   headers=headers),
                people.client.get(f"/files/{file_id}/grants", headers=headers),
                people.client.delete(f"/files/{file_id}/grants/bob", headers=headers),
                people.client.get(f"/files/{file_id}/events", headers=headers),
            ]  # fmt: skip
            for response in answers:
                assert (response.status_code, response.data) == NO_SUCH_FILE, who
    # Nothing changed: bob still holds his grant, carol got none.
    assert [g["user"] for g in people.grants().json["grants"]] == ["bob"]
    assert people.key("carol").status_code == 404


def test_a_grantee_answer_is_the_owners_answer_and_a_strangers_is_an_unknown_ids(
    people: People,
) -> None:
    people.grant("alice", "bob")

    def ask(who: str, file_id: str) -> tuple[Any, ...]:
        status, content_type, body, headers = answer(people.key(who, file_id))
        headers.pop("x-ratelimit-remaining", None)
        return status, content_type, body, headers

    assert ask("bob", people.file_id) == ask("alice", people.file_id)
    assert ask("carol", people.file_id) == ask("carol", str(uuid.uuid4()))


def test_revoked_grants_answer_like_none(people: People) -> None:
    people.grant("alice", "bob")
    assert people.key("bob").status_code == 200
    assert people.revoke("alice", "bob").status_code == 204
    assert (people.key("bob").status_code, people.key("bob").data) == NO_SUCH_FILE
    assert people.grants().json["grants"] == []
    again = people.revoke("alice", "bob")
    assert (again.status_code, again.text) == (404, "No such grant.\n")
    assert people.revoke("alice", "nobody-here").status_code == 404
    assert people.revoke("alice", "carol").status_code == 404
    assert people.shared("bob").json["files"] == []


def test_expired_grants_answer_like_none(timed: Flask, clock: Clock) -> None:
    people = People(timed.test_client())
    assert people.grant("alice", "bob", expires_at=in_future(minutes=5)).status_code == 201
    assert people.key("bob").status_code == 200
    assert len(people.shared("bob").json["files"]) == 1
    clock.offset = timedelta(minutes=6)
    assert (people.key("bob").status_code, people.key("bob").data) == NO_SUCH_FILE
    assert people.grants().json["grants"] == []  # not listed
    assert people.shared("bob").json["files"] == []
    revoked = people.revoke("alice", "bob")  # nothing live to revoke
    assert (revoked.status_code, revoked.text) == (404, "No such grant.\n")
    info = people.client.get(f"/files/{people.file_id}/info", headers=auth(people.tokens["bob"]))
    assert info.status_code == 404
    # Granting again makes a new grant, made now: 201, and the key comes back.
    again = people.grant("alice", "bob", expires_at=in_future(hours=1))
    assert again.status_code == 201
    assert people.key("bob").status_code == 200
    listed = people.grants().json["grants"]
    assert [g["created_at"] for g in listed] == [again.json["created_at"]]
    assert datetime.fromisoformat(again.json["created_at"]) >= datetime.now(UTC) + clock.offset - (
        timedelta(seconds=30)
    )


def test_grantees_see_the_files_info_but_not_its_plaintext(people: People) -> None:
    people.grant("alice", "bob")
    bob = auth(people.tokens["bob"])
    info = people.client.get(f"/files/{people.file_id}/info", headers=bob)
    assert info.status_code == 200 and info.json["size"] == len(people.data)
    plain = people.client.get(f"/files/{people.file_id}/plaintext", headers=bob)
    assert (plain.status_code, plain.data) == NO_SUCH_FILE
    assert people.client.delete(f"/files/{people.file_id}", headers=bob).status_code == 404
    carol = people.client.get(f"/files/{people.file_id}/info", headers=auth(people.tokens["carol"]))
    assert (carol.status_code, carol.data) == NO_SUCH_FILE


def test_shared_with_me_lists_live_grants_with_the_owners_name_in_pages(people: People) -> None:
    others = [upload(people.client, people.tokens["carol"], b"c%d" % i)["id"] for i in range(3)]
    for file_id in others:
        assert people.grant("carol", "bob", file_id).status_code == 201
    people.grant("alice", "bob")
    seen, cursor, pages = [], "", 0
    while True:
        page = people.shared("bob", f"&limit=2{cursor}")
        assert page.status_code == 200, page.text
        seen += page.json["files"]
        pages += 1
        if page.json["next_cursor"] is None:
            break
        cursor = f"&cursor={page.json['next_cursor']}"
    assert pages == 2
    assert {f["id"]: f["owner_name"] for f in seen} == {
        **dict.fromkeys(others, "carol"),
        people.file_id: "alice",
    }
    # Newest file first (alice's was uploaded before carol's), as GET /files orders its own.
    assert [f["id"] for f in seen] == [*reversed(others), people.file_id]
    assert people.shared("alice").json["files"] == []
    # bob's own listing is his own files only; grants count in no quota of his.
    own = people.client.get("/files", headers=auth(people.tokens["bob"]))
    assert own.json["files"] == []
    usage = services_of_client(people).storage.usage.head(people.ids["bob"])
    assert usage.bytes == 0


def services_of_client(people: People) -> Any:
    return services_of(people.client.application)


@pytest.mark.parametrize("value", ["with-you", "", "WITH-ME", "all"])
def test_other_shared_values_are_refused(people: People, value: str) -> None:
    response = people.client.get(f"/files?shared={value}", headers=auth(people.tokens["bob"]))
    assert response.status_code == 400
    assert "shared must be with-me" in response.text


def test_a_bad_shared_cursor_is_a_400(people: People) -> None:
    assert people.shared("bob", "&cursor=garbage").status_code == 400


def test_deleting_the_file_removes_its_grants(people: People, db: Any) -> None:
    people.grant("alice", "bob")
    assert db.grants.count_documents({"file": people.file_id}) == 1
    headers = auth(people.tokens["alice"])
    assert people.client.delete(f"/files/{people.file_id}", headers=headers).status_code == 204
    assert db.grants.count_documents({}) == 0
    assert db.events.count_documents({"file": people.file_id}) == 0
    assert people.shared("bob").json["files"] == []


def delete_account(client: FlaskClient, token: str) -> None:
    response = client.delete("/account", headers={**auth(token), "User_Password": PASSWORD})
    assert response.status_code == 200, response.text


def test_deleting_the_owners_account_removes_the_grants(people: People, db: Any) -> None:
    people.grant("alice", "bob")
    delete_account(people.client, people.tokens["alice"])
    assert db.grants.count_documents({}) == 0
    assert people.shared("bob").json["files"] == []


def test_deleting_the_grantees_account_removes_the_grants(people: People, db: Any) -> None:
    people.grant("alice", "bob")
    people.grant("alice", "carol")
    delete_account(people.client, people.tokens["bob"])
    assert [g["user"] for g in people.grants().json["grants"]] == ["carol"]
    assert db.grants.count_documents({"grantee": people.ids["bob"]}) == 0
    # A new "bob" is a new identity: the old grant does not come back with the name.
    register(people.client, "bob", PASSWORD)
    people.tokens["bob"] = login(people.client, "bob", PASSWORD)
    assert people.key("bob").status_code == 404


def test_the_sweep_removes_grants_and_events_a_crash_left(
    people: People, db: Any, app: Flask
) -> None:
    """A crash between the steps of a deletion: grants of a file or users gone stay behind."""
    people.grant("alice", "bob")
    people.grant("alice", "carol")
    people.key("bob")
    other = upload(people.client, people.tokens["carol"], b"carol's")["id"]
    people.grant("carol", "bob", other)
    db.files.delete_one({"_id": people.file_id})  # the file went, its grants did not
    db.users.delete_one({"_id": people.ids["bob"]})  # bob went, his grants did not
    report = services_of(app).files.sweep()
    assert report.sharing >= 3
    assert db.grants.count_documents({}) == 0
    assert db.events.count_documents({"file": people.file_id}) == 0
    assert db.events.count_documents({"file": other}) == 1  # carol's grant to bob: kept history
