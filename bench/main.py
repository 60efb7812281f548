"""Benchmarks of crypto-files-server against its own database (`make bench`).

Starts the real server exactly as `make run` does (``python -m cryptofiles.serve``: generated secrets,
its own FerretDB/mongod, gunicorn with the production options) on a free port with its var/ folder in
a temp dir, measures, prints a table and writes ``bench/results/latest.json``: a list of rows
``{"name", "value", "unit", "baseline", "ratio", ...}``. Every baseline is measured in the same run,
against the same database (pymongo connected to the URI the launcher logs), interleaved with our own
measurement so that drift (a growing SQLite file, other load on the machine) hits both alike.

    .venv/bin/python bench/run.py              # the full run (under ~10 minutes on 2 cores)
    .venv/bin/python bench/run.py --quick      # small sizes: a smoke run in about a minute
    .venv/bin/python bench/run.py --only small_upload_4KiB_c16,key_fetch_c16 \
        --server-env WEB_WORKERS=4 --out /tmp/w4.json   # one experiment

Details that do not fit the table (CPU seconds per process group, sampler statistics, controls)
go to ``bench/results/latest-run.json`` (``--quick``: ``latest-quick*.json``). See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import http.client
import io
import itertools
import json
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gridfs
import pymongo
from pymongo.errors import ProtocolError

from cryptofiles import crypto
from cryptofiles.devdb import die_with_parent, free_port

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"

MiB = 1 << 20
GiB = 1 << 30
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
DB_NAME = "cryptofiles"  # the launcher's default MONGODB_DB (we strip MONGODB_* from its env)
PASSWORD = "bench-password-1"  # noqa: S105 (a throwaway account in a temp database)
CONCURRENCY = 16
SMALL_FILE = 4 * 1024
SAMPLE_INTERVAL = 0.05
HTTP_TIMEOUT = 900  # seconds; a 1 GiB download at FerretDB speed takes about a minute
PHASE_TIME_BOUND = 180  # seconds: a concurrent phase stops early (and says so) past this


@dataclasses.dataclass
class Sizes:
    small: int  # "64MiB" rows
    large: int  # "512MiB" rows
    huge: int  # "1GiB" RSS rows
    encrypt: int  # encrypt_only
    small_uploads: int  # small_upload_4KiB_c16 (total over all clients)
    key_fetches: int  # key_fetch_c16 (total)
    reps_small: int  # repetitions (ours and baseline, interleaved) of the 64 MiB transfers
    reps_large: int
    warmup: int  # the warm-up file before the idle RSS


FULL = Sizes(64 * MiB, 512 * MiB, GiB, 256 * MiB, 800, 800, 3, 1, 8 * MiB)
QUICK = Sizes(8 * MiB, 32 * MiB, 128 * MiB, 32 * MiB, 160, 320, 1, 1, 4 * MiB)


# --------------------------------------------------------------------------------- rows, table


@dataclasses.dataclass
class Goal:
    on: str  # "ratio" or "value"
    op: str  # ">=" or "<="
    limit: float

    def __str__(self) -> str:
        return f"{self.on} {self.op} {self.limit:g}" + (" MiB" if self.on == "value" else "")

    def met(self, row: Row) -> bool | None:
        x = row.ratio if self.on == "ratio" else row.value
        if x is None:
            return None
        return x >= self.limit if self.op == ">=" else x <= self.limit


@dataclasses.dataclass
class Row:
    name: str
    value: float | None
    unit: str
    baseline: float | None = None
    baseline_label: str = ""
    goal: Goal | None = None
    note: str = ""
    details: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.baseline:
            return None
        return self.value / self.baseline

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": _round(self.value),
            "unit": self.unit,
            "baseline": _round(self.baseline),
            "ratio": _round(self.ratio, 3),
            "goal": str(self.goal) if self.goal else None,
            "met": self.goal.met(self) if self.goal else None,
            "baseline_label": self.baseline_label or None,
            "note": self.note or None,
            "details": self.details,
        }


def _round(x: float | None, digits: int = 2) -> float | None:
    return None if x is None else round(x, digits)


def _fmt(x: float | None, digits: int = 1) -> str:
    return "null" if x is None else f"{x:.{digits}f}"


def print_table(rows: list[Row], out: Any = sys.stdout) -> None:
    header = ["name", "value", "unit", "baseline", "ratio", "goal", "met?"]
    lines = []
    for r in rows:
        met = r.goal.met(r) if r.goal else None
        lines.append([
            r.name, _fmt(r.value), r.unit, _fmt(r.baseline), _fmt(r.ratio, 2),
            str(r.goal) if r.goal else "report", {True: "yes", False: "NO", None: "-"}[met],
        ])  # fmt: skip
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)), file=out)
    print("-|-".join("-" * w for w in widths), file=out)
    for line in lines:
        print(" | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)), file=out)
    notes = [r for r in rows if r.note or r.baseline_label]
    if notes:
        print(file=out)
    for r in notes:
        if r.baseline_label:
            print(f"- {r.name}: baseline = {r.baseline_label}", file=out)
        if r.note:
            print(f"- {r.name}: {r.note}", file=out)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ /proc helpers


def _stat_fields(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw[raw.rindex(")") + 2 :].split()  # fields from "state" (field 3) on


def process_table() -> dict[int, int]:
    """{pid: ppid} of every process."""
    table = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                table[int(entry.name)] = int(_stat_fields(int(entry.name))[1])
    return table


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, ppid in process_table().items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def status_kib(pid: int, field: str) -> int:
    """A ``Vm*`` field of /proc/<pid>/status in KiB; 0 once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = _stat_fields(pid)
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK_TCK


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def reset_hwm(pids: list[int]) -> bool:
    """Reset the processes' peak-RSS counters (VmHWM), for a cross-check of the sampler."""
    ok = True
    for pid in pids:
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5")
        except OSError:
            ok = False
    return ok


