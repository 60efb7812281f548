"""The local database for development and tests: a real MongoDB-wire server on a private Unix socket.

Used only when ``MONGODB_URI`` is not set. In order of preference: ``mongod`` on PATH, else FerretDB
1.24 on PostgreSQL (a private cluster in ``<data>/pg``, see ``postgres.py``; the indexes it needs,
``pgindexes.py``), else - only where PostgreSQL's server cannot be had - FerretDB on its embedded
SQLite, which reads the whole collection for every query (a WARNING says so at start). FerretDB is
built from source with Go by ``python -m cryptofiles.dev.database ensure`` (which ``make`` runs)
into the git-ignored ``tools/`` folder, which also installs PostgreSQL when it may. Never an
in-process fake: a test that passes against a fake proves nothing about MongoDB. Nothing outside
this package knows which engine runs: the app gets a ``mongodb://`` URI.

Why FerretDB is built from its module source and not with a bare ``go install ...@v1.24.2``: such a
binary panics at start-up ("Invalid build/version/version.txt file content"), because FerretDB 1.x
reads its version from a file its release build generates (upstream issue FerretDB#2982). We fetch the
same module through the Go module proxy, add that one file, as upstream's message says to, and build.

The server is the owner's alone: it runs with umask 077 (data folder 0700, every file 0600; what an
older run left is chmodded at start) and listens on a Unix socket in that 0700 folder, never on a TCP
port. The server has no authentication, so a loopback port let any local user read or rewrite every
record (a replaced password hash was a login as its owner); the folder's mode is now the access check.
Root and processes of the same OS user can still read everything. When we are root, PostgreSQL runs
as the ``postgres`` user, which may then read its cluster too (see ``postgres.py``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from cryptofiles.dev import postgres
from cryptofiles.dev.daemons import (
    PRIVATE_UMASK,
    DatabaseStartError,
    NoDatabaseServer,
    die_with_parent,
    make_private,
    private_file,
    read_pid,
    stop_leftover,
)

__all__ = [
    "DatabaseStartError", "LocalDatabase", "NoDatabaseServer", "die_with_parent", "ensure_server",
    "find_server", "free_port", "make_private", "socket_uri",
]  # fmt: skip

log = logging.getLogger(__name__)

FERRETDB_MODULE = "github.com/FerretDB/FerretDB"
FERRETDB_VERSION = "v1.24.2"
START_TIMEOUT_SECONDS = 30
STOP_TIMEOUT_SECONDS = 10
SOCKET_NAME = "server.sock"  # pymongo takes a host ending in .sock for a Unix socket path
# sun_path holds 108 bytes with the closing NUL; a longer path cannot be bound or connected to.
MAX_SOCKET_PATH_BYTES = 107

SQLITE_WARNING = (
    "FerretDB runs on SQLite, which reads the whole collection for every query: each request "
    "slows down as the store grows (a 200 KiB download took 15 s with 1 GiB stored). Fine for a "
    'quick try; install PostgreSQL\'s server for anything more (README, "The local database").'
)
ENGINES = ("auto", "postgresql", "sqlite")  # auto: PostgreSQL when it can be had

NO_SERVER_MESSAGE = (
    "No MongoDB server is available. Any one of these fixes it:\n"
    "  1. set MONGODB_URI to a MongoDB server you run (e.g. mongodb://127.0.0.1:27017/);\n"
    "  2. put `mongod` on PATH (the project then starts its own on a free port);\n"
    "  3. install Go (https://go.dev/doc/install) and run `make setup`: it builds FerretDB "
    f"{FERRETDB_VERSION[1:]} into tools/."
)


def tools_dir(environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    return Path(environ.get("CRYPTOFILES_TOOLS_DIR", "tools")).resolve()


def ferretdb_binary(tools: Path | None = None) -> Path:
    return (tools or tools_dir()) / "ferretdb" / "bin" / "ferretdb"


def find_server(tools: Path | None = None, *, path: str | None = None) -> tuple[str, Path]:
    """``("mongod" | "ferretdb", path)`` of the server to start; ``path`` is the PATH to search."""
    mongod = shutil.which("mongod", path=path)
    if mongod:
        return "mongod", Path(mongod)
    binary = ferretdb_binary(tools)
    if binary.is_file():
        return "ferretdb", binary
    raise NoDatabaseServer(NO_SERVER_MESSAGE)


def build_ferretdb(
    tools: Path | None = None, *, path: str | None = None, out: IO[str] = sys.stderr
) -> Path:
    """Build FerretDB into ``tools/ferretdb/bin`` unless it is there already. Idempotent."""
    binary = ferretdb_binary(tools)
    if binary.is_file():
        return binary
    go = shutil.which("go", path=path)
    if go is None:
        raise NoDatabaseServer(NO_SERVER_MESSAGE)
    print(
        f"Building FerretDB {FERRETDB_VERSION} with Go into {binary.parent.parent} "
        "(first time only; this takes a few minutes)...",
        file=out,
        flush=True,
    )
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-buildvcs=false"}
    download = subprocess.run(
        [go, "mod", "download", "-json", f"{FERRETDB_MODULE}@{FERRETDB_VERSION}"],
        env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    module_dir = Path(json.loads(download.stdout)["Dir"])
    source = binary.parent.parent / "src"
    shutil.rmtree(source, ignore_errors=True)
    # The module cache is read-only; build from a writable copy that carries version.txt.
    shutil.copytree(module_dir, source)
    for item in source.rglob("*"):
        item.chmod(item.stat().st_mode | 0o200)
    (source / "build" / "version" / "version.txt").write_text(FERRETDB_VERSION + "\n")
    binary.parent.mkdir(parents=True, exist_ok=True)
    partial = binary.with_suffix(".partial")
    subprocess.run(
        [go, "build", "-trimpath", "-o", str(partial), "./cmd/ferretdb"],
        cwd=source, env=env, check=True,
    )  # fmt: skip
    partial.rename(binary)  # only a complete build counts as installed
    shutil.rmtree(source, ignore_errors=True)
    print(f"FerretDB {FERRETDB_VERSION} is ready: {binary}", file=out, flush=True)
    return binary


def ensure_server(environ: Mapping[str, str] | None = None, *, out: IO[str] = sys.stderr) -> None:
    """Set-up step: make sure `make run` and `make test` will have a database to talk to."""
    environ = os.environ if environ is None else environ
    path = environ.get("PATH", "")
    if environ.get("MONGODB_URI"):
        print("MONGODB_URI is set: the project will use that server.", file=out)
    elif shutil.which("mongod", path=path):
        print("mongod found on PATH: the project will start its own.", file=out)
    else:
        build_ferretdb(tools_dir(environ), path=path, out=out)
        ensure_postgres(path, out)


def ensure_postgres(path: str, out: IO[str]) -> None:
    """PostgreSQL's server for FerretDB: found, or installed when we may, or how to get it."""
    found = postgres.find_postgres(path)
    if found is None and postgres.install_postgres(out):
        found = postgres.find_postgres(path)
    if found is None:
        print(f"WARNING: {postgres.INSTALL_HINT}\n{SQLITE_WARNING}", file=out)
    else:
        print(f"FerretDB will run on PostgreSQL ({found}).", file=out)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def socket_uri(path: Path) -> str:
    """The MongoDB URI of a Unix socket: its path percent-encoded as the host."""
    return f"mongodb://{urllib.parse.quote(str(path), safe='')}/"


