"""Servers the bench starts and stops: the real launcher (``python -m cryptofiles.dev.serve``) on a free
port with its var/ folder in the bench's temp dir, and bench/sink_app.py under the launcher's
gunicorn options; plus the facts of the machine they run on."""

from __future__ import annotations

import contextlib
import http.client
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.client import request
from bench.common import BENCH, ROOT
from bench.sampling import cmdline, descendants, status_meminfo
from cryptofiles.dev.database import die_with_parent, free_port


class Launcher:
    """``python -m cryptofiles.dev.serve`` on a free port, var dir in a temp folder (as tests/test_e2e)."""

    def __init__(self, var_dir: Path, extra_env: dict[str, str]) -> None:
        self.var_dir = var_dir
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MONGODB_", "SECRET_"))}
        env.pop("MASTER_KEYS", None)
        env.update(
            PORT=str(self.port),
            CRYPTOFILES_VAR_DIR=str(var_dir),
            CRYPTOFILES_TOOLS_DIR=str(ROOT / "tools"),
            PYTHONPATH=str(ROOT),
            **extra_env,
        )
        self.env = env
        var_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = var_dir / "serve.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop())
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cryptofiles.dev.serve"],
            cwd=var_dir,  # no developer .env is read
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # our Ctrl-C reaches only us; we stop it in order
            preexec_fn=die_with_parent,
        )
        self.db_pid: int | None = None
        self.uri = ""

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            with contextlib.suppress(OSError, http.client.HTTPException):
                status, _ = request(self.port, "GET", "/readyz", timeout=2)
                if status == 200:
                    break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"server not ready after {timeout:.0f} s:\n{self.log_tail()}")
        match = re.search(r"Started a local database at (mongodb://\S+)", self.log_path.read_text())
        if not match:
            raise RuntimeError(f"the launcher logged no database URI:\n{self.log_tail()}")
        self.uri = match.group(1)
        with contextlib.suppress(OSError, ValueError):
            self.db_pid = int((self.var_dir / "db" / "server.pid").read_text())

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(
                f"the launcher exited with {self.process.returncode}:\n{self.log_tail()}"
            )

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def server_pids(self) -> list[int]:
        """gunicorn master + workers: the launcher's descendants except the database."""
        return [p for p in descendants(self.process.pid) if p != self.db_pid and not _is_db(p)]

    def db_pids(self) -> list[int]:
        return [self.db_pid] if self.db_pid and Path(f"/proc/{self.db_pid}").exists() else []

    def stop(self) -> None:
        db_pid = self.db_pid
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # the launcher stops gunicorn, then the db
            try:
                self.process.wait(45)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    # gunicorn (its own process group) dies with the launcher: PR_SET_PDEATHSIG
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        # The database runs in a session of its own; it is ours (its data dir is our temp dir).
        if db_pid and str(self.var_dir).encode() in cmdline(db_pid).encode():
            with contextlib.suppress(ProcessLookupError):
                os.kill(db_pid, signal.SIGTERM)
        self._log.close()


def _is_db(pid: int) -> bool:
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return False
    return Path(exe).name.startswith(("ferretdb", "mongod"))


class SinkServer:
    """bench/sink_app.py under gunicorn with the launcher's gunicorn options."""

    def __init__(self, log_path: Path, server_env: dict[str, str]) -> None:
        self.port = free_port()
        self.args = sink_gunicorn_args(self.port, server_env)
        self._log = open(log_path, "ab")  # noqa: SIM115 (closed in stop())
        self.log_path = log_path
        self.process = subprocess.Popen(
            self.args,
            cwd=BENCH,
            env={**os.environ, "PYTHONPATH": str(ROOT)},  # the bench package
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sink server exited:\n{log_path.read_text()[-2000:]}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                if request(self.port, "GET", "/healthz", timeout=2)[0] == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError("sink server not ready")

    def pids(self) -> list[int]:
        return [self.process.pid, *descendants(self.process.pid)]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()


def sink_gunicorn_args(port: int, server_env: dict[str, str]) -> list[str]:
    """The launcher's own gunicorn command (cryptofiles.dev.serve.gunicorn_command), app swapped."""
    from cryptofiles.config import Settings
    from cryptofiles.crypto import KeyRing
    from cryptofiles.dev.serve import gunicorn_command

    env = {**os.environ, **server_env}
    settings = Settings(
        secret_key="x" * 48,
        master_keys=KeyRing.parse(KeyRing.generate_entry("bench")),
        mongodb_uri="mongodb://127.0.0.1:1/",
        port=port,
        web_workers=int(env.get("WEB_WORKERS", Settings.web_workers)),
        web_connections=int(env.get("WEB_CONNECTIONS", Settings.web_connections)),
    )
    args = gunicorn_command(settings)
    if not args[-1].startswith("cryptofiles.app:"):
        raise RuntimeError(f"unexpected gunicorn command (last argument {args[-1]!r})")
    return [*args[:-1], "bench.sink_app:app"]


def default_setting(field: str) -> str:
    """The service's default for a setting (cryptofiles.config.Settings), as text."""
    from cryptofiles.config import Settings

    return str(getattr(Settings, field))


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def machine_info() -> dict[str, Any]:
    mem_kib = status_meminfo("MemTotal")
    ferretdb = ROOT / "tools" / "ferretdb" / "bin" / "ferretdb"
    version = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            [str(ferretdb), "--version"], capture_output=True, text=True, timeout=10
        )
        version = out.stdout.split()[1] if out.stdout.startswith("version:") else out.stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "database": f"FerretDB {version} (SQLite backend)" if version else "see server.database",
        "mongod_on_path": shutil.which("mongod"),
    }