class RssSampler:
    """Samples the summed VmRSS of process groups every ~50 ms in a thread."""

    def __init__(self, groups: dict[str, Callable[[], list[int]]]) -> None:
        self.groups = groups
        self.samples: dict[str, list[tuple[float, int]]] = {g: [] for g in groups}
        self.per_pid_peak: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.pids_seen: dict[str, set[int]] = {g: set() for g in groups}

    def sample_once(self) -> dict[str, int]:
        now = time.monotonic()
        totals = {}
        for group, pids_of in self.groups.items():
            total = 0
            for pid in pids_of():
                kib = status_kib(pid, "VmRSS")
                total += kib
                self.pids_seen[group].add(pid)
                self.per_pid_peak[pid] = max(self.per_pid_peak.get(pid, 0), kib)
            self.samples[group].append((now, total))
            totals[group] = total
        return totals

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample_once()
            self._stop.wait(SAMPLE_INTERVAL)

    def __enter__(self) -> RssSampler:
        self.sample_once()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sample_once()

    def peak_mib(self, group: str) -> float:
        return max(kib for _, kib in self.samples[group]) / 1024

    def stats(self) -> dict[str, Any]:
        times = [t for t, _ in next(iter(self.samples.values()))]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        return {
            "samples": len(times),
            "mean_interval_ms": round(1000 * statistics.fmean(gaps), 1) if gaps else None,
            "max_interval_ms": round(1000 * max(gaps), 1) if gaps else None,
        }


def idle_mib(groups: dict[str, Callable[[], list[int]]], seconds: float = 1.0) -> dict[str, float]:
    """Median summed RSS of each group over ``seconds`` of quiet."""
    sampler = RssSampler(groups)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        sampler.sample_once()
        time.sleep(SAMPLE_INTERVAL)
    return {g: statistics.median(k for _, k in s) / 1024 for g, s in sampler.samples.items()}


# --------------------------------------------------------------------------------- processes


class Launcher:
    """``python -m cryptofiles.serve`` on a free port, var dir in a temp folder (as tests/test_e2e)."""

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
            [sys.executable, "-m", "cryptofiles.serve"],
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
            env={**os.environ, "PYTHONPATH": f"{BENCH}{os.pathsep}{ROOT}"},
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
    """The launcher's own gunicorn command (cryptofiles.serve.gunicorn_command), app swapped."""
    from cryptofiles.config import Settings
    from cryptofiles.crypto import KeyRing
    from cryptofiles.serve import gunicorn_command

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
    return [*args[:-1], "sink_app:app"]


# -------------------------------------------------------------------------------- HTTP client


class LimitedReader(io.RawIOBase):
    """The first ``size`` bytes of a file, read in the caller's block size (never all at once)."""

    def __init__(self, path: Path, size: int) -> None:
        self._file = open(path, "rb")  # noqa: SIM115 (closed in close())
        self._left = size

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self._left if n < 0 else min(n, self._left)
        data = self._file.read(n)
        self._left -= len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._file.close()
        super().close()


def connection(port: int, timeout: float = HTTP_TIMEOUT) -> http.client.HTTPConnection:
    # blocksize: http.client reads a file body in blocks of this size (default 8 KiB).
    return http.client.HTTPConnection("127.0.0.1", port, timeout=timeout, blocksize=MiB)


