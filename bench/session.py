"""One bench run's state and what every row family needs from it: the sizes, ``--only``, the
rows so far, the run facts (``meta``), the temp dir with its random data file, the running
launcher with a pymongo client on its database, and CPU accounting around a measurement."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gridfs
import pymongo
from pymongo.errors import PyMongoError

from bench.client import connection
from bench.common import GiB, MiB, log
from bench.harness import SinkServer, default_setting
from bench.report import ORDER, Row, fmt
from bench.sampling import cmdline, cpu_seconds, descendants, process_table
from cryptofiles.dev.harness import Launcher

DB_NAME = "cryptofiles"  # the launcher's default MONGODB_DB (we strip MONGODB_* from its env)
PASSWORD = "bench-password-1"  # noqa: S105 (a throwaway account in a temp database)


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
    # The scale family (bench/scale.py): what OTHER users store, before and after the fill.
    store_small: int  # bytes of chunks ("64 MiB")
    store_large: int  # ("2 GiB")
    records_small: int  # file records ("1,000")
    records_large: int  # ("100,000")
    stored_per_uploader: int  # small_upload_4KiB_c16_1000stored: files each uploading user has
    scale_seconds: float  # time bound per operation and store size (then fewer repetitions)


FULL = Sizes(64 * MiB, 512 * MiB, GiB, 256 * MiB, 800, 800, 3, 1, 8 * MiB,
             64 * MiB, 2 * GiB, 1_000, 100_000, 63, 60.0)  # fmt: skip
QUICK = Sizes(8 * MiB, 32 * MiB, 128 * MiB, 32 * MiB, 160, 320, 1, 1, 4 * MiB,
              8 * MiB, 128 * MiB, 200, 2_000, 63, 20.0)  # fmt: skip


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
        # An external database (--mongodb-uri): each launcher gets a fresh database of its own on
        # it, dropped when that launcher stops; its processes are the --database-pids trees.
        self.external_uri: str | None = args.mongodb_uri
        self.db_name = DB_NAME
        self._starts = 0
        self._detached: tuple[int, list[int]] | None = None  # (launcher pid, database roots)

    def wanted(self, *names: str) -> bool:
        # Either side may be a prefix: --only upload_ picks upload_64MiB; "rss_" matches
        # --only rss_upload_1GiB.
        return self.only is None or any(
            n.startswith(o) or o.startswith(n) for n in names for o in self.only
        )

    def wanted_row(self, name: str) -> bool:
        """One row by its full name: --only may name it or a prefix of it, but a longer name
        (small_upload_4KiB_c16_1000stored) does not select its prefix (small_upload_4KiB_c16),
        and a row's full name selects only that row, not the longer names it begins."""
        return self.only is None or any(
            o == name or (name.startswith(o) and o not in ORDER) for o in self.only
        )

    def add(self, row: Row) -> None:
        self.rows.append(row)
        met = row.goal.met(row) if row.goal else None
        verdict = {True: ", goal met", False: ", goal NOT met", None: ""}[met]
        base = f" (baseline {fmt(row.baseline)}, ratio {fmt(row.ratio, 2)})" if row.baseline else ""
        log(f"{row.name}: {fmt(row.value)} {row.unit}{base}{verdict}")

    # -- set-up ---------------------------------------------------------------------------------

    def make_data(self) -> None:
        size = max(self.sizes.huge, self.sizes.large, self.sizes.small)
        log(f"writing {size // MiB} MiB of random data to {self.data}")
        with open(self.data, "wb") as out:
            for _ in range(size // MiB):
                out.write(os.urandom(MiB))

    def start_server(self, var: str) -> Launcher:
        log(f"starting the launcher (python -m cryptofiles.dev.serve), var dir {var} ...")
        env = dict(self.server_env)
        self.db_name = env.get("MONGODB_DB", DB_NAME)
        if self.external_uri:
            self._starts += 1
            self.db_name = f"bench_{os.getpid()}_{self._starts}"
            env.update(MONGODB_URI=self.external_uri, MONGODB_DB=self.db_name)
        # A wider margin than the tests' 60 s: a false start would cost the whole run.
        launcher = Launcher(self.tmp / var, env, ready_seconds=120)
        self.launcher = launcher
        uri = self.external_uri or launcher.database_uri()
        if uri is None:
            raise RuntimeError(f"the launcher logged no database URI:\n{launcher.log_tail()}")
        self.client = pymongo.MongoClient(uri)
        if self.args.after_start:
            self._after_start(uri)
        engine = database_engine(self.client)
        self.meta.setdefault("database_engines", {})[var] = engine
        self.meta["database"] = engine.get("powered_by") or engine.get("version")
        settings = {
            k: launcher.env.get(k, default)
            for k, default in (
                ("WEB_WORKERS", default_setting("web_workers")),
                ("WEB_CONNECTIONS", default_setting("web_connections")),
            )
        }
        self.meta.setdefault("server", {})[var] = {
            "port": launcher.port,
            "database_uri": uri,
            "database_name": self.db_name,
            "database_pid": launcher.db_pid,
            "database_command": cmdline(launcher.db_pid) if launcher.db_pid else None,
            "database_processes": {p: cmdline(p) for p in self.db_pids()},
            "gunicorn": [cmdline(p) for p in launcher.server_pids()],
            **settings,
            "server_env_overrides": self.server_env,
        }
        log(f"server on port {launcher.port}, database {uri} (pid {launcher.db_pid})")
        return launcher

    def _after_start(self, uri: str) -> None:
        """--after-start: the user's command, once the server is up and has created its
        collections and indexes (e.g. indexes of an engine's own kind on an external database)."""
        log(f"running --after-start on database {self.db_name}")
        env = {**os.environ, "BENCH_DATABASE_URI": uri, "BENCH_DATABASE_NAME": self.db_name}
        subprocess.run(self.args.after_start, shell=True, env=env, check=True)  # noqa: S602
        self.meta["after_start"] = self.args.after_start

    def register(self, name: str) -> str:
        """A new account and its token (waits out a rate limit's 429 once, up to 65 s, and retries
        a busy server's 503 a few times)."""
        assert self.launcher
        port = self.launcher.port
        calls = (
            ("POST", "/registration", {"New_User_Name": name, "New_User_Password": PASSWORD}, 201),
            ("GET", "/login", {"User_Name": name, "User_Password": PASSWORD}, 200),
        )
        body = b""
        for method, path, headers, expected in calls:
            waited = False
            for attempt in range(6):
                conn = connection(port, 60)
                try:
                    conn.request(method, path, headers=headers)
                    response = conn.getresponse()
                    body = response.read()
                finally:
                    conn.close()
                if response.status == 429 and not waited:
                    wait = min(int(response.getheader("Retry-After") or 60), 65)
                    log(f"{path}: rate-limited (429); waiting {wait} s")
                    time.sleep(wait)
                    waited = True
                    continue
                if response.status == 503 and attempt < 5:
                    # Password hashing's pool is full (a loaded machine): nothing was done, retry.
                    log(f"{path}: server busy (503); retrying")
                    time.sleep(1 + attempt)
                    continue
                if response.status != expected:
                    raise RuntimeError(
                        f"{method} {path} for {name}: {response.status} {body[:200]!r}"
                    )
                break
        return body.decode().strip()

    @property
    def port(self) -> int:
        assert self.launcher
        return self.launcher.port

    @property
    def db(self) -> Any:
        assert self.client is not None
        return self.client[self.db_name]

    def bucket(self, name: str) -> gridfs.GridFSBucket:
        return gridfs.GridFSBucket(self.db, name, chunk_size_bytes=MiB)

    def groups(self) -> dict[str, Callable[[], list[int]]]:
        assert self.launcher
        return {"server": self.launcher.server_pids, "db": self.db_pids}

    def db_pids(self) -> list[int]:
        """Every process of the database, whatever the engine: what the launcher runs besides
        gunicorn (FerretDB; a PostgreSQL it starts, with its backends) and everything below it,
        plus the --database-pids trees of an external database. The launcher's own process
        info, not the engine's name, decides: the bench measures whatever the server runs."""
        assert self.launcher
        launcher = self.launcher
        server = set(launcher.server_pids())
        roots = [p for p in descendants(launcher.process.pid) if p not in server]
        roots += [p for p in self._detached_db_roots() if Path(f"/proc/{p}").exists()]
        roots += [p for p in self.args.database_pids if Path(f"/proc/{p}").exists()]
        found: list[int] = []
        for root in roots:
            for pid in (root, *descendants(root)):
                if pid not in found and pid not in server:
                    found.append(pid)
        return found

    def _detached_db_roots(self) -> list[int]:
        """Processes outside the launcher's tree whose command line names its var dir: a database
        server that daemonizes (``pg_ctl start`` leaves a postmaster whose parent is init) is
        still the launcher's database. Found once per launcher: the /proc scan is slow."""
        assert self.launcher
        if self._detached is None or self._detached[0] != self.launcher.process.pid:
            var = str(self.launcher.var_dir.resolve())
            found = [p for p in process_table() if p != os.getpid() and var in cmdline(p)]
            self._detached = (self.launcher.process.pid, found)
        return self._detached[1]

    def cpu(self) -> dict[str, float]:
        assert self.launcher
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "server_cpu_s": cpu_seconds(self.launcher.server_pids()),
            "db_cpu_s": cpu_seconds(self.db_pids()),
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

    def stop_server(self) -> None:
        if self.client is not None:
            if self.external_uri:  # our own fresh database on someone's server: leave nothing
                with contextlib.suppress(PyMongoError):
                    self.client.drop_database(self.db_name)
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


def database_engine(client: pymongo.MongoClient[dict[str, Any]]) -> dict[str, Any]:
    """What the database says it is: buildInfo's versions and FerretDB's "Powered by ..." start-up
    line (it names the backend and its version). Asked over the wire, so the bench needs no
    knowledge of how the launcher chose its engine."""
    info: dict[str, Any] = {}
    with contextlib.suppress(PyMongoError):
        build = client.admin.command("buildInfo")
        info["version"] = build.get("version")
        if "ferretdbVersion" in build:
            info["ferretdbVersion"] = build["ferretdbVersion"]
    with contextlib.suppress(PyMongoError):
        lines = client.admin.command("getLog", "startupWarnings").get("log", [])
        powered = [_log_message(line) for line in lines if "Powered by" in str(line)]
        if powered:
            info["powered_by"] = powered[0].rstrip(".")
    return info


def _log_message(line: Any) -> str:
    """The message of a log line: FerretDB answers getLog with MongoDB's JSON log lines."""
    with contextlib.suppress(ValueError, TypeError, KeyError):
        return str(json.loads(line)["msg"])
    return str(line)
