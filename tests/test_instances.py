"""Several app instances on one database, as a load balancer would run them.

Three launchers (``make run``'s, each its own gunicorn on its own port, its own var/ folder) share
one local database, one ``SECRET_KEY`` and one ``MASTER_KEYS``, and nothing else: every rule that
must hold across instances holds because its state lives in the database. Driven over real HTTP:
a revoked token, the failed-login budget, the quota, a file's whole life spread over the instances,
and one instance killed (SIGKILL, gunicorn master and workers) in the middle of an upload.

The counting checks are sequential on purpose: FerretDB 1.24 on SQLite loses concurrent ``$inc``
updates (SECURITY.md), so parallel requests would test that engine's gap, not our rule.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import http.client
import json
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cryptofiles.dev.harness import Launcher
from cryptofiles.dev.tink_oracle import tink_decrypt
from tests.support.database import PinnedDatabase, Stored, sweep_later
from tests.support.loopback import PASSWORD, Answer, SlowUpload, call
from tests.support.processes import is_gone, wait_until
from tests.support.server import launcher_env, settings_of

# Three servers at once, then a fourth: 12 s on a quiet 2-core machine, 25-40 s on a busy one.
pytestmark = [pytest.mark.e2e, pytest.mark.slow]

KiB, MiB = 1 << 10, 1 << 20
LOGIN_FAILURES_ALLOWED = 5  # RATE_LIMIT_LOGIN_NAME below; per hour, so no window ends mid-test
QUOTA = 3 * MiB + 512 * KiB


@dataclasses.dataclass
class User:
    """A user's token, usable on any instance: the instances share SECRET_KEY and the database."""

    name: str
    token: str

    @classmethod
    def register(cls, server: Launcher, name: str) -> User:
        credentials = {"User_Name": name, "User_Password": PASSWORD}
        new = {f"New_{k}": v for k, v in credentials.items()}
        assert call(server.port, "POST", "/registration", None, new).status == 201
        answer = call(server.port, "GET", "/login", None, credentials)
        assert answer.status == 200, answer.text
        return cls(name, answer.text)

    def on(self, server: Launcher, method: str, path: str, body: bytes | None = None) -> Answer:
        return call(server.port, method, path, body, {"x-access-tokens": self.token}, timeout=60)

    def upload(self, server: Launcher, payload: bytes) -> Answer:
        return self.on(server, "POST", "/upload", payload)

    def listed(self, server: Launcher) -> set[str]:
        answer = self.on(server, "GET", "/files?limit=1000")
        assert answer.status == 200, answer.text
        return {f["id"] for f in json.loads(answer.body)["files"]}


@dataclasses.dataclass
class Cluster:
    database: PinnedDatabase
    env: dict[str, str]
    servers: list[Launcher]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("instances")
    database = PinnedDatabase(tmp / "db")
    database.start()
    env = launcher_env(
        database,
        MONGODB_TIMEOUT_MS="10000",  # a busy machine is not an outage
        WEB_WORKERS="1",  # three instances on two cores
        RATE_LIMIT_LOGIN_NAME=f"{LOGIN_FAILURES_ALLOWED}/hour",
        QUOTA_BYTES=str(QUOTA),
    )
    servers: list[Launcher] = []
    try:
        # Each launcher gets the same settings, as instances behind a load balancer do; only the
        # port (and the var/ folder: logs, metrics files) differs.
        for name in ("a", "b", "c"):
            servers.append(Launcher(tmp / f"var-{name}", env))
        yield Cluster(database, env, servers)
    finally:
        for server in servers:
            server.stop()
        database.stop()


def test_the_instances_are_separate_servers_on_one_database(cluster: Cluster) -> None:
    ports = {server.port for server in cluster.servers}
    masters = {server.gunicorn_master() for server in cluster.servers}
    assert len(ports) == len(masters) == 3
    for server in cluster.servers:
        assert server.database_uri() is None, "an instance started a database of its own"


def test_a_token_revoked_on_one_instance_is_refused_by_all_at_once(cluster: Cluster) -> None:
    a, b, c = cluster.servers
    user = User.register(a, "revoker")
    other = User.register(b, "bystander")
    for server in (a, b, c):
        assert user.on(server, "GET", "/test_login").status == 200

    assert user.on(b, "POST", "/logout").status == 200
    # The very next request, on every instance, with no wait: nothing is cached per instance.
    for server in (c, a, b):
        answer = user.on(server, "GET", "/test_login")
        assert answer.status == 401, (server.port, answer.text)
        assert user.upload(server, b"x").status == 401
    for server in (a, b, c):  # only that token
        assert other.on(server, "GET", "/test_login").status == 200


