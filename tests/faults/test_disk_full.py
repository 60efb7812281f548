"""The disk under the database fills up.

The database's data dir lives on a 128 MiB tmpfs mounted for this module (root only; skipped with the
reason otherwise); its log goes elsewhere, so that only the data competes for space. A filler file
leaves a few MiB free; uploads go on until one fails. Then the filler is deleted and uploads must
work again, on the same server, with nothing partial left behind. The tmpfs is always unmounted.

While the disk is full the earlier files stay listed; their keys and ciphertext are delivered only
when the access history can record the delivery (issue 12: nothing is delivered unrecorded), else
refused with a clean 503; once space is freed every acknowledged file decrypts again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cryptofiles.dev.harness import Launcher
from tests.support.database import PinnedDatabase, Stored, sweep_later
from tests.support.load import Acknowledged, check_acknowledged
from tests.support.loopback import (
    Answer,
    Client,
    has_retry_after,
    is_short_plain_message,
    upload_until_ok,
)
from tests.support.server import launcher_env, settings_of

pytestmark = pytest.mark.slow

MiB = 1 << 20
TMPFS_SIZE = "128m"  # room for an empty PostgreSQL cluster and its WAL reserve (~45 MB)
LEFT_FREE = 6 * MiB
UPLOAD = 4 * MiB
MAX_ATTEMPTS = 8  # 8 x 4 MiB can never fit in 6 MiB


@contextlib.contextmanager
def tmpfs(where: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    where.mkdir(parents=True, exist_ok=True)
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(where)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.strip()}")
    try:
        yield where
    finally:
        done = subprocess.run(["umount", str(where)], capture_output=True, timeout=30, check=False)
        if done.returncode != 0:  # something still holds it: detach it anyway
            subprocess.run(
                ["umount", "-l", str(where)], capture_output=True, timeout=30, check=False
            )


def free_bytes(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


@dataclasses.dataclass
class Observed:
    early: Acknowledged
    accepted_while_filling: list[Acknowledged] = dataclasses.field(default_factory=list)
    failures: list[Answer] = dataclasses.field(default_factory=list)
    listed_while_full: set[str] = dataclasses.field(default_factory=set)
    problems_while_full: list[str] = dataclasses.field(default_factory=list)
    after_freeing: Answer | None = None
    answers_before_recovery: list[Answer] = dataclasses.field(default_factory=list)
    problems_at_end: list[str] = dataclasses.field(default_factory=list)
    stored_at_end: Stored | None = None


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    tmp = tmp_path_factory.mktemp("disk-full")
    with tmpfs(tmp / "mnt") as mnt:
        database = PinnedDatabase(mnt / "db", log_dir=tmp / "db-log")
        database.start()
        try:
            env = launcher_env(database)
            with Launcher(tmp / "var", env) as server:
                yield _run(database, server, env, mnt)
        finally:
            database.stop()


def _run(database: PinnedDatabase, server: Launcher, env: dict[str, str], mnt: Path) -> Observed:
    alice = Client(server.port, "alice")
    payload = os.urandom(2 * MiB + 99)
    answer = alice.upload(payload)
    assert answer.status == 201, answer.text
    seen = Observed(early=Acknowledged(alice, answer.text, payload))

    filler = mnt / "filler"
    with open(filler, "wb") as out:
        block = b"\0" * MiB
        for _ in range(128):  # bounded: the tmpfs is 128 MiB
            room = free_bytes(mnt) - LEFT_FREE
            if room <= 0:
                break
            out.write(block[: min(len(block), room)])
            out.flush()
    for _ in range(MAX_ATTEMPTS):
        payload = os.urandom(UPLOAD)
        answer = alice.upload(payload, timeout=60)
        if answer.status == 201:
            seen.accepted_while_filling.append(Acknowledged(alice, answer.text, payload))
        else:
            seen.failures.append(answer)
            if len(seen.failures) >= 2:  # a second try on a full disk fails the same way
                break
    seen.listed_while_full = alice.listed()
    seen.problems_while_full = delivered_or_refused([seen.early, *seen.accepted_while_filling])

    filler.unlink()
    payload = os.urandom(UPLOAD)
    seen.after_freeing, seen.answers_before_recovery = upload_until_ok(alice, payload, 20)
    recovered = Acknowledged(alice, seen.after_freeing.text, payload)
    sweep_later(settings_of(env))  # whatever a failed upload could not discard on a full disk
    acknowledged = [seen.early, *seen.accepted_while_filling, recovered]
    seen.problems_at_end = check_acknowledged(acknowledged)
    seen.stored_at_end = Stored.read(database)
    return seen


def delivered_or_refused(files: list[Acknowledged]) -> list[str]:
    """Each key and ciphertext request while full: delivered (its content is checked once space
    is back), or refused cleanly because its access could not be recorded; the problems found."""
    problems = []
    for item in files:
        for path in (f"/files/{item.file_id}/key", f"/files/{item.file_id}"):
            answer = item.client.get(path)
            refused = answer.status == 503 and has_retry_after(answer.headers)
            if answer.status != 200 and not (
                refused and is_short_plain_message(answer.headers, answer.body)
            ):
                problems.append(f"{path}: {answer.status} {answer.text[:200]}")
    return problems


def test_uploading_past_the_space_fails_cleanly(observed: Observed) -> None:
    assert observed.failures, "no upload failed: the disk never filled"
    for answer in observed.failures:
        assert not 200 <= answer.status < 300
        assert is_short_plain_message(answer.headers, answer.body), answer.body


def test_a_full_disk_is_reported_as_such(observed: Observed) -> None:
    assert observed.failures
    for answer in observed.failures:
        assert answer.status in (503, 507), (answer.status, answer.text)
        assert answer.status == 507 or has_retry_after(answer.headers)
        assert answer.text.strip() != "Internal server error."


def test_earlier_files_are_intact(observed: Observed) -> None:
    assert observed.problems_while_full == []
    ids = {observed.early.file_id} | {a.file_id for a in observed.accepted_while_filling}
    assert observed.listed_while_full == ids  # and no failed upload is listed


def test_uploads_work_again_after_freeing_space(observed: Observed) -> None:
    assert observed.after_freeing is not None and observed.after_freeing.status == 201
    assert observed.problems_at_end == []


def test_failed_uploads_leave_nothing_behind(observed: Observed) -> None:
    stored = observed.stored_at_end
    assert stored is not None
    assert set(stored.records.values()) == {"complete"}
    assert set(stored.chunks) == set(stored.records) == set(stored.gridfs)
