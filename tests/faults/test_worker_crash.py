"""A gunicorn worker is killed (SIGKILL) while it streams an upload into the database.

One scenario for the module, then checked point by point: a launcher with two workers; alice's
first file is stored; a second upload streams slowly, and once its pending record and first chunks
are stored, the very worker holding that connection (found through /proc) is killed. gunicorn
starts a replacement; nothing of the interrupted upload is ever visible, and a sweep run after
STALE_UPLOAD removes its record and chunks.
"""

from __future__ import annotations

import dataclasses
import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from cryptofiles.dev.harness import Launcher
from cryptofiles.web import create_app, services_of
from tests.support.database import PinnedDatabase, Stored, sweep_later
from tests.support.load import Acknowledged, check_acknowledged
from tests.support.loopback import Answer, Client, SlowUpload
from tests.support.processes import is_gone, wait_until, worker_serving
from tests.support.server import launcher_env, settings_of

MiB = 1 << 20


@dataclasses.dataclass
class Observed:
    early: Acknowledged
    workers_before: list[int] = dataclasses.field(default_factory=list)
    killed: int = 0
    outcome: tuple[Any, ...] = ()
    workers_after: list[int] = dataclasses.field(default_factory=list)
    stored_after_kill: Stored | None = None
    leaked_answers: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)
    listed: set[str] = dataclasses.field(default_factory=set)
    kept_by_start_up_sweep: Stored | None = None
    swept_later: int = -1
    stored_after_sweep: Stored | None = None
    next_upload: Answer | None = None
    problems: list[str] = dataclasses.field(default_factory=list)


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    tmp = tmp_path_factory.mktemp("worker-crash")
    database = PinnedDatabase(tmp / "db")
    database.start()
    try:
        env = launcher_env(database, WEB_WORKERS="2")
        with Launcher(tmp / "var", env) as server:
            yield _run(database, server, env)
    finally:
        database.stop()


def _run(database: PinnedDatabase, server: Launcher, env: dict[str, str]) -> Observed:
    alice = Client(server.port, "alice")
    payload = os.urandom(MiB + 4321)
    answer = alice.upload(payload)
    assert answer.status == 201, answer.text
    seen = Observed(early=Acknowledged(alice, answer.text, payload))
    seen.workers_before = server.workers()
    assert len(seen.workers_before) == 2, seen.workers_before

    upload = SlowUpload(server.port, alice.token, os.urandom(6 * MiB), pause_after=3 * MiB).start()

    def pending_with_chunks() -> bool:
        stored = Stored.read(database)
        return any(stored.chunks.get(i, 0) >= 2 for i in stored.pending())

    wait_until(pending_with_chunks, 15, "the slow upload's pending record and first chunks")
    worker = worker_serving(seen.workers_before, server.port, upload.client_port)
    assert worker is not None, "no worker holds the upload's connection"
    seen.killed = worker
    os.kill(worker, signal.SIGKILL)
    wait_until(lambda: is_gone(worker), 10, "the killed worker to die")
    seen.outcome = upload.finish()

    def replaced() -> bool:
        workers = server.workers()
        return len(workers) == 2 and worker not in workers

    wait_until(replaced, 30, "gunicorn to replace the killed worker")
    seen.workers_after = server.workers()

    seen.stored_after_kill = stored = Stored.read(database)
    for file_id in stored.pending():
        seen.leaked_answers[file_id] = (
            alice.get(f"/files/{file_id}").status,
            alice.get(f"/files/{file_id}/key").status,
        )
    seen.listed = alice.listed()

    app = create_app(settings_of(env))  # an instance starting now: the leftover is fresh
    services_of(app).storage.close()
    seen.kept_by_start_up_sweep = Stored.read(database)
    seen.swept_later = sweep_later(settings_of(env))
    seen.stored_after_sweep = Stored.read(database)

    payload = os.urandom(2 * MiB)
    seen.next_upload = alice.upload(payload)
    acknowledged = [seen.early]
    if seen.next_upload.status == 201:
        acknowledged.append(Acknowledged(alice, seen.next_upload.text, payload))
    seen.problems = check_acknowledged(acknowledged)
    return seen


def test_the_client_never_gets_a_success(observed: Observed) -> None:
    outcome = observed.outcome
    assert outcome, "the upload thread recorded nothing"
    if outcome[0] == "answer":
        _, status, _, body = outcome
        assert not 200 <= status < 300, f"an upload whose worker died was acknowledged: {body!r}"


def test_no_partial_file_is_visible(observed: Observed) -> None:
    stored = observed.stored_after_kill
    assert stored is not None
    assert len(stored.pending()) == 1, stored  # what the dead worker left behind
    (leftover,) = stored.pending()
    assert stored.chunks.get(leftover, 0) >= 2
    assert leftover not in stored.gridfs
    assert observed.leaked_answers[leftover] == (404, 404)
    assert observed.listed == {observed.early.file_id}


def test_leftovers_are_swept_after_stale_upload(observed: Observed) -> None:
    assert observed.kept_by_start_up_sweep == observed.stored_after_kill
    assert observed.swept_later == 1
    swept = observed.stored_after_sweep
    assert swept is not None
    assert swept.records == {observed.early.file_id: "complete"}
    assert set(swept.chunks) == {observed.early.file_id}
    assert swept.gridfs == {observed.early.file_id}


def test_service_goes_on_with_a_replacement_worker(observed: Observed) -> None:
    assert observed.killed not in observed.workers_after
    assert observed.next_upload is not None and observed.next_upload.status == 201
    assert observed.problems == []