def request(
    port: int, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
    timeout: float = 60,
) -> tuple[int, bytes]:  # fmt: skip
    conn = connection(port, timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def http_upload(port: int, path_: str, token: str | None, data: Path, size: int) -> dict[str, Any]:
    """POST ``size`` bytes of ``data`` with Content-Length, streamed from the file."""
    conn = connection(port)
    headers = {"Content-Length": str(size), "Content-Type": "application/octet-stream"}
    if token:
        headers["x-access-tokens"] = token
    with LimitedReader(data, size) as body:
        try:
            start = time.perf_counter()
            conn.request("POST", path_, body=body, headers=headers)
            response = conn.getresponse()
            answer = response.read()
            seconds = time.perf_counter() - start
        finally:
            conn.close()
    if response.status not in (200, 201):
        raise RuntimeError(f"POST {path_} answered {response.status}: {answer[:300]!r}")
    return {"bytes": size, "seconds": seconds, "answer": answer.decode().strip()}


def http_download(port: int, path_: str, token: str | None) -> dict[str, Any]:
    """GET ``path_`` and read the body to nowhere, 1 MiB at a time; status != 200 → ``status``."""
    conn = connection(port)
    headers = {"x-access-tokens": token} if token else {}
    buffer = bytearray(MiB)
    total = 0
    try:
        start = time.perf_counter()
        conn.request("GET", path_, headers=headers)
        response = conn.getresponse()
        if response.status != 200:
            return {"status": response.status, "answer": response.read()[:300]}
        while n := response.readinto(buffer):
            total += n
        seconds = time.perf_counter() - start
    finally:
        conn.close()
    expected = response.getheader("Content-Length")
    if expected is not None and int(expected) != total:
        raise RuntimeError(f"GET {path_}: {total} bytes of {expected}")
    return {"status": 200, "bytes": total, "seconds": seconds}


def mib_per_s(result: dict[str, Any]) -> float:
    return float(result["bytes"] / MiB / result["seconds"])


# ---------------------------------------------------------------------------------- the bench


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.sizes = QUICK if args.quick else FULL
        self.only = [s.strip() for s in args.only.split(",")] if args.only else None
        self.server_env = dict(kv.split("=", 1) for kv in args.server_env)
        self.rows: list[Row] = []
        self.meta: dict[str, Any] = {}
        self.tmp = Path(tempfile.mkdtemp(prefix="cryptofiles-bench-"))
        self.data = self.tmp / "random.bin"
        self.launcher: Launcher | None = None
        self.sink: SinkServer | None = None
        self.client: pymongo.MongoClient[dict[str, Any]] | None = None
        self.token = ""
        self.ours: dict[int, str] = {}  # size -> our file id
        self.theirs: dict[int, Any] = {}  # size -> baseline GridFS id
        self.small_ids: dict[int, list[str]] = {}  # client index -> its files
        self.tokens: list[str] = []
        # Bytes in each chunks collection: on FerretDB/SQLite a chunk query scans the whole
        # collection, so download speed depends on it (see docs/benchmarks.md).
        self.stored = {"ours": 0, "baseline": 0}

    def wanted(self, *names: str) -> bool:
        # Either side may be a prefix: --only upload_ picks upload_64MiB; "rss_" matches
        # --only rss_upload_1GiB.
        return self.only is None or any(
            n.startswith(o) or o.startswith(n) for n in names for o in self.only
        )

    def add(self, row: Row) -> None:
        self.rows.append(row)
        met = row.goal.met(row) if row.goal else None
        verdict = {True: ", goal met", False: ", goal NOT met", None: ""}[met]
        base = (
            f" (baseline {_fmt(row.baseline)}, ratio {_fmt(row.ratio, 2)})" if row.baseline else ""
        )
        log(f"{row.name}: {_fmt(row.value)} {row.unit}{base}{verdict}")

    # -- set-up ---------------------------------------------------------------------------------

    def make_data(self) -> None:
        size = max(self.sizes.huge, self.sizes.large, self.sizes.small)
        log(f"writing {size // MiB} MiB of random data to {self.data}")
        with open(self.data, "wb") as out:
            for _ in range(size // MiB):
                out.write(os.urandom(MiB))

    def start_server(self, var: str) -> Launcher:
        log(f"starting the launcher (python -m cryptofiles.serve), var dir {var} ...")
        launcher = Launcher(self.tmp / var, self.server_env)
        self.launcher = launcher
        self.stored = {"ours": 0, "baseline": 0}
        launcher.wait_ready()
        self.client = pymongo.MongoClient(launcher.uri)
        settings = {
            k: launcher.env.get(k, default)
            for k, default in (
                ("WEB_WORKERS", default_setting("web_workers")),
                ("WEB_CONNECTIONS", default_setting("web_connections")),
            )
        }
        self.meta.setdefault("server", {})[var] = {
            "port": launcher.port,
            "database_uri": launcher.uri,
            "database_pid": launcher.db_pid,
            "database_command": cmdline(launcher.db_pid) if launcher.db_pid else None,
            "gunicorn": [cmdline(p) for p in launcher.server_pids()],
            **settings,
            "server_env_overrides": self.server_env,
        }
        log(f"server on port {launcher.port}, database {launcher.uri} (pid {launcher.db_pid})")
        return launcher

    def register(self, name: str) -> str:
        """A new account and its token (waits out a rate limit's 429 once, up to 65 s)."""
        assert self.launcher
        port = self.launcher.port
        calls = (
            ("POST", "/registration", {"New_User_Name": name, "New_User_Password": PASSWORD}, 201),
            ("GET", "/login", {"User_Name": name, "User_Password": PASSWORD}, 200),
        )
        body = b""
        for method, path, headers, expected in calls:
            for attempt in range(2):
                conn = connection(port, 60)
                try:
                    conn.request(method, path, headers=headers)
                    response = conn.getresponse()
                    body = response.read()
                finally:
                    conn.close()
                if response.status == 429 and attempt == 0:
                    wait = min(int(response.getheader("Retry-After") or 60), 65)
                    log(f"{path}: rate-limited (429); waiting {wait} s")
                    time.sleep(wait)
                    continue
                if response.status != expected:
                    raise RuntimeError(
                        f"{method} {path} for {name}: {response.status} {body[:200]!r}"
                    )
                break
        return body.decode().strip()

    @property
    def db(self) -> Any:
        assert self.client is not None
        return self.client[DB_NAME]

    def bucket(self, name: str) -> gridfs.GridFSBucket:
        return gridfs.GridFSBucket(self.db, name, chunk_size_bytes=MiB)

    def groups(self) -> dict[str, Callable[[], list[int]]]:
        assert self.launcher
        return {"server": self.launcher.server_pids, "db": self.launcher.db_pids}

    def cpu(self) -> dict[str, float]:
        assert self.launcher
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "server_cpu_s": cpu_seconds(self.launcher.server_pids()),
            "db_cpu_s": cpu_seconds(self.launcher.db_pids()),
            "client_cpu_s": usage.ru_utime + usage.ru_stime,
        }

    def measured(self, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run one transfer and add the CPU seconds each side spent on it."""
        assert self.launcher
        self.launcher.check_alive()
        before = self.cpu()
        result = fn()
        after = self.cpu()
        result.update({k: round(after[k] - before[k], 2) for k in before})
        return result

    # -- transfers ----------------------------------------------------------------------------

    def our_upload(self, size: int) -> dict[str, Any]:
        assert self.launcher
        result = self.measured(
            lambda: http_upload(self.launcher.port, "/upload", self.token, self.data, size)  # type: ignore[union-attr]
        )
        self.ours.setdefault(size, result["answer"])
        self.stored["ours"] += size
        return result

    def baseline_upload(self, size: int) -> dict[str, Any]:
        bucket = self.bucket("bench_baseline")

        def run() -> dict[str, Any]:
            with LimitedReader(self.data, size) as source:
                start = time.perf_counter()
                file_id = bucket.upload_from_stream(f"baseline-{size}", source)
                seconds = time.perf_counter() - start
            self.theirs.setdefault(size, file_id)
            self.stored["baseline"] += size
            return {"bytes": size, "seconds": seconds}

        return self.measured(run)

    def baseline_download(self, file_id: Any) -> dict[str, Any]:
        """GridOut if the database allows it, else the chunks with a batch size (labelled)."""

        def gridout() -> dict[str, Any]:
            start = time.perf_counter()
            stream = self.bucket("bench_baseline").open_download_stream(file_id)
            total = 0
            while data := stream.readchunk():
                total += len(data)
            return {"bytes": total, "seconds": time.perf_counter() - start, "how": "gridout"}

        def chunks() -> dict[str, Any]:
            start = time.perf_counter()
            total = 0
            cursor = self.db["bench_baseline.chunks"].find(
                {"files_id": file_id}, sort=[("n", 1)], batch_size=chunk_batch()
            )
            with cursor:
                for doc in cursor:
                    total += len(doc["data"])
            return {"bytes": total, "seconds": time.perf_counter() - start, "how": "chunks"}

        if not self.meta.get("gridout_fails"):
            try:
                return self.measured(gridout)
            except ProtocolError as exc:
                if "larger than server max message size" not in str(exc):
                    raise
                self.meta["gridout_fails"] = str(exc)
                log(f"GridOut fails on this database ({exc}); baseline reads the chunks instead")
        return self.measured(chunks)

    def transfer_rows(self) -> None:
        s = self.sizes
        plans = [
            (s.small, "64MiB", s.reps_small),
            (s.large, "512MiB", s.reps_large),
        ]
        for size, label, reps in plans:
            up, down = f"upload_{label}", f"download_{label}"
            need_plain = label == "512MiB" and self.wanted("plaintext_512MiB")
            if not (self.wanted(up, down) or need_plain):
                continue
            ours: list[dict[str, Any]] = []
            theirs: list[dict[str, Any]] = []
            for rep in range(reps if self.wanted(up) else 1):
                log(f"{up}: repetition {rep + 1}/{reps}")
                order = [self.our_upload, self.baseline_upload]
                for step in order if rep % 2 == 0 else order[::-1]:
                    (ours if step == self.our_upload else theirs).append(step(size))
            if self.wanted(up):
                self.add(throughput_row(up, ours, theirs, Goal("ratio", ">=", 0.9),
                                        "pymongo GridFSBucket.upload_from_stream, 1 MiB chunks, "
                                        "same bytes, bucket bench_baseline, same database"))  # fmt: skip
            if self.wanted(down):
                ours, theirs = [], []
                for rep in range(reps):
                    log(f"{down}: repetition {rep + 1}/{reps}")
                    order = [self.our_download, self.baseline_download_of]
                    for step in order if rep % 2 == 0 else order[::-1]:
                        (ours if step == self.our_download else theirs).append(step(size))
                how = {t.get("how") for t in theirs}
                label_ = (
                    "pymongo GridFSBucket.open_download_stream of the baseline object"
                    if how == {"gridout"}
                    else "pymongo find() on bench_baseline.chunks sorted by n with "
                    f"batch_size={chunk_batch()} (as storage.read_chunks): GridOut fails on "
                    "this database for files over ~45 MiB (reply > 48 MB max message size)"
                )
                row = throughput_row(down, ours, theirs, Goal("ratio", ">=", 0.9), label_)
                row.details["chunks_collections_mib_at_download"] = {
                    k: round(v / MiB) for k, v in self.stored.items()
                }
                self.add(row)
            if need_plain:
                self.plaintext_row(size)

    def our_download(self, size: int) -> dict[str, Any]:
        assert self.launcher
        file_id = self.ours[size]
        result = self.measured(
            lambda: http_download(self.launcher.port, f"/files/{file_id}", self.token)  # type: ignore[union-attr]
        )
        if result["status"] != 200:
            raise RuntimeError(f"download of {file_id}: {result}")
        return result

    def baseline_download_of(self, size: int) -> dict[str, Any]:
        return self.baseline_download(self.theirs[size])

    def plaintext_row(self, size: int) -> None:
        assert self.launcher
        name = "plaintext_512MiB"
        port = self.launcher.port
        # The route is new: first check on a small file that it exists and answers the plaintext.
        probe_size = 3 * MiB + 17
        probe_id = http_upload(port, "/upload", self.token, self.data, probe_size)["answer"]
        status, body = request(port, "GET", f"/files/{probe_id}/plaintext", None,
                               {"x-access-tokens": self.token}, timeout=120)  # fmt: skip
        if status != 200:
            self.add(Row(name, None, "MiB/s", note=(
                f"GET /files/<id>/plaintext answered {status} for the owner's own file: the route "
                "does not exist (yet); this row fills in by itself once it does")))  # fmt: skip
            return
        with open(self.data, "rb") as f:
            correct = body == f.read(probe_size)
        result = self.measured(
            lambda: http_download(port, f"/files/{self.ours[size]}/plaintext", self.token)
        )
        if result["status"] != 200:
            self.add(
                Row(name, None, "MiB/s", note=f"answered {result['status']} for a 512 MiB file")
            )
            return
        base = self.baseline_download(self.theirs[size])
        label = (
            "raw pymongo read of the same-size baseline object's chunks "
            "(what the database can deliver; the ciphertext download's baseline)"
        )
        row = throughput_row(name, [result], [base], None, label)
        row.note = (
            f"plaintext of a {probe_size}-byte probe file "
            + ("matched the uploaded bytes" if correct else "DID NOT MATCH the uploaded bytes")
            + f"; {result['bytes']} bytes received for {size} uploaded"
        )
        self.add(row)

    # -- memory ---------------------------------------------------------------------------------

    def rss_rows(self) -> None:
        if not self.wanted("rss_upload_1GiB", "rss_download_1GiB"):
            return
        assert self.launcher
        launcher = self.launcher
        size = self.sizes.huge
        label = f"{size // MiB} MiB"
        groups = self.groups()

        # Sanity: the sampler sees the gunicorn master and every worker, and not the database.
        pids = launcher.server_pids()
        master = [
            p for p in pids if "gunicorn" in cmdline(p) and _stat_ppid(p) == launcher.process.pid
        ]
        workers = [p for p in pids if master and _stat_ppid(p) == master[0]]
        expected = int(launcher.env.get("WEB_WORKERS", default_setting("web_workers")))
        check = {
            "server_pids": pids,
            "master": master,
            "workers": workers,
            "expected_workers": expected,
            "database_pid": launcher.db_pid,
            "database_excluded": launcher.db_pid not in pids,
        }
        if len(master) != 1 or len(workers) != expected or launcher.db_pid in pids:
            raise RuntimeError(f"RSS sampler does not see the right processes: {check}")

        # Warm-up: small uploads and downloads on several connections at once, so that every
        # worker has served the upload and download paths before the idle figure is taken.
        log(
            f"RSS: warm-up ({self.sizes.warmup // MiB} MiB uploads+downloads on 4 connections, twice)"
        )
        for _ in range(2):
            run_threads(4, lambda i: self._warm_one())
        time.sleep(1)
        idle = idle_mib(groups)
        log(f"RSS: idle server {idle['server']:.1f} MiB, database {idle['db']:.1f} MiB")

        hwm_ok = reset_hwm(launcher.server_pids())
        with RssSampler(groups) as up_sampler:
            up = self.measured(
                lambda: http_upload(launcher.port, "/upload", self.token, self.data, size)
            )
        up_hwm = sum(status_kib(p, "VmHWM") for p in launcher.server_pids()) / 1024
        file_id = up["answer"]
        time.sleep(1)
        idle_after = idle_mib(groups)
        hwm_ok = reset_hwm(launcher.server_pids()) and hwm_ok
        with RssSampler(groups) as down_sampler:
            down = self.measured(
                lambda: http_download(launcher.port, f"/files/{file_id}", self.token)
            )
        down_hwm = sum(status_kib(p, "VmHWM") for p in launcher.server_pids()) / 1024

        for name, sampler, result, hwm in (
            ("rss_upload_1GiB", up_sampler, up, up_hwm),
            ("rss_download_1GiB", down_sampler, down, down_hwm),
        ):
            if not self.wanted(name):
                continue
            peak = sampler.peak_mib("server")
            details = {
                "transfer_bytes": size,
                "idle_server_mib": round(idle["server"], 1),
                "peak_server_mib": round(peak, 1),
                "idle_before_this_transfer_mib": round(
                    (idle if name.startswith("rss_upload") else idle_after)["server"], 1
                ),
                "hwm_cross_check_growth_mib": round(hwm - idle["server"], 1) if hwm_ok else None,
                "db_idle_mib": round(idle["db"], 1),
                "db_peak_mib": round(sampler.peak_mib("db"), 1),
                "per_process_peak_mib": {
                    str(p): round(k / 1024, 1)
                    for p, k in sampler.per_pid_peak.items()
                    if p in sampler.pids_seen["server"]
                },
                "sampler": sampler.stats(),
                "throughput_mib_s": round(mib_per_s(result), 1),
                "processes": check,
                **{k: v for k, v in result.items() if k.endswith("_cpu_s")},
            }
            self.add(Row(
                name, peak - idle["server"], "MiB", goal=Goal("value", "<=", 100),
                details=details,
                note=(
                    f"peak RSS of gunicorn master+{len(workers)} workers while one {label} file "
                    f"went through, minus the idle RSS after warm-up ({idle['server']:.0f} MiB); "
                    f"{details['sampler']['samples']} samples; VmHWM cross-check: "
                    f"{_fmt(details['hwm_cross_check_growth_mib'])} MiB; the database process went "
                    f"{details['db_idle_mib']:.0f} -> {details['db_peak_mib']:.0f} MiB"
                ),
            ))  # fmt: skip
        self.meta["rss_idle_after_upload"] = idle_after

    def _warm_one(self) -> None:
        assert self.launcher
        port = self.launcher.port
        file_id = http_upload(port, "/upload", self.token, self.data, self.sizes.warmup)["answer"]
        result = http_download(port, f"/files/{file_id}", self.token)
        if result["status"] != 200:
            raise RuntimeError(f"warm-up download: {result}")

    def rss_controls(self) -> None:
        """Prove the sampler: a deliberately buffering app must show ~1 GiB of growth."""
        assert self.sink
        sink = self.sink
        size = self.sizes.huge
        groups = {"server": sink.pids}
        controls = {}
        hold = "hold=0.3"  # the control keeps its buffer 0.3 s: six sampling intervals
        for label, fn in (
            ("streaming_upload", lambda: http_upload(sink.port, "/sink", None, self.data, size)),
            ("buffering_upload",
             lambda: http_upload(sink.port, f"/buffer?{hold}", None, self.data, size)),
            ("streaming_download", lambda: http_download(sink.port, f"/source?bytes={size}", None)),
            ("buffering_download",
             lambda: http_download(sink.port, f"/buffered-source?bytes={size}&{hold}", None)),
        ):  # fmt: skip
            run_threads(2, lambda i: http_upload(sink.port, "/sink", None, self.data, 4 * MiB))
            time.sleep(0.5)
            idle = idle_mib(groups, 0.5)["server"]
            hwm_ok = reset_hwm(sink.pids())
            with RssSampler(groups) as sampler:
                fn()
            hwm = sum(status_kib(p, "VmHWM") for p in sink.pids()) / 1024
            controls[label] = {
                "growth_mib": round(sampler.peak_mib("server") - idle, 1),
                "hwm_growth_mib": round(hwm - idle, 1) if hwm_ok else None,
                "idle_mib": round(idle, 1),
                **sampler.stats(),
            }
            log(f"RSS control {label}: +{controls[label]['growth_mib']} MiB "
                f"(VmHWM: +{controls[label]['hwm_growth_mib']} MiB)")  # fmt: skip
            time.sleep(0.5)
        self.meta["rss_controls"] = controls
        for row in self.rows:
            kind = {"rss_upload_1GiB": "upload", "rss_download_1GiB": "download"}.get(row.name)
            if kind:
                row.baseline = controls[f"buffering_{kind}"]["growth_mib"]
                row.baseline_label = (
                    f"control, not a database figure: the same sampler on a deliberately buffering "
                    f"WSGI app (bench/sink_app.py under the same gunicorn options) for the same "
                    f"{size // MiB} MiB {kind} (a streaming one: "
                    f"+{controls[f'streaming_{kind}']['growth_mib']} MiB); proves buffering would show"
                )
                expected = size / MiB * 0.8
                if controls[f"buffering_{kind}"]["growth_mib"] < expected:
                    row.note += " | WARNING: the buffering control grew less than expected"

    # -- concurrency ----------------------------------------------------------------------------

    def concurrency_rows(self) -> None:
        want_small = self.wanted("small_upload_4KiB_c16")
        want_keys = self.wanted("key_fetch_c16")
        if not (want_small or want_keys):
            return
        assert self.launcher
        port = self.launcher.port
        log(f"registering {CONCURRENCY} users (scrypt: a few seconds)")
        self.tokens = [""] * CONCURRENCY

        def reg(i: int) -> None:
            self.tokens[i] = self.register(f"bench-c{i:02d}-{os.getpid()}")

        run_threads(4, lambda k: [reg(i) for i in range(k, CONCURRENCY, 4)])
        payload = os.urandom(SMALL_FILE)

        if want_small:
            count = self.sizes.small_uploads
            ours = self.http_concurrent(
                lambda conn, i, k: self._small_upload(conn, i, payload), count, warmups=1
            )
            bucket = self.bucket("bench_small")
            theirs = self.pymongo_concurrent(
                lambda i, k: bucket.upload_from_stream(f"small-{i}-{k}", payload), count
            )
            self.add(concurrency_row("small_upload_4KiB_c16", "uploads/s", ours, theirs,
                                     Goal("ratio", ">=", 0.5),
                                     f"pymongo GridFSBucket.upload_from_stream of 4 KiB, "
                                     f"{CONCURRENCY} threads sharing one MongoClient"))  # fmt: skip
        if want_keys:
            for i in range(CONCURRENCY):  # files to fetch keys of, if the upload row did not run
                while len(self.small_ids.get(i, [])) < 4:
                    conn = connection(port, 60)
                    self._small_upload(conn, i, payload)
                    conn.close()
            count = self.sizes.key_fetches
            ours = self.http_concurrent(self._key_fetch, count, warmups=1)
            files = self.db["files"]
            theirs = self.pymongo_concurrent(
                lambda i, k: _must(files.find_one({"_id": self._pick(i, k)})), count
            )
            self.add(concurrency_row("key_fetch_c16", "requests/s", ours, theirs, None,
                                     f"pymongo find_one by _id on the files collection, "
                                     f"{CONCURRENCY} threads sharing one MongoClient"))  # fmt: skip

    def _pick(self, i: int, k: int) -> str:
        ids = self.small_ids[i]
        return ids[k % len(ids)]

    def _small_upload(self, conn: http.client.HTTPConnection, i: int, payload: bytes) -> None:
        conn.request("POST", "/upload", body=payload, headers={"x-access-tokens": self.tokens[i]})
        response = conn.getresponse()
        body = response.read()
        if response.status != 201:
            raise RuntimeError(f"small upload: {response.status} {body[:200]!r}")
        self.small_ids.setdefault(i, []).append(body.decode().strip())

    def _key_fetch(self, conn: http.client.HTTPConnection, i: int, k: int) -> None:
        conn.request(
            "GET", f"/files/{self._pick(i, k)}/key", headers={"x-access-tokens": self.tokens[i]}
        )
        response = conn.getresponse()
        body = response.read()
        if response.status != 200 or len(body.strip()) != 44:
            raise RuntimeError(f"key fetch: {response.status} {body[:200]!r}")

    def http_concurrent(
        self, op: Callable[[http.client.HTTPConnection, int, int], None], count: int, warmups: int
    ) -> dict[str, Any]:
        """``count`` operations split over CONCURRENCY clients, each on its own keep-alive
        connection with its own token; timed from a common start to the last one's end."""
        assert self.launcher
        port = self.launcher.port
        conns = [connection(port, 60) for _ in range(CONCURRENCY)]
        per = count // CONCURRENCY

        def work(i: int, barrier: threading.Barrier, deadline: list[float]) -> int:
            for k in range(warmups):
                op(conns[i], i, -1 - k)
            barrier.wait()
            done = 0
            for k in range(per):
                if time.monotonic() > deadline[0]:
                    break
                op(conns[i], i, k)
                done += 1
            return done

        try:
            return self._timed_threads(work, per * CONCURRENCY)
        finally:
            for conn in conns:
                conn.close()

    def pymongo_concurrent(self, op: Callable[[int, int], Any], count: int) -> dict[str, Any]:
        per = count // CONCURRENCY

        def work(i: int, barrier: threading.Barrier, deadline: list[float]) -> int:
            self.db.command("ping")  # a pooled connection for this thread
            barrier.wait()
            done = 0
            for k in range(per):
                if time.monotonic() > deadline[0]:
                    break
                op(i, k)
                done += 1
            return done

        return self._timed_threads(work, per * CONCURRENCY)

    def _timed_threads(
        self, work: Callable[[int, threading.Barrier, list[float]], int], expected: int
    ) -> dict[str, Any]:
        assert self.launcher
        deadline = [float("inf")]
        start: list[float] = []

        def go() -> None:
            start.append(time.perf_counter())
            deadline[0] = time.monotonic() + PHASE_TIME_BOUND

        barrier = threading.Barrier(CONCURRENCY, action=go)
        before = self.cpu()
        done = run_threads(CONCURRENCY, lambda i: work(i, barrier, deadline))
        seconds = time.perf_counter() - start[0]
        after = self.cpu()
        total = sum(done)
        return {
            "ops": total,
            "seconds": round(seconds, 3),
            "per_s": total / seconds,
            "time_bound_hit": total < expected,
            **{k: round(after[k] - before[k], 2) for k in before},
        }

    # -- in-process and HTTP-only ---------------------------------------------------------------

    def encrypt_row(self) -> None:
        if not self.wanted("encrypt_only"):
            return
        from tests.tink_oracle import tink_streaming_aead

        total = self.sizes.encrypt
        blocks = [os.urandom(MiB) for _ in range(min(64, total // MiB))]  # app's BODY_BLOCK = 1 MiB
        key = crypto.new_file_key()

        def source() -> Iterator[bytes]:
            for k in range(total // MiB):
                yield blocks[k % len(blocks)]

        def ours() -> dict[str, Any]:
            start = time.perf_counter()
            stored = sum(len(s) for s in crypto.encrypt_stream(key, source()))
            return {"bytes": total, "stored": stored, "seconds": time.perf_counter() - start}

        class Discard(io.RawIOBase):
            def writable(self) -> bool:
                return True

            def write(self, data: Any) -> int:
                return len(data)

        def tink() -> dict[str, Any]:
            primitive = tink_streaming_aead(key)
            start = time.perf_counter()
            with primitive.new_encrypting_stream(Discard(), b"") as stream:
                for block in source():
                    stream.write(block)
            return {"bytes": total, "seconds": time.perf_counter() - start}

        mine, theirs = [], []
        for rep in range(3):
            for step in (ours, tink) if rep % 2 == 0 else (tink, ours):
                (mine if step is ours else theirs).append(step())
        self.add(throughput_row("encrypt_only", mine, theirs, None,
                                f"Tink StreamingAead (AES256_GCM_HKDF_1MB, tests/tink_oracle.py) "
                                f"encrypting the same {total // MiB} MiB in 1 MiB writes, "
                                "in-process", cpu=False))  # fmt: skip

    def sink_rows(self) -> None:
        want = [n for n in ("http_sink_512MiB", "http_encrypt_sink_512MiB", "http_source_512MiB")
                if self.wanted(n)]  # fmt: skip
        want_controls = self.wanted("rss_upload_1GiB", "rss_download_1GiB")
        if not (want or want_controls):
            return
        log("starting the sink app (bench/sink_app.py) under the launcher's gunicorn options")
        self.sink = SinkServer(self.tmp / "sink.log", self.server_env)
        sink = self.sink
        size = self.sizes.large
        self.meta["sink_gunicorn"] = sink.args
        for name, fn, note in (
            ("http_sink_512MiB", lambda: http_upload(sink.port, "/sink", None, self.data, size),
             "POST to a WSGI app that reads the body in 1 MiB blocks and drops it: the HTTP "
             "stack's upload ceiling here (client and server share the 2 cores)"),
            ("http_encrypt_sink_512MiB",
             lambda: http_upload(sink.port, "/encrypt-sink", None, self.data, size),
             "diagnostic: as http_sink, plus crypto.encrypt_stream on every block, as the upload "
             "route does: our upload's ceiling without a database"),
            ("http_source_512MiB", lambda: http_download(sink.port, f"/source?bytes={size}", None),
             "diagnostic: GET of 1 MiB blocks from memory: the download path's HTTP ceiling"),
        ):  # fmt: skip
            if name in want:
                fn()  # warm-up: the first request to a fresh worker pays for imports
                results = [fn() for _ in range(3)]
                best = max(results, key=mib_per_s)
                self.add(Row(name, mib_per_s(best), "MiB/s", note=note,
                             details={"runs_mib_s": [round(mib_per_s(r), 1) for r in results]}))  # fmt: skip
        if want_controls:
            self.rss_controls()

    # -- the whole run ------------------------------------------------------------------------

    def run(self) -> None:
        started = time.monotonic()
        self.meta.update(
            machine_info(), quick=self.args.quick, sizes=dataclasses.asdict(self.sizes)
        )
        self.meta["loadavg_start"] = os.getloadavg()
        self.make_data()
        server_rows = ("upload_", "download_", "plaintext_", "rss_", "small_upload", "key_fetch")
        if self.wanted(*server_rows[:2], *server_rows[4:]):
            self.start_server("var")
            log("registering the main user")
            self.token = self.register(f"bench-{os.getpid()}")
            self.transfer_rows()
            self.concurrency_rows()
            self.meta["database_size_bytes"] = dir_size(self.tmp / "var" / "db")
            self.stop_server()
        if self.wanted("rss_"):
            # A fresh launcher and database: the idle RSS of a new server, and a chunks collection
            # that does not hold the throughput rows' files.
            self.start_server("var-rss")
            self.token = self.register(f"bench-rss-{os.getpid()}")
            self.rss_rows()
            self.stop_server()
        self.encrypt_row()
        self.sink_rows()
        self.meta["loadavg_end"] = os.getloadavg()
        self.meta["duration_s"] = round(time.monotonic() - started, 1)

    def stop_server(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.launcher is not None:
            log("stopping the launcher")
            self.launcher.stop()
            self.launcher = None

    def cleanup(self) -> None:
        with contextlib.suppress(Exception):
            self.stop_server()
        if self.sink is not None:
            with contextlib.suppress(Exception):
                self.sink.stop()
            self.sink = None
        if self.args.keep:
            log(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def ordered_rows(self) -> list[Row]:
        order = [
            "upload_64MiB", "upload_512MiB", "download_64MiB", "download_512MiB", "plaintext_512MiB",
            "rss_upload_1GiB", "rss_download_1GiB", "small_upload_4KiB_c16", "key_fetch_c16",
            "encrypt_only", "http_sink_512MiB", "http_encrypt_sink_512MiB", "http_source_512MiB",
        ]  # fmt: skip
        return sorted(self.rows, key=lambda r: order.index(r.name) if r.name in order else 99)


# ---------------------------------------------------------------------------------- helpers


def default_setting(field: str) -> str:
    """The service's default for a setting (cryptofiles.config.Settings), as text."""
    from cryptofiles.config import Settings

    return str(getattr(Settings, field))


def chunk_batch() -> int:
    from cryptofiles import storage

    return int(getattr(storage, "CHUNK_BATCH", 4))


def _stat_ppid(pid: int) -> int:
    try:
        return int(_stat_fields(pid)[1])
    except (OSError, ValueError, IndexError):
        return -1


def _must(doc: Any) -> Any:
    if doc is None:
        raise RuntimeError("find_one found nothing")
    return doc


def run_threads(n: int, fn: Callable[[int], Any]) -> list[Any]:
    """Run fn(0..n-1) in threads; re-raise the first failure; interruptible by Ctrl-C."""
    results: list[Any] = [None] * n
    errors: list[BaseException] = []

    def target(i: int) -> None:
        try:
            results[i] = fn(i)
        except BaseException as exc:  # reported below, in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=target, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(0.2)
    if errors:
        raise errors[0]
    return results


def throughput_row(
    name: str, ours: list[dict[str, Any]], theirs: list[dict[str, Any]], goal: Goal | None,
    baseline_label: str, cpu: bool = True,
) -> Row:  # fmt: skip
    value = statistics.median(mib_per_s(r) for r in ours)
    base = statistics.median(mib_per_s(r) for r in theirs) if theirs else None
    details: dict[str, Any] = {
        "bytes": ours[0]["bytes"],
        "runs_mib_s": [round(mib_per_s(r), 1) for r in ours],
        "baseline_runs_mib_s": [round(mib_per_s(r), 1) for r in theirs],
    }
    if cpu:
        for key in ("server_cpu_s", "db_cpu_s", "client_cpu_s"):
            details[key] = [r.get(key) for r in ours]
            details["baseline_" + key] = [r.get(key) for r in theirs]
        details["seconds"] = [round(r["seconds"], 2) for r in ours]
        details["baseline_seconds"] = [round(r["seconds"], 2) for r in theirs]
    return Row(name, value, "MiB/s", base, baseline_label, goal, details=details)


def concurrency_row(
    name: str, unit: str, ours: dict[str, Any], theirs: dict[str, Any], goal: Goal | None,
    label: str,
) -> Row:  # fmt: skip
    note = ""
    if ours["time_bound_hit"] or theirs["time_bound_hit"]:
        note = f"stopped by the {PHASE_TIME_BOUND} s time bound before the fixed count"
    return Row(name, ours["per_s"], unit, theirs["per_s"], label, goal, note,
               {"ours": ours, "baseline": theirs, "clients": CONCURRENCY})  # fmt: skip


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


def status_meminfo(field: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def write_results(bench: Bench, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = [r.as_json() for r in bench.ordered_rows()]
    out.write_text(json.dumps(rows, indent=2) + "\n")
    meta_path = out.with_name(out.stem + "-run.json")
    meta_path.write_text(json.dumps(bench.meta, indent=2, default=str) + "\n")
    log(f"wrote {out} and {meta_path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--only", help="comma-separated row names (or prefixes) to run")
    parser.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment for the launcher (e.g. WEB_WORKERS=4)")  # fmt: skip
    parser.add_argument("--out", type=Path, help="results file (default bench/results/latest.json)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (data, logs)")
    args = parser.parse_args(argv)
    out = args.out or RESULTS / ("latest-quick.json" if args.quick else "latest.json")

    def on_term(*_: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    bench = Bench(args)
    failed = False
    try:
        bench.run()
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
        failed = True
    except Exception as exc:
        log(f"FAILED: {type(exc).__name__}: {exc}")
        failed = True
        if bench.launcher is not None:
            log("end of the server log:\n" + bench.launcher.log_tail())
    finally:
        bench.cleanup()
    if not bench.rows and not failed:
        log("no row matched --only; nothing measured")
        return 2
    if bench.rows:
        print()
        print(f"crypto-files-server benchmarks{' (QUICK: small sizes)' if args.quick else ''}, "
              f"{bench.meta.get('cpus')} cores, {bench.meta.get('database')}")  # fmt: skip
        print_table(bench.ordered_rows())
        if not failed:
            write_results(bench, out)
    return 1 if failed else 0