def test_the_failed_login_budget_is_shared_by_the_instances(cluster: Cluster) -> None:
    servers = cluster.servers
    User.register(servers[0], "victim")
    wrong = {"User_Name": "victim", "User_Password": "not-the-password"}
    right = {"User_Name": "victim", "User_Password": PASSWORD}
    # Spread over the instances, one after the other: each instance alone sees fewer failures
    # than the limit, so only a count shared through the database refuses the next one.
    statuses = [
        call(servers[i % 3].port, "GET", "/login", None, wrong).status
        for i in range(LOGIN_FAILURES_ALLOWED)
    ]
    assert statuses == [401] * LOGIN_FAILURES_ALLOWED
    for server in servers:
        refused = call(server.port, "GET", "/login", None, right)
        assert refused.status == 429, (server.port, refused.text)
        assert refused.headers.get("retry-after", "").isdigit()


def test_the_quota_counts_uploads_through_every_instance(cluster: Cluster) -> None:
    a, b, c = cluster.servers
    user = User.register(c, "hoarder")
    stored = [user.upload(server, os.urandom(MiB)) for server in (a, b, c)]
    assert [answer.status for answer in stored] == [201] * 3
    # 3 MiB stored, 512 KiB left: each instance refuses more, whichever stored the rest.
    for server in (a, b, c):
        refused = user.upload(server, os.urandom(512 * KiB + 1))
        assert refused.status == 413, (server.port, refused.text)
        assert "quota" in refused.text
    assert user.upload(b, os.urandom(512 * KiB)).status == 201  # exactly what is left
    assert user.upload(a, b"1").status == 413
    assert len(user.listed(c)) == 4


def test_a_file_lives_across_instances(cluster: Cluster) -> None:
    a, b, c = cluster.servers
    user = User.register(a, "traveller")
    payload = os.urandom(2 * MiB + 12345)  # three chunks, three segments
    answer = user.upload(a, payload)
    assert answer.status == 201, answer.text
    file_id = answer.text

    ciphertexts = [user.on(server, "GET", f"/files/{file_id}") for server in (b, c, a)]
    assert {x.status for x in ciphertexts} == {200}
    assert len({x.body for x in ciphertexts}) == 1  # byte-exact, whichever instance serves
    plaintext = user.on(b, "GET", f"/files/{file_id}/plaintext")
    assert plaintext.status == 200
    assert plaintext.body == payload
    key = user.on(c, "GET", f"/files/{file_id}/key")
    assert key.status == 200
    assert tink_decrypt(base64.b64decode(key.body), ciphertexts[0].body) == payload

    assert user.on(b, "DELETE", f"/files/{file_id}").status == 204
    for server in (a, b, c):
        for path in (f"/files/{file_id}", f"/files/{file_id}/key", f"/files/{file_id}/plaintext"):
            assert user.on(server, "GET", path).status == 404, (server.port, path)
        assert file_id not in user.listed(server)
    assert file_id not in Stored.read(cluster.database).records


# -- behind a load balancer: whose address the per-address limits count -----------------------------


