"""A local database that the fault tests kill, pause and restart in place, and what it stores.

"The database" is every process of it: with FerretDB on PostgreSQL, FerretDB (what the app talks
to) and the PostgreSQL cluster behind it (postmaster and backends). A fault hits them all at once,
as a crash or a frozen machine would: kill -9 kills every one (PostgreSQL then runs its crash
recovery at the restart), pause stops every one, resume and restart bring all back.

Everything talks to the database's private Unix socket only, and every wait is bounded in time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
from datetime import timedelta
from pathlib import Path
from typing import Any

import pymongo

from cryptofiles.clock import utcnow
from cryptofiles.config import Settings
from cryptofiles.dev.database import LocalDatabase, make_private, socket_uri
from cryptofiles.dev.harness import project_tools
from cryptofiles.files import STALE_UPLOAD
from cryptofiles.services import build_services
from tests.support.processes import thread_states, wait_until

TOOLS = project_tools()
DB_NAME = "cryptofiles"  # the launcher's default MONGODB_DB


class PinnedDatabase(LocalDatabase):
    """``LocalDatabase`` that can be killed, paused and restarted in place: its Unix socket (and so
    its URI) stays the same across restarts, as the app under test keeps the URI it was given.

    Start and restart it from the test's main thread only: the server gets PR_SET_PDEATHSIG, which
    fires when the *thread* that started it ends.
    """

    def __init__(self, data_dir: Path, *, log_dir: Path | None = None) -> None:
        super().__init__(data_dir, tools=TOOLS)
        self.uri = socket_uri(self.socket_path)
        self._log_dir = (log_dir or data_dir).resolve()

    @property
    def log_file(self) -> Path:  # outside the data dir when asked (the disk-full test)
        return self._log_dir / "server.log"

    def start(self) -> str:
        make_private(self._log_dir)
        uri = super().start()
        assert uri == self.uri, "a restart in place changed the address"
        return uri

    @property
    def pid(self) -> int:
        assert self.process is not None, "the database is not running"
        return self.process.pid

    def kill(self) -> None:
        """kill -9 every process of the database, and collect the corpses."""
        assert self.process is not None
        self.process.kill()
        if self.postgres is not None:
            self.postgres.kill()  # its postmaster and every backend, waited for
        self.process.wait(10)
        self.process = None
        self.pid_file.unlink(missing_ok=True)

    def pause(self) -> None:
        """SIGSTOP every process, and return once every thread of each is stopped: kill() returns
        when the signal is sent, and a thread running on another CPU can still answer a moment
        after. PostgreSQL's postmaster first, so that it starts no new backend meanwhile."""
        self.pid  # noqa: B018 - asserts that the database runs
        paused = []
        for _ in range(2):  # once more for any backend forked just before the postmaster stopped
            for pid in [p for p in self.pids() if p not in paused]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
                    paused.append(pid)
        wait_until(
            lambda: all(thread_states(p) <= {"T"} for p in paused), 10, "the database to stop", 0.01
        )

    def pids(self) -> list[int]:
        """PostgreSQL's postmaster, then its children, then FerretDB (the order pause needs)."""
        behind = self.postgres.pids() if self.postgres is not None else []
        running = self.process is not None and self.process.poll() is None
        return behind + ([self.pid] if running else [])

    def resume(self) -> None:
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def stop(self) -> None:
        self.resume()  # a paused server cannot stop
        super().stop()

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_file.read_text(errors="replace")[-2000:]
        return ""

    def client(self) -> pymongo.MongoClient[dict[str, Any]]:
        return pymongo.MongoClient(self.uri, serverSelectionTimeoutMS=10_000, tz_aware=True)


@dataclasses.dataclass(frozen=True)
class Stored:
    records: dict[str, str]  # file id -> status
    gridfs: frozenset[str]
    chunks: dict[str, int]  # file id -> chunk count

    @classmethod
    def read(cls, database: PinnedDatabase) -> Stored:
        with contextlib.closing(database.client()) as client:
            db = client[DB_NAME]
            records = {d["_id"]: d["status"] for d in db.files.find({}, {"status": 1})}
            gridfs = frozenset(d["_id"] for d in db["ciphertext.files"].find({}, {"_id": 1}))
            chunks: dict[str, int] = {}
            for d in db["ciphertext.chunks"].find({}, {"files_id": 1}):
                chunks[d["files_id"]] = chunks.get(d["files_id"], 0) + 1
        return cls(records, gridfs, chunks)

    def pending(self) -> set[str]:
        return {i for i, s in self.records.items() if s == "pending"}


def sweep_later(settings: Settings) -> int:
    """Sweep as an instance started after STALE_UPLOAD would; returns how many uploads it removed."""
    patient = dataclasses.replace(settings, mongodb_timeout_ms=10_000)  # the database may be waking
    later = build_services(patient, clock=lambda: utcnow() + STALE_UPLOAD + timedelta(seconds=1))
    try:
        return later.files.sweep().unfinished
    finally:
        later.close()
