"""Tools for fault-injection tests: a database we can kill, pause and restart in place, the processes
of a running launcher, and a small HTTP client that never hangs.

Everything talks to loopback (HTTP) or the database's private Unix socket only, and every wait is
bounded in time.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import http.client
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pymongo

from cryptofiles.clock import utcnow
from cryptofiles.config import Settings
from cryptofiles.crypto import KeyRing
from cryptofiles.dev.database import LocalDatabase, free_port, make_private, socket_uri
from cryptofiles.files import STALE_UPLOAD
from cryptofiles.services import build_services

ROOT = Path(__file__).resolve().parents[2]
TOOLS = Path(os.environ.get("CRYPTOFILES_TOOLS_DIR", ROOT / "tools")).resolve()
DB_NAME = "cryptofiles"  # the launcher's default MONGODB_DB
TIMEOUT_MS = 1000  # MONGODB_TIMEOUT_MS for every app under test
PASSWORD = "password1"
MiB = 1 << 20


# -- a database that keeps its address -------------------------------------------------------------


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
        """kill -9, and collect the corpse."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)
        self.process = None
        self.pid_file.unlink(missing_ok=True)

    def pause(self) -> None:
        """SIGSTOP, and return once every thread of the server is stopped: kill() returns when the
        signal is sent, and a thread running on another CPU can still answer a moment after."""
        os.kill(self.pid, signal.SIGSTOP)
        wait_until(lambda: thread_states(self.pid) == {"T"}, 10, "the database to stop", 0.01)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGCONT)  # a paused server cannot stop
        super().stop()

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_file.read_text(errors="replace")[-2000:]
        return ""

    def client(self) -> pymongo.MongoClient[dict[str, Any]]:
        return pymongo.MongoClient(self.uri, serverSelectionTimeoutMS=10_000, tz_aware=True)


def wait_until(check: Callable[[], bool], seconds: float, what: str, step: float = 0.2) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(step)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}")


# -- what is stored --------------------------------------------------------------------------------


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


def launcher_env(database: PinnedDatabase, **extra: str) -> dict[str, str]:
    """Environment for ``tests.test_e2e.Server`` against our database, secrets known to the test."""
    return {
        "MONGODB_URI": database.uri,
        "MONGODB_TIMEOUT_MS": str(TIMEOUT_MS),
        "SECRET_KEY": secrets.token_urlsafe(32),
        "MASTER_KEYS": KeyRing.generate_entry("fault1"),
        "PASSWORD_HASH": "scrypt:16384:8:1",
        # Every client here is 127.0.0.1: keep the per-address limits out of the way.
        "RATE_LIMIT_REGISTRATION": "1000/hour",
        "RATE_LIMIT_LOGIN_ADDRESS": "1000/minute",
        "RATE_LIMIT_KEYS": "100000/minute",
        **extra,
    }


def settings_of(env: dict[str, str]) -> Settings:
    return Settings.from_mapping(env)


class Launcher:
    """``python -m cryptofiles.dev.serve`` (what ``make run`` runs) on a free port, like
    ``tests.test_e2e.Server``, but with every setting (workers, threads) ours to choose."""

    def __init__(self, var_dir: Path, env: dict[str, str]) -> None:
        self.var_dir = var_dir
        self.port = free_port()
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("MONGODB_", "SECRET_", "MASTER_", "WEB_"))
        }
        base.update(
            PORT=str(self.port),
            CRYPTOFILES_VAR_DIR=str(var_dir),
            CRYPTOFILES_TOOLS_DIR=str(TOOLS),
            PYTHONPATH=str(ROOT),
            WEB_WORKERS="2",
        )
        base.update(env)
        var_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = var_dir / "serve.log"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cryptofiles.dev.serve"],
                cwd=var_dir,  # no developer's .env is read
                env=base,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_until(self._ready, 60, "the launcher to answer /readyz")
        except BaseException:
            self.stop()
            raise

    def __enter__(self) -> Launcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def workers(self) -> list[int]:
        return sorted(gunicorn_workers(self.process.pid)[1])

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"launcher exited:\n{self.log()}")
        try:
            return call(self.port, "GET", "/readyz", timeout=2).status == 200
        except OSError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(40)
            except subprocess.TimeoutExpired:
                # gunicorn did not stop: take down the launcher's whole tree, children first.
                master = children(self.process.pid)
                for pid in [w for m in master for w in children(m)] + master:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                self.process.kill()
                self.process.wait(10)