def _short_socket_folder(owner: Any, preferred: Path) -> Path:
    """``preferred`` when a socket in it fits in a socket address, else a fresh private temporary
    folder (0700, unpredictable: ``tempfile.mkdtemp``, so no other user can have prepared it),
    removed when ``owner`` is collected or at exit."""
    if len(os.fsencode(preferred / SOCKET_NAME)) <= MAX_SOCKET_PATH_BYTES:
        return preferred
    folder = Path(tempfile.mkdtemp(prefix="cryptofiles-db-"))
    weakref.finalize(owner, shutil.rmtree, folder, True)
    return folder


class LocalDatabase:
    """A database server process on a Unix socket, with its data in ``data_dir``.

    The socket is ``data_dir/server.sock`` when that path fits in a socket address, else a socket in
    a private temporary folder that this object keeps for its whole life, so that a restart keeps
    the URI. FerretDB on PostgreSQL is two processes: ``process`` (FerretDB, what clients talk to)
    and ``postgres`` (the cluster); both start and stop together. ``engine`` picks FerretDB's
    backend ("auto": PostgreSQL when it can be had); ``postgres_settings`` add PostgreSQL settings.
    """

    def __init__(
        self, data_dir: Path, *, tools: Path | None = None, engine: str = "auto",
        postgres_settings: Mapping[str, str] | None = None,
    ) -> None:  # fmt: skip
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, not {engine!r}")
        self.data_dir = data_dir.resolve()
        self.tools = tools
        self.engine = engine
        self.process: subprocess.Popen[bytes] | None = None
        self.postgres: postgres.PostgresCluster | None = None
        self.uri = ""
        self._socket_path: Path | None = None
        self._postgres_settings = dict(postgres_settings or {})

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "server.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "server.log"

    @property
    def socket_path(self) -> Path:
        if self._socket_path is None:
            self._socket_path = _short_socket_folder(self, self.data_dir) / SOCKET_NAME
        return self._socket_path

    def start(self) -> str:
        kind, binary = find_server(self.tools)
        make_private(self.data_dir)
        self.socket_path.parent.chmod(0o700)
        self._stop_leftover()
        # A server killed with -9 leaves its socket file; binding over it would fail.
        self.socket_path.unlink(missing_ok=True)
        if kind == "ferretdb":
            self._start_postgres()
        self.process = self._spawn(kind, binary)
        if self._wait_ready():
            self.uri = socket_uri(self.socket_path)
            return self.uri
        self.stop()
        tail = self.log_file.read_text(errors="replace")[-2000:]
        raise DatabaseStartError(f"{kind} did not start; end of {self.log_file}:\n{tail}")

    def _start_postgres(self) -> None:
        """The cluster behind FerretDB, unless PostgreSQL cannot be had (then FerretDB's SQLite)."""
        bin_dir = None if self.engine == "sqlite" else postgres.find_postgres()
        if bin_dir is None:
            if self.engine == "postgresql":
                raise NoDatabaseServer(postgres.INSTALL_HINT)
            missing = "" if self.engine == "sqlite" else f" {postgres.INSTALL_HINT}"
            log.warning("%s%s", SQLITE_WARNING, missing)
            self.postgres = None
            return
        if any(self.data_dir.glob("*.sqlite")):
            log.warning("%s holds data of FerretDB on SQLite from an older run; it is kept but not "
                        "used (FerretDB now runs on PostgreSQL, in %s/pg)", self.data_dir,
                        self.data_dir)  # fmt: skip
        if self.postgres is None:
            self.postgres = postgres.PostgresCluster(
                self.data_dir / "pg", bin_dir, self.log_file.with_name("postgres.log"),
                self._postgres_settings,
            )  # fmt: skip
        self.postgres.start()

    def _spawn(self, kind: str, binary: Path) -> subprocess.Popen[bytes]:
        socket_path = str(self.socket_path)
        if kind == "mongod":
            # Only the socket: a --bind_ip of nothing but a socket path opens no TCP listener; the
            # default socket (named after --port) goes to the same private folder. Untested here:
            # tests/test_devdb.py runs FerretDB.
            args = [str(binary), "--dbpath", str(self.data_dir), "--bind_ip", socket_path,
                    "--unixSocketPrefix", str(self.socket_path.parent),
                    "--filePermissions", "0700", "--quiet"]  # fmt: skip
        else:
            if self.postgres is not None:
                backend = ["--handler=postgresql", f"--postgresql-url={self.postgres.url}"]
            else:
                backend = ["--handler=sqlite", f"--sqlite-url=file:{self.data_dir}/"]
            args = [
                str(binary),
                *backend,
                f"--state-dir={self.data_dir}",
                "--listen-addr=",  # no TCP listener at all
                f"--listen-unix={socket_path}",
                "--debug-addr=-",  # no debug HTTP listener
                "--telemetry=disable",
                "--log-level=warn",
            ]
        log_fd = private_file(self.log_file, os.O_WRONLY | os.O_APPEND)
        try:
            process = subprocess.Popen(
                args, stdout=log_fd, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, preexec_fn=die_with_parent, umask=PRIVATE_UMASK,
            )  # fmt: skip
        finally:
            os.close(log_fd)
        with os.fdopen(private_file(self.pid_file, os.O_WRONLY | os.O_TRUNC), "w") as pid:
            pid.write(str(process.pid))
        return process

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                return False
            with (
                contextlib.suppress(OSError),
                socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe,
            ):
                probe.settimeout(0.5)
                probe.connect(str(self.socket_path))
                return True
            time.sleep(0.1)
        return False

    def pids(self) -> list[int]:
        """Every process of the database: FerretDB (or mongod), then PostgreSQL's, if any."""
        own = [self.process.pid] if self.process is not None and self.process.poll() is None else []
        return own + (self.postgres.pids() if self.postgres is not None else [])

    def stop(self) -> None:
        """FerretDB first (it is PostgreSQL's only client), then PostgreSQL."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.pid_file.unlink(missing_ok=True)
        if self.postgres is not None:
            self.postgres.stop()

    def _stop_leftover(self) -> None:
        """A server left by a run that died (pid file present): stop it, then start afresh.
        SIGTERM first, so it can flush; SIGKILL when it will not go. (PostgreSQL's leftover is
        handled by ``PostgresCluster``, from its own pid file.)"""
        pid = read_pid(self.pid_file)
        if pid is not None:
            sigs = (signal.SIGTERM, signal.SIGKILL)
            stop_leftover(pid, str(self.data_dir), sigs, STOP_TIMEOUT_SECONDS)
        self.pid_file.unlink(missing_ok=True)

    def __enter__(self) -> LocalDatabase:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args != ["ensure"]:
        print("usage: python -m cryptofiles.dev.database ensure", file=sys.stderr)
        return 2
    try:
        ensure_server()
    except NoDatabaseServer as exc:
        print(exc, file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as exc:
        print(f"Building FerretDB failed ({exc}); see the output above.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