def login_status(port: int, *, proxied_for: str = "", forwarded_for: str = "") -> int:
    """A failed login's status, sent as a PROXY-protocol balancer sends it (``proxied_for``: the
    client address it announces) or as an HTTP proxy does (``forwarded_for``: X-Forwarded-For)."""
    head = f"PROXY TCP4 {proxied_for} 127.0.0.1 40000 {port}\r\n" if proxied_for else ""
    forwarded = f"X-Forwarded-For: {forwarded_for}\r\n" if forwarded_for else ""
    request = (
        f"{head}GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\nUser_Name: nobody\r\n"
        f"User_Password: not-the-password\r\n{forwarded}Connection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(request.encode())
        response = http.client.HTTPResponse(sock)
        response.begin()
        response.read()
        return response.status


def test_behind_a_proxy_protocol_balancer_each_client_has_its_own_address_budget(
    tmp_path: Path,
) -> None:
    """docs/deployment.md: gunicorn takes the client's address from the PROXY protocol (and only
    from the balancer's addresses), never from X-Forwarded-For. Without it every client behind the
    balancer would share one per-address budget, and a few failed logins would lock out everyone."""
    database = PinnedDatabase(tmp_path / "db")
    database.start()
    env = launcher_env(
        database,
        WEB_WORKERS="1",
        RATE_LIMIT_LOGIN_ADDRESS="2/hour",
        RATE_LIMIT_LOGIN_NAME="1000/hour",
        GUNICORN_CMD_ARGS="--proxy-protocol v1 --proxy-allow-from 127.0.0.1",
    )
    try:
        with Launcher(tmp_path / "var", env) as server:
            port = server.port
            first = [login_status(port, proxied_for="203.0.113.7") for _ in range(3)]
            assert first == [401, 401, 429]
            assert login_status(port, proxied_for="203.0.113.8") == 401  # another client
            # An HTTP proxy's header is not believed: these three share the peer's budget.
            forwarded = [login_status(port, forwarded_for=f"198.51.100.{i}") for i in range(3)]
            assert forwarded == [401, 401, 429]
            assert "203.0.113.8" in server.log()  # the security log names the real client too
    finally:
        database.stop()


# -- one instance killed mid-upload (last: it takes instance c down for good) ---------------------


@dataclasses.dataclass
class Crash:
    user: User
    before: dict[str, bytes]  # file id -> payload, stored through the survivors
    during: dict[str, bytes] = dataclasses.field(default_factory=dict)
    after: dict[str, bytes] = dataclasses.field(default_factory=dict)
    leftover: str = ""
    left_chunks: int = 0
    outcome: tuple[Any, ...] = ()
    killed: list[int] = dataclasses.field(default_factory=list)
    answers: dict[tuple[int, str], int] = dataclasses.field(default_factory=dict)
    listed: list[set[str]] = dataclasses.field(default_factory=list)
    swept: int = -1
    stored_after_sweep: Stored | None = None


def round_trip(user: User, into: Launcher, out_of: Launcher, size: int) -> tuple[str, bytes]:
    """Upload through one survivor, read back through the other; the id and payload."""
    payload = os.urandom(size)
    answer = user.upload(into, payload)
    assert answer.status == 201, answer.text
    assert user.on(out_of, "GET", f"/files/{answer.text}/plaintext").body == payload
    return answer.text, payload


@pytest.fixture(scope="module")
def crash(cluster: Cluster) -> Crash:
    a, b, c = cluster.servers
    user = User.register(a, "survivor")
    seen = Crash(user, before=dict([round_trip(user, a, b, 300 * KiB)]))

    # Within the quota (QUOTA applies to everyone): 3 MiB, cut after two chunks are stored.
    half = SlowUpload(c.port, user.token, os.urandom(3 * MiB), pause_after=2 * MiB + 512 * KiB)
    upload = half.start()

    def pending_with_chunks() -> bool:
        stored = Stored.read(cluster.database)
        return any(stored.chunks.get(i, 0) >= 2 for i in stored.pending())

    wait_until(pending_with_chunks, 60, "the slow upload's pending record and first chunks")
    (seen.leftover,) = Stored.read(cluster.database).pending()
    seen.during.update([round_trip(user, b, a, 200 * KiB)])  # while c holds a half upload

    seen.killed = c.server_pids()
    for pid in seen.killed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_until(lambda: all(map(is_gone, seen.killed)), 30, "the killed instance to die")
    wait_until(lambda: c.process.poll() is not None, 30, "c's launcher to end with its gunicorn")
    seen.outcome = upload.finish()
    seen.left_chunks = Stored.read(cluster.database).chunks.get(seen.leftover, 0)
    seen.during.update([round_trip(user, a, b, 1 * MiB + 1)])  # the leftover is still there

    for server in (a, b):
        for path in ("", "/key", "/plaintext", "/info"):
            status = user.on(server, "GET", f"/files/{seen.leftover}{path}").status
            seen.answers[(server.port, path)] = status
        seen.listed.append(user.listed(server))

    # What a later instance (or `cryptofiles admin sweep`) does once the upload's heartbeat is
    # older than STALE_UPLOAD.
    seen.swept = sweep_later(settings_of(cluster.env))
    seen.stored_after_sweep = Stored.read(cluster.database)
    seen.after.update([round_trip(user, b, a, 700 * KiB), round_trip(user, a, b, 5)])
    seen.listed.append(user.listed(a))
    return seen


def test_the_killed_upload_was_never_acknowledged(crash: Crash) -> None:
    assert crash.left_chunks >= 2  # it was really cut in the middle
    if crash.outcome and crash.outcome[0] == "answer":
        assert not 200 <= crash.outcome[1] < 300, crash.outcome


def test_nothing_of_the_killed_upload_is_visible(crash: Crash) -> None:
    assert set(crash.answers.values()) == {404}, crash.answers
    for listed in crash.listed:
        assert crash.leftover not in listed


def test_the_sweep_removes_the_killed_upload(crash: Crash) -> None:
    assert crash.swept == 1
    stored = crash.stored_after_sweep
    assert stored is not None
    assert stored.pending() == set()
    assert crash.leftover not in stored.records
    assert crash.leftover not in stored.chunks
    assert crash.leftover not in stored.gridfs


def test_the_other_instances_keep_serving(cluster: Cluster, crash: Crash) -> None:
    a, b, c = cluster.servers
    assert c.process.poll() is not None  # the launcher ended with its gunicorn: c is down for good
    kept = {**crash.before, **crash.during, **crash.after}
    assert len(kept) == 5  # each stored and read back through the survivors (see round_trip)
    assert set(kept) == crash.listed[-1]
    for file_id, payload in kept.items():  # and all still whole, through either survivor
        for server in (a, b):
            answer = crash.user.on(server, "GET", f"/files/{file_id}/plaintext")
            assert answer.status == 200
            assert answer.body == payload