# -- processes -------------------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(p) for p in (task / "children").read_text().split()]
    return found


def gunicorn_workers(launcher_pid: int) -> tuple[int, list[int]]:
    """(gunicorn master pid, its worker pids) under a launcher."""
    masters = children(launcher_pid)
    assert len(masters) == 1, f"expected one gunicorn master under the launcher, got {masters}"
    return masters[0], children(masters[0])


def _socket_inode(server_port: int, client_port: int) -> int | None:
    """The inode of the server side of the loopback connection client_port -> server_port."""
    want_local = f"0100007F:{server_port:04X}"
    want_remote = f"0100007F:{client_port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == want_local and fields[2] == want_remote:
            return int(fields[9])
    return None


def worker_serving(workers: list[int], server_port: int, client_port: int) -> int | None:
    """Which worker holds the accepted connection that ``client_port`` opened."""
    inode = _socket_inode(server_port, client_port)
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in workers:
        for fd in Path(f"/proc/{pid}/fd").glob("*"):
            with contextlib.suppress(OSError):
                if os.readlink(fd) == target:
                    return pid
    return None


def thread_states(pid: int) -> set[str]:
    """The scheduler states (R, S, T, ...) of every thread of ``pid``, from /proc."""
    states = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            states.add((task / "stat").read_text().rpartition(")")[2].split()[0])
    return states


def is_gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.split(") ", 1)[1].startswith("Z")


# -- HTTP ------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


