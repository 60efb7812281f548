"""The bench's own server, bench/sink_app.py under the launcher's gunicorn options, and the facts of
the machine the bench runs on. The real server is ``cryptofiles.dev.harness.Launcher``, the one
harness the tests use too."""

from __future__ import annotations

import contextlib
import http.client
import os
import platform
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.client import request
from bench.common import BENCH, ROOT
from bench.sampling import descendants, status_meminfo
from cryptofiles.dev.database import die_with_parent, free_port


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
    if not args[-1].startswith("cryptofiles.web:"):
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
        # The engine the servers ran is what they say over the wire (session.database_engine,
        # "database" and "database_engines"); this is only the binary the launcher may start.
        "ferretdb_binary_version": version,
        "database": "see database_engines",
        "mongod_on_path": shutil.which("mongod"),
    }
