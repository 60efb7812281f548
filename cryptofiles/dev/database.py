"""The local database for development and tests: a real MongoDB-wire server on a private Unix socket.

Used only when ``MONGODB_URI`` is not set. In order of preference: ``mongod`` on PATH, else FerretDB
1.24 on its embedded SQLite backend, built from source with Go by
``python -m cryptofiles.dev.database ensure`` (which ``make`` runs) into the git-ignored ``tools/``
folder. Never an in-process fake: a test that passes against a fake proves nothing about MongoDB.

Why FerretDB is built from its module source and not with a bare ``go install ...@v1.24.2``: such a
binary panics at start-up ("Invalid build/version/version.txt file content"), because FerretDB 1.x
reads its version from a file its release build generates (upstream issue FerretDB#2982). We fetch the
same module through the Go module proxy, add that one file, as upstream's message says to, and build.

The server is the owner's alone: it runs with umask 077 (data folder 0700, every file 0600; what an
older run left is chmodded at start) and listens on a Unix socket in that 0700 folder, never on a TCP
port. The server has no authentication, so a loopback port let any local user read or rewrite every
record (a replaced password hash was a login as its owner); the folder's mode is now the access check.
Root and processes of the same OS user can still read everything.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.parse
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

FERRETDB_MODULE = "github.com/FerretDB/FerretDB"
FERRETDB_VERSION = "v1.24.2"
START_TIMEOUT_SECONDS = 30
STOP_TIMEOUT_SECONDS = 10
SOCKET_NAME = "server.sock"  # pymongo takes a host ending in .sock for a Unix socket path
# sun_path holds 108 bytes with the closing NUL; a longer path cannot be bound or connected to.
MAX_SOCKET_PATH_BYTES = 107
PRIVATE_UMASK = 0o077  # what the server creates: folders 0700, files 0600

NO_SERVER_MESSAGE = (
    "No MongoDB server is available. Any one of these fixes it:\n"
    "  1. set MONGODB_URI to a MongoDB server you run (e.g. mongodb://127.0.0.1:27017/);\n"
    "  2. put `mongod` on PATH (the project then starts its own on a free port);\n"
    "  3. install Go (https://go.dev/doc/install) and run `make setup`: it builds FerretDB "
    f"{FERRETDB_VERSION[1:]} into tools/."
)


class NoDatabaseServer(RuntimeError):
    """Neither a URI, nor ``mongod``, nor FerretDB (nor Go to build it) is available."""


class DatabaseStartError(RuntimeError):
    """The local server did not start; the message carries the end of its log."""


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


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def die_with_parent() -> None:
    # Linux: the server gets SIGTERM when the process that started it dies, even by SIGKILL, so a
    # crashed `make run` or test run never leaves a database behind.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _signal_and_wait(pid: int, sig: int, seconds: float) -> bool:
    """Send ``sig``; True if the process is still running ``seconds`` later."""
    try:
        os.kill(pid, sig)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            os.kill(pid, 0)
            if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
                return False  # a zombie: dead, only waiting for its parent to collect it
            time.sleep(0.1)
    except (ProcessLookupError, FileNotFoundError):
        return False
    return True


def socket_uri(path: Path) -> str:
    """The MongoDB URI of a Unix socket: its path percent-encoded as the host."""
    return f"mongodb://{urllib.parse.quote(str(path), safe='')}/"


def make_private(folder: Path) -> None:
    """``folder`` and every folder below it 0700, every file 0600: what a run before this rule (or
    with a looser umask) left behind is closed too. Links are not followed."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root, name)
            mode = path.lstat().st_mode
            if stat.S_ISDIR(mode):
                path.chmod(0o700)
            elif stat.S_ISREG(mode):
                path.chmod(0o600)


def _private_file(path: Path, flags: int) -> int:
    """An fd on ``path`` opened with ``flags``, created 0600 whatever our umask, and 0600 if older."""
    fd = os.open(path, flags | os.O_CREAT, 0o600)
    os.fchmod(fd, 0o600)
    return fd


class LocalDatabase:
    """A database server process on a Unix socket, with its data in ``data_dir``.

    The socket is ``data_dir/server.sock`` when that path fits in a socket address, else a socket in
    a private temporary folder (0700, made by ``tempfile.mkdtemp``) that this object keeps for its
    whole life, so that a restart keeps the URI, and removes when it is collected or at exit.
    """

    def __init__(self, data_dir: Path, *, tools: Path | None = None) -> None:
        self.data_dir = data_dir.resolve()
        self.tools = tools
        self.process: subprocess.Popen[bytes] | None = None
        self.uri = ""
        self._socket_path: Path | None = None

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "server.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "server.log"

    @property
    def socket_path(self) -> Path:
        if self._socket_path is None:
            path = self.data_dir / SOCKET_NAME
            if len(os.fsencode(path)) > MAX_SOCKET_PATH_BYTES:
                # Deep temp folders of test runs overflow sun_path. mkdtemp's folder is 0700 and
                # unpredictable, so no other user can have prepared it.
                folder = Path(tempfile.mkdtemp(prefix="cryptofiles-db-"))
                weakref.finalize(self, shutil.rmtree, folder, True)
                path = folder / SOCKET_NAME
            self._socket_path = path
        return self._socket_path

    def start(self) -> str:
        kind, binary = find_server(self.tools)
        make_private(self.data_dir)
        self.socket_path.parent.chmod(0o700)
        self._stop_leftover()
        # A server killed with -9 leaves its socket file; binding over it would fail.
        self.socket_path.unlink(missing_ok=True)
        self.process = self._spawn(kind, binary)
        if self._wait_ready():
            self.uri = socket_uri(self.socket_path)
            return self.uri
        self.stop()
        tail = self.log_file.read_text(errors="replace")[-2000:]
        raise DatabaseStartError(f"{kind} did not start; end of {self.log_file}:\n{tail}")

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
            args = [
                str(binary),
                "--handler=sqlite",
                f"--sqlite-url=file:{self.data_dir}/",
                f"--state-dir={self.data_dir}",
                "--listen-addr=",  # no TCP listener at all
                f"--listen-unix={socket_path}",
                "--debug-addr=-",  # no debug HTTP listener
                "--telemetry=disable",
                "--log-level=warn",
            ]
        log = _private_file(self.log_file, os.O_WRONLY | os.O_APPEND)
        try:
            process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, preexec_fn=die_with_parent, umask=PRIVATE_UMASK,
            )  # fmt: skip
        finally:
            os.close(log)
        with os.fdopen(_private_file(self.pid_file, os.O_WRONLY | os.O_TRUNC), "w") as pid:
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

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.pid_file.unlink(missing_ok=True)

    def _stop_leftover(self) -> None:
        """A server left by a run that died (pid file present): stop it, then start afresh."""
        try:
            pid = int(self.pid_file.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return
        if str(self.data_dir).encode() in cmdline:
            # SIGTERM first, so it can flush; SIGKILL when it will not go. Two servers on one data
            # directory would corrupt it, so one that survives even SIGKILL stops us.
            for sig in (signal.SIGTERM, signal.SIGKILL):
                if not _signal_and_wait(pid, sig, STOP_TIMEOUT_SECONDS):
                    break
            else:
                raise DatabaseStartError(
                    f"a leftover server (pid {pid}) on {self.data_dir} won't stop"
                )
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