def call(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> Answer:
    """One request on a fresh connection; OSError (refused, reset, timeout) propagates."""
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        return Answer(
            response.status,
            {k.lower(): v for k, v in response.getheaders()},
            data,
            time.monotonic() - started,
        )
    finally:
        conn.close()


class Client:
    """A user of the server under test."""

    def __init__(self, port: int, name: str, password: str = PASSWORD) -> None:
        self.port = port
        self.name = name
        answer = call(port, "POST", "/registration", None, self._cred("New_", password))
        assert answer.status == 201, answer.text
        answer = call(port, "GET", "/login", None, self._cred("", password))
        assert answer.status == 200, answer.text
        self.token = answer.text

    def _cred(self, prefix: str, password: str) -> dict[str, str]:
        return {f"{prefix}User_Name": self.name, f"{prefix}User_Password": password}

    @property
    def auth(self) -> dict[str, str]:
        return {"x-access-tokens": self.token}

    def upload(self, payload: bytes, timeout: float = 30) -> Answer:
        return call(self.port, "POST", "/upload", payload, self.auth, timeout)

    def get(self, path: str, timeout: float = 30) -> Answer:
        return call(self.port, "GET", path, None, self.auth, timeout)

    def key(self, file_id: str) -> bytes:
        answer = self.get(f"/files/{file_id}/key")
        assert answer.status == 200, answer.text
        return base64.b64decode(answer.body)

    def ciphertext(self, file_id: str) -> bytes:
        answer = self.get(f"/files/{file_id}")
        assert answer.status == 200, (file_id, answer.status, answer.text)
        assert len(answer.body) == int(answer.headers["content-length"])
        return answer.body

    def listed(self) -> set[str]:
        answer = self.get("/files?limit=1000")
        assert answer.status == 200, answer.text
        return {f["id"] for f in json.loads(answer.body)["files"]}


def upload_until_ok(client: Client, payload: bytes, seconds: float) -> tuple[Answer, list[Answer]]:
    """Upload until a 201 (bounded in time); returns it and the answers before it."""
    before: list[Answer] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            answer = client.upload(payload, timeout=10)
        except OSError:
            time.sleep(0.3)
            continue
        if answer.status == 201:
            return answer, before
        before.append(answer)
        time.sleep(0.3)
    raise AssertionError(f"no successful upload within {seconds} s; answers: {before[-5:]}")


class SlowUpload:
    """A raw HTTP upload sent in pieces from a thread, so that a fault can strike mid-body.

    The body goes out in ``piece``-sized writes. After ``pause_after`` bytes the sender stops until
    ``go_on`` is set (or its own deadline passes), then sends the rest. ``outcome`` ends up as
    ``("answer", status, headers, body)`` or ``("error", exception name)``.
    """

    def __init__(
        self,
        port: int,
        token: str,
        payload: bytes,
        *,
        pause_after: int,
        piece: int = 256 * 1024,
        chunked: bool = False,
    ) -> None:
        self.port = port
        self.token = token
        self.payload = payload
        self.pause_after = pause_after
        self.piece = piece
        self.chunked = chunked
        self.paused = threading.Event()
        self.go_on = threading.Event()
        self.outcome: tuple[Any, ...] = ()
        self.client_port = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> SlowUpload:
        self.thread.start()
        assert self.paused.wait(30), f"the upload never reached its pause: {self.outcome}"
        return self

    def finish(self, seconds: float = 60) -> tuple[Any, ...]:
        self.go_on.set()
        self.thread.join(seconds)
        assert not self.thread.is_alive(), "the upload did not end"
        return self.outcome

    def _frame(self, data: bytes) -> bytes:
        return f"{len(data):x}\r\n".encode() + data + b"\r\n" if self.chunked else data

    def _run(self) -> None:
        try:
            self.outcome = self._send()
        except OSError as exc:
            self.outcome = ("error", type(exc).__name__)
        finally:
            self.paused.set()

    def _send(self) -> tuple[Any, ...]:
        framing = (
            "Transfer-Encoding: chunked" if self.chunked else f"Content-Length: {len(self.payload)}"
        )
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock:
            self.client_port = sock.getsockname()[1]
            sock.sendall(
                f"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nx-access-tokens: {self.token}\r\n"
                f"{framing}\r\n\r\n".encode()
            )
            sent = 0
            while sent < len(self.payload):
                if sent >= self.pause_after and not self.paused.is_set():
                    self.paused.set()
                    self.go_on.wait(60)
                    time.sleep(0.05)
                piece = self.payload[sent : sent + self.piece]
                sock.sendall(self._frame(piece))
                sent += len(piece)
            if self.chunked:
                sock.sendall(b"0\r\n\r\n")
            response = http.client.HTTPResponse(sock)
            try:
                response.begin()
                headers = {k.lower(): v for k, v in response.getheaders()}
                return ("answer", response.status, headers, response.read())
            finally:
                response.close()


# -- load ------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Outcome:
    kind: str  # "upload", "key" or "healthz"
    started: float
    ended: float
    status: int | None  # None: a connection-level error
    headers: dict[str, str]
    body: bytes
    error: str = ""

    @property
    def seconds(self) -> float:
        return self.ended - self.started


@dataclasses.dataclass
class Acknowledged:
    client: Client
    file_id: str
    payload: bytes


class Load:
    """A few client threads doing small uploads and key fetches, and a /healthz prober.

    Bounded: every thread stops at ``stop()``, after ``max_requests`` each, or ``max_seconds`` after
    the start, whichever comes first; every request has a client timeout.
    """

    def __init__(
        self,
        clients: list[Client],
        *,
        max_requests: int = 400,
        max_seconds: float = 60,
        request_timeout: float = 30,
    ) -> None:
        self.clients = clients
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.request_timeout = request_timeout
        self.outcomes: list[Outcome] = []
        self.acknowledged: list[Acknowledged] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._user, args=(c, i), daemon=True)
            for i, c in enumerate(clients)
        ] + [threading.Thread(target=self._prober, args=(clients[0].port,), daemon=True)]
        self._deadline = 0.0

    def __enter__(self) -> Load:
        self._deadline = time.monotonic() + self.max_seconds
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.request_timeout + 5)
        assert not any(t.is_alive() for t in self._threads), "a load thread did not end"

    def _running(self, n: int) -> bool:
        return (
            not self._stop.is_set() and n < self.max_requests and time.monotonic() < self._deadline
        )

    def _record(self, kind: str, started: float, answer: Answer | None, error: str = "") -> Outcome:
        outcome = Outcome(
            kind,
            started,
            time.monotonic(),
            answer.status if answer else None,
            answer.headers if answer else {},
            answer.body[:500] if answer else b"",
            error,
        )
        with self._lock:
            self.outcomes.append(outcome)
        return outcome

    def _timed(self, kind: str, request: Callable[[], Answer]) -> tuple[Outcome, Answer | None]:
        started = time.monotonic()
        try:
            answer = request()
        except OSError as exc:
            return self._record(kind, started, None, type(exc).__name__), None
        return self._record(kind, started, answer), answer

    def _user(self, client: Client, index: int) -> None:
        mine: list[str] = []
        n = 0
        while self._running(n):
            n += 1
            # Small files: the point is many requests, and every one is checked afterwards.
            payload = os.urandom(1 + (n * 7919 + index * 104729) % 4096)
            _, answer = self._timed(
                "upload", lambda p=payload: client.upload(p, timeout=self.request_timeout)
            )
            if answer is not None and answer.status == 201:
                mine.append(answer.text)
                with self._lock:
                    self.acknowledged.append(Acknowledged(client, answer.text, payload))
            if mine:
                file_id = mine[n % len(mine)]
                self._timed(
                    "key",
                    lambda f=file_id: client.get(f"/files/{f}/key", timeout=self.request_timeout),
                )
            time.sleep(0.05)

    def _prober(self, port: int) -> None:
        n = 0
        while self._running(n):
            n += 1
            self._timed("healthz", lambda: call(port, "GET", "/healthz", timeout=10))
            time.sleep(0.2)

    def between(self, start: float, end: float, kind: str | None = None) -> list[Outcome]:
        """Outcomes of requests that started at or after ``start`` and ended by ``end``."""
        with self._lock:
            return [
                o
                for o in self.outcomes
                if o.started >= start and o.ended <= end and (kind is None or o.kind == kind)
            ]

    def snapshot(self) -> list[Outcome]:
        with self._lock:
            return list(self.outcomes)


def check_acknowledged(files: list[Acknowledged]) -> list[str]:
    """Download and Tink-decrypt every acknowledged upload; the problems found (none: [])."""
    from cryptofiles.dev.tink_oracle import TinkError, tink_decrypt

    problems = []
    for item in files:
        try:
            ciphertext = item.client.ciphertext(item.file_id)
            if tink_decrypt(item.client.key(item.file_id), ciphertext) != item.payload:
                problems.append(f"{item.file_id}: decrypts to other content")
        except (AssertionError, OSError, TinkError) as exc:
            problems.append(f"{item.file_id}: {type(exc).__name__}: {exc}")
    return problems


def is_short_plain_message(answer_headers: dict[str, str], body: bytes) -> bool:
    """A one-line plain-text message: no traceback, no HTML, no internals."""
    text = body.decode(errors="replace")
    return (
        answer_headers.get("content-type", "").startswith("text/plain")
        and 0 < len(body) <= 200
        and text.count("\n") <= 1
        and "Traceback" not in text
        and "<" not in text
    )


def has_retry_after(headers: dict[str, str]) -> bool:
    value = headers.get("retry-after", "")
    return value.isdigit() and 0 < int(value) <= 3600
