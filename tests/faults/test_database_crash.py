"""The database is killed (kill -9) in the middle of an upload streamed over real HTTP.

One scenario, run once for the module, then checked point by point:

1. a launcher (``make run``'s gunicorn) serves against a database we own; alice uploads a file;
2. a second upload streams slowly; once its pending record and first chunks are in the database,
   the database is killed; the rest of the body is sent;
3. while the database is down, /healthz still answers and a DB route answers 503;
4. the database restarts on the same port and data dir; the same server (same workers) is used for
   everything after: nothing partial is visible, the first file still decrypts, a sweep run as an
   instance started after STALE_UPLOAD removes the leftovers, and new uploads succeed.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cryptofiles.dev.harness import Launcher
from cryptofiles.web import create_app, services_of
from tests.support.database import PinnedDatabase, Stored, sweep_later
from tests.support.load import Acknowledged, check_acknowledged
from tests.support.loopback import (
    Answer,
    Client,
    SlowUpload,
    call,
    has_retry_after,
    is_short_plain_message,
    upload_until_ok,
)
from tests.support.processes import wait_until
from tests.support.server import launcher_env, settings_of

pytestmark = pytest.mark.slow

MiB = 1 << 20


@dataclasses.dataclass
class Observed:
    early: Acknowledged
    outcome: tuple[Any, ...] = ()
    healthz_while_down: Answer | None = None
    files_while_down: Answer | None = None
    readyz_while_down: Answer | None = None
    stored_before_kill: Stored | None = None
    stored_after_restart: Stored | None = None
    leaked_answers: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)
    listed_after_restart: set[str] = dataclasses.field(default_factory=set)
    early_problems: list[str] = dataclasses.field(default_factory=list)
    swept_at_start_up: Stored | None = None
    swept_later: int = -1
    stored_after_sweep: Stored | None = None
    reconnect: Answer | None = None
    answers_before_reconnect: list[Answer] = dataclasses.field(default_factory=list)
    reconnected_problems: list[str] = dataclasses.field(default_factory=list)
    workers_before: list[int] = dataclasses.field(default_factory=list)
    workers_after: list[int] = dataclasses.field(default_factory=list)


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    tmp = tmp_path_factory.mktemp("db-crash")
    database = PinnedDatabase(tmp / "db")
    database.start()
    try:
        env = launcher_env(database)
        with Launcher(tmp / "var", env) as server:
            yield _run(database, server, env, tmp)
    finally:
        database.stop()


def _run(database: PinnedDatabase, server: Launcher, env: dict[str, str], tmp: Path) -> Observed:
    alice = Client(server.port, "alice")
    payload = os.urandom(2 * MiB + 12345)
    answer = alice.upload(payload)
    assert answer.status == 201, answer.text
    seen = Observed(early=Acknowledged(alice, answer.text, payload))
    seen.workers_before = server.workers()

    upload = SlowUpload(server.port, alice.token, os.urandom(6 * MiB), pause_after=3 * MiB).start()

    def pending_with_chunks() -> bool:
        stored = Stored.read(database)
        return any(stored.chunks.get(i, 0) >= 2 for i in stored.pending())

    wait_until(pending_with_chunks, 15, "the slow upload's pending record and first chunks")
    seen.stored_before_kill = Stored.read(database)
    database.kill()
    seen.outcome = upload.finish()

    seen.healthz_while_down = call(server.port, "GET", "/healthz", timeout=10)
    seen.files_while_down = alice.get("/files", timeout=30)
    seen.readyz_while_down = call(server.port, "GET", "/readyz", timeout=30)

    database.start()  # same port, same data dir
    seen.stored_after_restart = stored = Stored.read(database)
    for file_id in stored.pending():
        seen.leaked_answers[file_id] = (
            alice.get(f"/files/{file_id}").status,
            alice.get(f"/files/{file_id}/key").status,
        )
    seen.listed_after_restart = alice.listed()
    seen.early_problems = check_acknowledged([seen.early])

    # A new instance starting now sweeps too, but the leftover's heartbeat is fresh: it stays.
    app = create_app(settings_of(env))
    services_of(app).storage.close()
    seen.swept_at_start_up = Stored.read(database)
    seen.swept_later = sweep_later(settings_of(env))
    seen.stored_after_sweep = Stored.read(database)

    payload = os.urandom(MiB + 77)
    seen.reconnect, seen.answers_before_reconnect = upload_until_ok(alice, payload, 30)
    seen.reconnected_problems = check_acknowledged(
        [Acknowledged(alice, seen.reconnect.text, payload)]
    )
    seen.workers_after = server.workers()
    return seen


def test_client_gets_an_error_never_a_success(observed: Observed) -> None:
    outcome = observed.outcome
    assert outcome, "the upload thread recorded nothing"
    if outcome[0] == "error":  # the connection broke while the body was streaming: acceptable
        return
    _, status, headers, body = outcome
    assert not 200 <= status < 300, f"a failed upload was acknowledged: {status} {body!r}"
    assert status == 503, (status, body)
    assert has_retry_after(headers), headers
    assert is_short_plain_message(headers, body), body


def test_while_down_db_routes_answer_503_and_healthz_answers(observed: Observed) -> None:
    healthz = observed.healthz_while_down
    assert healthz is not None and healthz.status == 200 and healthz.seconds < 1
    for answer in (observed.files_while_down, observed.readyz_while_down):
        assert answer is not None and answer.status == 503, answer
        assert has_retry_after(answer.headers), answer.headers
        assert is_short_plain_message(answer.headers, answer.body), answer.body


def test_nothing_partial_is_ever_served(observed: Observed) -> None:
    before, after = observed.stored_before_kill, observed.stored_after_restart
    assert before is not None and after is not None
    # The interrupted upload reached the database before the kill ...
    assert before.pending(), before
    # ... and what is left of it is pending only: no GridFS entry, never listed, never served.
    for file_id in after.pending():
        assert file_id not in after.gridfs
        assert observed.leaked_answers[file_id] == (404, 404)
    assert observed.listed_after_restart == {observed.early.file_id}


def test_files_acknowledged_earlier_still_decrypt(observed: Observed) -> None:
    assert observed.early_problems == []


def test_sweep_removes_the_leftovers(observed: Observed) -> None:
    after_restart = observed.stored_after_restart
    assert after_restart is not None
    if observed.outcome[0] == "answer":
        # The server answered, so it had tried to discard the upload while the database was down:
        # the leftover is there for the sweep.
        assert after_restart.pending(), after_restart
    # A start-up sweep right now keeps the leftover (its heartbeat is fresh) ...
    assert observed.swept_at_start_up == after_restart
    # ... one after STALE_UPLOAD removes the record, its chunks and any GridFS entry.
    assert observed.swept_later == len(after_restart.pending())
    swept = observed.stored_after_sweep
    assert swept is not None
    assert swept.records == {observed.early.file_id: "complete"}
    assert set(swept.chunks) == {observed.early.file_id}
    assert swept.gridfs == {observed.early.file_id}


def test_app_reconnects_without_a_restart(observed: Observed) -> None:
    assert observed.reconnect is not None and observed.reconnect.status == 201
    for answer in observed.answers_before_reconnect:  # at most brief 503s while it reconnects
        assert answer.status == 503, (answer.status, answer.text)
    assert observed.reconnected_problems == []
    assert observed.workers_after == observed.workers_before, "the workers were restarted"
