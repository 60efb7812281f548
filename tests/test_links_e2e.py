"""Share links end to end: the real server as `make run` starts it, over HTTP. README's tagged
block runs verbatim; 50 concurrent downloads of a link allowing 10 give exactly 10 files; every dead
link answers one identical 404; the server's log holds neither a link's token nor a key."""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.support.server import Server, new_token
from tests.test_e2e import readme_block, run_bash

pytestmark = pytest.mark.e2e

# Headers that differ between any two answers whatever they say.
PER_ANSWER = {"date", "x-request-id"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("links"))
    yield server
    server.stop()


def create_link(server: Server, token: str, file_id: str, **settings: Any) -> dict[str, Any]:
    headers = {"x-access-tokens": token, "Accept": "application/json"}
    headers["Content-Type"] = "application/json"
    response, data = server.request(
        "POST", f"/files/{file_id}/links", json.dumps(settings), headers
    )
    assert response.status == 201, data
    link: dict[str, Any] = json.loads(data)
    link["path"] = "/s/" + link["url"].rsplit("/s/", 1)[1]
    return link


def upload(server: Server, token: str, data: bytes) -> str:
    response, body = server.request("POST", "/upload", data, {"x-access-tokens": token})
    assert response.status == 201
    return str(body.decode())


def test_readme_share_links_verbatim(server: Server) -> None:
    result = run_bash(readme_block("links"), server.port)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "link downloads OK" in lines and lines[-1] == "404"
    link = next(line for line in lines if "/s/" in line)
    assert re.fullmatch(rf"http://localhost:{server.port}/s/[A-Za-z0-9_-]{{43}}", link)
    listed = json.loads(next(line for line in lines if line.startswith('{"links"')))
    assert [item["downloads"] for item in listed["links"]] == [2]  # curl's and the CLI's
    assert listed["links"][0]["max_downloads"] == 3
    assert link.rsplit("/", 1)[1] not in server.log()


def test_fifty_concurrent_downloads_of_a_link_allowing_ten(server: Server) -> None:
    token = new_token(server, "racer")
    file_id = upload(server, token, b"raced content " * 50_000)
    _, ciphertext = server.request("GET", f"/files/{file_id}", None, {"x-access-tokens": token})
    link = create_link(server, token, file_id, max_downloads=10)
    start = threading.Barrier(50)
    answers: list[tuple[int, bytes]] = []

    def download() -> None:
        start.wait()
        response, data = server.request("GET", f"{link['path']}/file")
        answers.append((response.status, data))

    threads = [threading.Thread(target=download) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = sorted(status for status, _ in answers)
    assert statuses == [200] * 10 + [404] * 40
    assert all(data == ciphertext for status, data in answers if status == 200)
    assert len({data for status, data in answers if status == 404}) == 1
    _, data = server.request("GET", f"/files/{file_id}/links", None, {"x-access-tokens": token})
    assert json.loads(data) == {"links": []}  # used up: no longer live
    assert link["token"] not in server.log()


def answer(server: Server, path: str, accept: str) -> tuple[int, dict[str, str], bytes]:
    response, data = server.request("GET", path, None, {"Accept": accept})
    headers = {k.lower(): v for k, v in response.getheaders() if k.lower() not in PER_ANSWER}
    return response.status, headers, data


def test_every_dead_link_answers_one_identical_404(server: Server) -> None:
    token = new_token(server, "deadlinks")
    auth = {"x-access-tokens": token}

    def linked(**settings: Any) -> dict[str, Any]:
        return create_link(server, token, upload(server, token, b"x" * 100), **settings)

    expired, revoked, used_up, deleted = linked(), linked(), linked(max_downloads=1), linked()
    client = server.database()
    try:
        past = datetime.now(UTC) - timedelta(seconds=1)
        client["cryptofiles"].links.update_one(
            {"_id": expired["id"]}, {"$set": {"expires_at": past}}
        )
    finally:
        client.close()
    response, _ = server.request(
        "DELETE", f"/files/{revoked['file']}/links/{revoked['id']}", None, auth
    )
    assert response.status == 204
    assert server.request("GET", f"{used_up['path']}/file")[0].status == 200
    assert server.request("DELETE", f"/files/{deleted['file']}", None, auth)[0].status == 204
    unknown = "/s/" + base64.urlsafe_b64encode(bytes(32)).decode().rstrip("=")
    for suffix in ("", "/file"):
        for accept in ("*/*", "application/json"):
            reference = answer(server, unknown + suffix, accept)
            assert reference[0] == 404
            for dead in (expired, revoked, used_up, deleted):
                assert answer(server, dead["path"] + suffix, accept) == reference, dead
