"""Share links (issue 12, part 4): the owner's routes, the holder's download and page, against the
real database; the counting under real concurrency; the one 404 of every dead link.

The end-to-end half (the real server, 50 concurrent downloads over HTTP, README's tagged block) is
in tests/test_links_e2e.py.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cryptofiles.links import MAX_DOWNLOADS, MAX_LINKS_PER_FILE, NoSuchLink
from cryptofiles.web import services_of
from cryptofiles.web.page import CSP
from tests.support.api import JSON, Accounts, auth, upload

CONTENT = b"shared content " * 1000


def new_link(client: FlaskClient, token: str, file_id: str, **settings: Any) -> dict[str, Any]:
    response = client.post(
        f"/files/{file_id}/links", json=settings, headers={**auth(token), **JSON}
    )
    assert response.status_code == 201, response.text
    return response.json  # type: ignore[return-value]


@pytest.fixture
def alice(accounts: Accounts) -> str:
    return accounts.token("alice")


@pytest.fixture
def file_id(client: FlaskClient, alice: str) -> str:
    return str(upload(client, alice, CONTENT, **{"X-File-Name": "report.pdf"})["id"])


def ciphertext(client: FlaskClient, token: str, file_id: str) -> bytes:
    response = client.get(f"/files/{file_id}", headers=auth(token))
    assert response.status_code == 200
    return bytes(response.data)


def path_of(link: dict[str, Any]) -> str:
    return "/s/" + str(link["url"]).rsplit("/s/", 1)[1]


def test_a_link_is_created_with_a_random_token_stored_only_hashed(
    client: FlaskClient, alice: str, file_id: str, db: Any
) -> None:
    link = new_link(client, alice, file_id, max_downloads=3)
    token = link["token"]
    assert len(token) >= 43  # 256 bits in base64url
    assert link["url"] == f"http://localhost/s/{token}"
    assert link["id"] != token and token not in link["id"]
    assert (link["file"], link["max_downloads"], link["downloads"]) == (file_id, 3, 0)
    expires = datetime.fromisoformat(link["expires_at"])
    assert timedelta(days=6, hours=23) < expires - datetime.now(UTC) <= timedelta(days=7)
    stored = db.links.find_one({"_id": link["id"]})
    assert stored["token_hash"] == hashlib.sha256(token.encode()).hexdigest()
    assert token not in repr(list(db.links.find())), "the token itself is stored"
    # curl's default answer is the URL alone, so that LINK=$(curl ...) works.
    plain = client.post(f"/files/{file_id}/links", headers=auth(alice))
    assert plain.status_code == 201 and plain.text.startswith("http://localhost/s/")
    assert plain.headers["Cache-Control"] == "no-store"
    other = new_link(client, alice, file_id)
    assert other["token"] != token and other["max_downloads"] is None


@pytest.mark.parametrize(
    "body",
    [
        {"expires_at": "2001-01-01T00:00:00Z"},
        {"expires_at": (datetime.now(UTC) + timedelta(days=91)).isoformat()},
        {"expires_at": "2030-01-01T00:00:00"},  # no time zone
        {"expires_at": "tomorrow"},
        {"expires_at": 1893456000},
        {"expires_at": "\uff12\uff10\uff13\uff10-01-01T00:00:00Z"},  # fullwidth digits
        {"max_downloads": 0},
        {"max_downloads": MAX_DOWNLOADS + 1},
        {"max_downloads": True},
        {"max_downloads": "5"},
        {"max_downloads": 2.5},
    ],
)
def test_bad_link_settings_are_refused_and_store_nothing(
    client: FlaskClient, alice: str, file_id: str, db: Any, body: dict[str, Any]
) -> None:
    response = client.post(f"/files/{file_id}/links", json=body, headers=auth(alice))
    assert response.status_code == 400, response.text
    assert db.links.count_documents({}) == 0


def test_an_explicit_expiry_and_an_offset_are_kept_in_utc(
    client: FlaskClient, alice: str, file_id: str
) -> None:
    when = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    local = when.astimezone(datetime.now().astimezone().tzinfo).isoformat()
    link = new_link(client, alice, file_id, expires_at=local, max_downloads=MAX_DOWNLOADS)
    assert datetime.fromisoformat(link["expires_at"]) == when


def test_only_the_owner_reaches_the_link_routes(
    client: FlaskClient, accounts: Accounts, alice: str, file_id: str, db: Any
) -> None:
    link = new_link(client, alice, file_id)
    bob = accounts.token("bob")
    unknown = str(uuid.uuid4())
    for accept in ("*/*", "application/json"):
        headers = {**auth(bob), "Accept": accept}
        expected = client.get(f"/files/{unknown}/info", headers=headers)
        assert expected.status_code == 404
        for method, url in [
            ("POST", f"/files/{file_id}/links"),
            ("GET", f"/files/{file_id}/links"),
            ("DELETE", f"/files/{file_id}/links/{link['id']}"),
            ("POST", f"/files/{unknown}/links"),
        ]:
            response = client.open(url, method=method, headers=headers)
            assert (response.status_code, response.data) == (404, expected.data), (method, url)
    assert db.links.count_documents({}) == 1
    # A link id of another file, even one of the owner's, is not this file's.
    other_file = upload(client, alice, b"other")["id"]
    response = client.delete(f"/files/{other_file}/links/{link['id']}", headers=auth(alice))
    assert response.status_code == 404
    assert db.links.count_documents({}) == 1


def test_anyone_with_the_link_downloads_the_ciphertext_whole(
    client: FlaskClient, alice: str, file_id: str
) -> None:
    link = new_link(client, alice, file_id)
    response = client.get(f"{path_of(link)}/file", headers={"Range": "bytes=0-9"})
    assert response.status_code == 200  # no ranges: each request is a whole, counted download
    assert response.data == ciphertext(client, alice, file_id)
    assert response.headers["Content-Disposition"].startswith(
        'attachment; filename="report.pdf.enc"'
    )
    assert response.headers["Accept-Ranges"] == "none"
    assert response.headers["Cache-Control"] == "no-store"
    assert "ETag" not in response.headers
    listed = client.get(f"/files/{file_id}/links", headers=auth(alice)).json
    assert listed == {"links": [{**{k: v for k, v in link.items() if k not in ("url", "token")},
                                 "downloads": 1}]}  # fmt: skip


def dead_answers(client: FlaskClient, path: str) -> list[tuple[int, bytes, str, str]]:
    answers = []
    for url in (path, f"{path}/file"):
        for accept in ("*/*", "application/json"):
            response = client.get(url, headers={"Accept": accept})
            answers.append(
                (response.status_code, response.data, response.content_type,
                 response.headers.get("Cache-Control", ""))
            )  # fmt: skip
    return answers


def test_unknown_expired_revoked_used_up_and_deleted_links_answer_one_404(
    client: FlaskClient, alice: str, db: Any
) -> None:
    def linked(**settings: Any) -> tuple[str, dict[str, Any]]:
        file_id = str(upload(client, alice, CONTENT)["id"])
        return file_id, new_link(client, alice, file_id, **settings)

    unknown = dead_answers(client, "/s/" + "A" * 43)
    assert {answer[0] for answer in unknown} == {404}
    _, expired = linked()
    db.links.update_one(
        {"_id": expired["id"]}, {"$set": {"expires_at": datetime.now(UTC) - timedelta(seconds=1)}}
    )
    revoked_file, revoked = linked()
    response = client.delete(f"/files/{revoked_file}/links/{revoked['id']}", headers=auth(alice))
    assert response.status_code == 204
    _, used_up = linked(max_downloads=1)
    assert client.get(f"{path_of(used_up)}/file").status_code == 200
    deleted_file, deleted = linked()
    assert client.delete(f"/files/{deleted_file}", headers=auth(alice)).status_code == 204
    for dead in (expired, revoked, used_up, deleted):
        assert dead_answers(client, path_of(dead)) == unknown, dead
    listed = client.get(f"/files/{revoked_file}/links", headers=auth(alice)).json
    assert listed == {"links": []}


def test_a_link_allows_exactly_its_downloads_then_leaves_the_listing(
    client: FlaskClient, alice: str, file_id: str
) -> None:
    link = new_link(client, alice, file_id, max_downloads=2)
    page = client.get(path_of(link))  # looking at the page counts nothing
    assert page.status_code == 200
    head = client.head(f"{path_of(link)}/file")  # nor does a HEAD (link previews, curl -I)
    assert head.status_code == 200 and head.data == b""
    assert head.content_length == len(ciphertext(client, alice, file_id))
    statuses = [client.get(f"{path_of(link)}/file").status_code for _ in range(3)]
    assert statuses == [200, 200, 404]
    assert client.get(f"/files/{file_id}/links", headers=auth(alice)).json == {"links": []}
    assert client.get(path_of(link)).status_code == 404


def test_concurrent_downloads_take_exactly_the_allowed_count(
    app: Flask, client: FlaskClient, alice: str, file_id: str, db: Any
) -> None:
    """50 racing downloads of a link allowing 10, through the service on the real database."""
    link = new_link(client, alice, file_id, max_downloads=10)
    services = services_of(app)
    start = threading.Barrier(50)
    outcomes: list[str] = []

    def download() -> None:
        start.wait()
        try:
            services.links.download(link["token"], "10.0.0.9", None)
            outcomes.append("ok")
        except NoSuchLink:
            outcomes.append("refused")

    threads = [threading.Thread(target=download) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes).count("ok") == 10 and len(outcomes) == 50
    slots = sorted(doc["n"] for doc in db.link_downloads.find({"link": link["id"]}))
    assert slots == list(range(1, 11))
    # Each counted download, and only those, is in the file's history.
    assert db.events.count_documents({"file": file_id, "action": "link.download"}) == 10


def test_deleting_the_file_or_the_account_removes_its_links(
    client: FlaskClient, accounts: Accounts, alice: str, file_id: str, db: Any
) -> None:
    link = new_link(client, alice, file_id)
    assert client.get(f"{path_of(link)}/file").status_code == 200
    assert client.delete(f"/files/{file_id}", headers=auth(alice)).status_code == 204
    assert db.links.count_documents({}) == 0 and db.link_downloads.count_documents({}) == 0
    kept = upload(client, alice, b"kept")["id"]
    new_link(client, alice, kept)
    carol = accounts.token("carol")
    new_link(client, carol, upload(client, carol, b"carol's")["id"])
    response = client.delete(
        "/account", headers={**auth(alice), "User_Password": "correct horse battery"}
    )
    assert response.status_code == 200
    assert [doc["owner"] for doc in db.links.find()] == [
        db.users.find_one({"name": "carol"})["public_id"]
    ]


def test_the_sweep_removes_expired_links_and_links_of_files_gone(
    app: Flask, client: FlaskClient, alice: str, file_id: str, db: Any
) -> None:
    live = new_link(client, alice, file_id)
    expired = new_link(client, alice, file_id)
    gone = new_link(client, alice, upload(client, alice, b"gone")["id"])
    db.links.update_one(
        {"_id": expired["id"]}, {"$set": {"expires_at": datetime.now(UTC) - timedelta(days=1)}}
    )
    db.files.delete_one({"_id": gone["file"]})  # as a crash between the file and its links leaves
    assert client.get(f"{path_of(live)}/file").status_code == 200
    # A download counted for a link revoked at that moment.
    db.link_downloads.insert_one({"_id": "revoked:1", "link": "revoked", "n": 1})
    assert services_of(app).links.sweep() == 2
    assert [doc["_id"] for doc in db.links.find()] == [live["id"]]
    assert [doc["link"] for doc in db.link_downloads.find()] == [live["id"]]


def test_the_page_carries_the_policy_and_escapes_the_file_name(
    client: FlaskClient, alice: str
) -> None:
    name = "</script><script>alert(1)</script>&.txt"
    file_id = upload(client, alice, b"x", **{"X-File-Name": name})["id"]
    link = new_link(client, alice, file_id)
    page = client.get(path_of(link))
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert page.headers["Content-Security-Policy"] == CSP
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert page.headers["Cache-Control"] == "no-store"
    assert "</script><script>alert" not in page.text
    assert "\\u003c/script\\u003e" in page.text
    assert link["token"] not in page.text  # the page reads it from its own address


def test_link_routes_are_rate_limited_per_address(
    make_app: Any, client: FlaskClient, alice: str, file_id: str
) -> None:
    link = new_link(client, alice, file_id)
    limited = make_app(RATE_LIMIT_LINKS="5/minute").test_client()
    for _ in range(5):
        assert limited.get(path_of(link)).status_code == 200
    refused = limited.get(path_of(link))
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    other = limited.get(path_of(link), environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert other.status_code == 200


def test_the_request_log_never_holds_a_link_token(
    make_app: Any, client: FlaskClient, alice: str, file_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    link = new_link(client, alice, file_id)
    limited = make_app(RATE_LIMIT_LINKS="1/minute").test_client()
    with caplog.at_level("DEBUG"):
        assert limited.get(f"{path_of(link)}/file").status_code == 200
        assert limited.get(f"{path_of(link)}/file").status_code == 429  # a security event
        assert limited.get("/s/unknown-token-text").status_code == 404
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "/s/<token>/file" in logged
    for secret in (link["token"], "unknown-token-text"):
        assert secret not in logged


def test_a_file_has_at_most_its_bound_of_live_links(
    make_app: Any, alice: str, file_id: str, db: Any
) -> None:
    client = make_app(RATE_LIMIT_LINKS="1000/minute").test_client()
    links = [new_link(client, alice, file_id) for _ in range(MAX_LINKS_PER_FILE)]
    refused = client.post(f"/files/{file_id}/links", headers=auth(alice))
    assert refused.status_code == 400 and "revoke one" in refused.text
    assert db.links.count_documents({}) == MAX_LINKS_PER_FILE
    gone = client.delete(f"/files/{file_id}/links/{links[0]['id']}", headers=auth(alice))
    assert gone.status_code == 204
    new_link(client, alice, file_id)


def test_link_downloads_are_in_the_owners_history_without_the_token(
    client: FlaskClient, alice: str, file_id: str
) -> None:
    link = new_link(client, alice, file_id)
    response = client.get(path_of(link) + "/file", environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert response.status_code == 200
    client.head(path_of(link) + "/file")  # counts nothing, records nothing
    events = client.get(f"/files/{file_id}/events", headers=auth(alice)).json["events"]
    downloads = [e for e in events if e["action"] == "link.download"]
    assert len(downloads) == 1
    (event,) = downloads
    assert event["link"] == link["id"] and event["user"] == {"id": link["id"], "name": "share link"}
    assert event["client"] == "10.1.2.3"
    assert event["request_id"] == response.headers["X-Request-Id"]
    assert link["token"] not in str(events)


def test_a_link_download_that_cannot_be_recorded_serves_nothing(
    client: FlaskClient, alice: str, file_id: str, db: Any
) -> None:
    link = new_link(client, alice, file_id)
    client.get(f"/files/{file_id}/key", headers=auth(alice))  # the file's one event allowed
    db.events.create_index("file", unique=True, name="one_event_per_file")
    response = client.get(path_of(link) + "/file", headers=JSON)
    assert response.status_code == 503
    assert "access history" in response.json["detail"]
    assert response.headers["Content-Type"].startswith("application/problem+json")
