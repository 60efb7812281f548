"""The real server, started as ``make run`` starts it, for programs that drive it: the tests and the bench.

``Launcher`` runs ``python -m cryptofiles.dev.serve`` (secrets file, its own database unless the
caller gives ``MONGODB_URI``, gunicorn) on a free loopback port, with its var/ folder where the
caller says, waits until ``/readyz`` answers 200, and stops it the way Ctrl-C does. The end-to-end
and fault tests (through ``tests/support/server.py``) and the bench (``bench/session.py``) all use
this one class, so that what they measure and check is the server users get.

It lives in the package, beside the launcher it drives, because the bench must not import the test
package and the tests should not import the bench. It needs neither an HTTP client library nor a
database driver: callers bring their own.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from cryptofiles.dev.database import die_with_parent, free_port

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Settings the server must not inherit from whoever runs the tests or the bench: a developer's own
# database, secrets and capacity would make runs differ from machine to machine. Callers pass these.
NOT_INHERITED = ("MONGODB_", "SECRET_", "MASTER_", "WEB_")
READY_SECONDS = (
    60  # a first start on a busy machine: generate secrets, start FerretDB, fork workers
)
STOP_SECONDS = 45  # above gunicorn's --graceful-timeout (30 s) plus the database's stop
LOGGED_DATABASE = re.compile(r"Started a local database at (mongodb://\S+)")


class LauncherError(RuntimeError):
    """The launcher exited or did not become ready; the message carries the end of its log."""


def project_tools() -> Path:
    """The tools/ folder (FerretDB) the server should use: ``CRYPTOFILES_TOOLS_DIR`` or the
    project's own. Absolute, because the launcher runs in its var/ folder."""
    return Path(os.environ.get("CRYPTOFILES_TOOLS_DIR", PROJECT_ROOT / "tools")).resolve()


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (from /proc, every thread's list)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(p) for p in (task / "children").read_text().split()]
    return found


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, parents before their children."""
    found = children(pid)
    for child in list(found):
        found += descendants(child)
    return found


class Launcher:
    """``python -m cryptofiles.dev.serve`` on a free port; ready when constructed.

    ``env`` is laid over the caller's environment without its ``NOT_INHERITED`` settings. The
    launcher runs in ``var_dir`` (so no developer's .env is read), in a session of its own (the
    caller's Ctrl-C reaches the caller, which stops it in order), and dies with the thread that
    started it (PR_SET_PDEATHSIG), so a crashed test run or bench leaves no server behind.
    """

    def __init__(
        self,
        var_dir: Path,
        env: Mapping[str, str] | None = None,
        *,
        ready_seconds: float = READY_SECONDS,
    ) -> None:
        self.var_dir = var_dir
        self.port = free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(NOT_INHERITED)}
        self.env.update(
            PORT=str(self.port),
            CRYPTOFILES_VAR_DIR=str(var_dir),
            CRYPTOFILES_TOOLS_DIR=str(project_tools()),
            PYTHONPATH=str(PROJECT_ROOT),  # the bench's sink app and the tests import from here
            **(env or {}),
        )
        self.log_path = var_dir / "serve.log"
        self.db_pid: int | None = None
        var_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:  # appended to across restarts on one var dir
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cryptofiles.dev.serve"],
                cwd=var_dir, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=die_with_parent,
            )  # fmt: skip
        try:
            self._wait_ready(ready_seconds)
        except BaseException:
            self.stop()
            raise

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _wait_ready(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.check_alive()
            if self._answers_ready():
                with contextlib.suppress(OSError, ValueError):  # none when MONGODB_URI was given
                    self.db_pid = int((self.var_dir / "db" / "server.pid").read_text())
                return
            time.sleep(0.2)
        raise LauncherError(f"the server was not ready after {seconds:.0f} s:\n{self.log_tail()}")

    def _answers_ready(self) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
        try:
            conn.request("GET", "/readyz")
            return conn.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise LauncherError(
                f"the launcher exited with {self.process.returncode}:\n{self.log_tail()}"
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self) -> str:
        return self.log()[-3000:]

    def database_uri(self) -> str | None:
        """The URI of the database the launcher started, from its log (None if it started none).
        The log is appended to across restarts, each on a new socket: the last start is current."""
        found = LOGGED_DATABASE.findall(self.log())
        return str(found[-1]) if found else None

    def gunicorn_master(self) -> int:
        # Told apart by command line: the launcher's other children are the database's processes
        # (FerretDB, and a PostgreSQL postmaster when it runs one), however many there are.
        masters = [pid for pid in children(self.process.pid) if "gunicorn" in _cmdline(pid)]
        if len(masters) != 1:
            raise LauncherError(f"expected one gunicorn master under the launcher, got {masters}")
        return masters[0]

    def workers(self) -> list[int]:
        """The gunicorn workers' pids, sorted."""
        return sorted(children(self.gunicorn_master()))

    def server_pids(self) -> list[int]:
        """gunicorn master and workers: what serves requests, without the database."""
        master = self.gunicorn_master()
        return [master, *descendants(master)]

    def db_pids(self) -> list[int]:
        """Every process of the launcher's database (FerretDB, PostgreSQL and its backends)."""
        below = descendants(self.process.pid)
        served = set(self.server_pids()) if any("gunicorn" in _cmdline(p) for p in below) else set()
        return [pid for pid in below if pid not in served and Path(f"/proc/{pid}").exists()]

    def stop(self, seconds: float = STOP_SECONDS) -> None:
        """SIGTERM, as Ctrl-C on ``make run`` does: the launcher stops gunicorn, then its database.
        One that does not stop in ``seconds`` is killed with everything below it."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(seconds)
        except subprocess.TimeoutExpired:
            for pid in [*reversed(descendants(self.process.pid)), self.process.pid]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.process.wait(10)

    def __enter__(self) -> Launcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
