"""The development database is the owner's alone, and dies with its parent (cryptofiles.dev.database).

Split from test_devdb.py (its helpers and fixtures are imported from there); every LocalDatabase test
here runs on both engines, FerretDB on PostgreSQL and on SQLite.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cryptofiles.dev import database as devdb
from cryptofiles.dev.database import LocalDatabase
from tests import test_devdb as shared
from tests.test_devdb import (
    ROOT,
    listening_addresses,
    mode,
    modes_below,
    mongo,
    pid_running,
    ping,
    socket_of,
    wait_until,
)

# The fixtures shared with test_devdb.py (pytest finds a fixture by its name in the module).
ferretdb_tools = shared.ferretdb_tools
engine = shared.engine
databases = shared.databases

# -- the database is the owner's alone (issue 9, item 9) ------------------------------------------


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """The usual umask 022, whatever the test run's: files the server creates are then 0644 unless
    the server's start-up makes them private itself."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_listens_on_no_tcp_port(databases: Callable[[Path], LocalDatabase], tmp_path: Path) -> None:
    database = databases(tmp_path / "db")
    uri = database.start()
    assert database.process is not None
    # No TCP listener of any address: the server has no authentication, and anyone on the host
    # can reach a loopback port. The same for every process of PostgreSQL behind it.
    for pid in database.pids():
        assert listening_addresses(pid) == set(), pid
    # Its one way in is the Unix socket of the URI, which a client that knows it uses as is.
    path = socket_of(uri)
    assert stat.S_ISSOCK(path.lstat().st_mode)
    assert ping(uri) == 1.0


def test_data_dir_and_files_are_private(
    ferretdb_tools: Path, tmp_path: Path, loose_umask: None
) -> None:
    data_dir = tmp_path / "db"
    database = LocalDatabase(data_dir, tools=ferretdb_tools, engine="sqlite")

    def write(uri: str, name: str) -> None:
        with mongo(uri) as client:  # a new database is a new SQLite file (with WAL and shm)
            client[name].things.insert_many([{"n": i, "pad": "x" * 1000} for i in range(200)])
            client[name].things.create_index("n")

    def check(uri: str, *databases: str) -> None:
        assert mode(data_dir) == 0o700
        below = modes_below(data_dir)
        assert {"server.log", "server.pid", *(f"{d}.sqlite" for d in databases)} <= set(below)
        wrong = {k: m for k, m in below.items() if m != (0o700 if k.endswith("/") else 0o600)}
        assert wrong == {}
        assert mode(socket_of(uri).parent) == 0o700

    try:
        uri = database.start()
        check(uri)
        write(uri, "first")
        check(uri, "first")
    finally:
        database.stop()

    # What a run before this rule left: a 0755 folder of 0644 files. The next start closes them.
    for path in data_dir.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    data_dir.chmod(0o755)
    try:
        uri = database.start()
        check(uri, "first")
        write(uri, "second")
        check(uri, "first", "second")
    finally:
        database.stop()


def test_long_data_dir_gets_a_short_private_socket_folder(
    ferretdb_tools: Path, tmp_path: Path, engine: str
) -> None:
    data_dir = tmp_path / ("d" * 100) / "db"  # data_dir/server.sock overflows a socket address
    database = LocalDatabase(data_dir, tools=ferretdb_tools, engine=engine)
    try:
        uri = database.start()
        path = socket_of(uri)
        assert len(os.fsencode(path)) <= devdb.MAX_SOCKET_PATH_BYTES
        assert path.parent != data_dir
        assert mode(path.parent) == 0o700 and path.parent.stat().st_uid == os.getuid()
        assert ping(uri) == 1.0
        database.stop()
        assert database.start() == uri  # a restart in place keeps the address
        assert ping(uri) == 1.0
    finally:
        database.stop()
    folder = path.parent
    del database  # the private folder goes with the object that made it
    assert not folder.exists()


OTHER_USER_SCRIPT = """
import socket, sys, urllib.parse
target, files = sys.argv[1], sys.argv[2:]
if target.startswith("%2F"):
    sock, address = socket.socket(socket.AF_UNIX), urllib.parse.unquote(target)
else:
    host, _, port = target.rpartition(":")
    sock, address = socket.socket(), (host, int(port))
try:
    sock.connect(address)
    print("connected")
except OSError as exc:
    print("connect refused:", type(exc).__name__)
for name in files:
    try:
        open(name, "rb").close()
        print("read", name)
    except OSError as exc:
        print("read refused:", type(exc).__name__)
"""


NOBODY = 65534


def as_nobody(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, user=NOBODY, group=NOBODY, extra_groups=[], cwd="/",
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def python_for_nobody() -> str:
    """A Python interpreter that user nobody may run (ours may live under a private home)."""
    candidates = [os.path.realpath(sys.executable), "/usr/local/bin/python3", "/usr/bin/python3"]
    for candidate in candidates:
        with contextlib.suppress(OSError):
            if as_nobody([candidate, "-I", "-c", "pass"]).returncode == 0:
                return candidate
    pytest.skip("no Python interpreter that user nobody may run")


def test_another_local_user_can_neither_connect_nor_read(
    databases: Callable[[Path], LocalDatabase], tmp_path: Path, loose_umask: None
) -> None:
    if os.geteuid() != 0:
        pytest.skip("acting as another user needs root; the mode tests above hold the same rule")
    tmp_path.chmod(0o755)  # the way to the data dir is open, as the project folder's is
    data_dir = tmp_path / "db"
    database = databases(data_dir)
    uri = database.start()
    with mongo(uri) as client:
        client.victim.users.insert_one({"_id": "alice", "hash": "scrypt:..."})
    files = [str(p) for p in data_dir.rglob("*") if p.is_file()]
    target = uri.removeprefix("mongodb://").rstrip("/")
    result = as_nobody([python_for_nobody(), "-I", "-c", OTHER_USER_SCRIPT, target, *files])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "connect refused: PermissionError", result.stdout
    assert lines[1:] == ["read refused: PermissionError"] * len(files), result.stdout


PARENT_SCRIPT = """
import sys, time
from pathlib import Path
from cryptofiles.dev.database import LocalDatabase

database = LocalDatabase(Path(sys.argv[1]), tools=Path(sys.argv[2]), engine=sys.argv[3])
database.start()
print(*database.pids(), flush=True)
time.sleep(60)
"""


def test_server_dies_with_its_parent(ferretdb_tools: Path, tmp_path: Path, engine: str) -> None:
    data_dir = tmp_path / "db"
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT_SCRIPT, str(data_dir), str(ferretdb_tools), engine],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    server_pid, behind = 0, []
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline()
        assert line.split() and all(p.isdigit() for p in line.split()), (
            f"the parent script did not start the server: {line!r}"
        )
        server_pid, *behind = map(int, line.split())  # FerretDB, then PostgreSQL's processes
        assert server_pid == int((data_dir / "server.pid").read_text())
        assert len(behind) >= (0 if engine == "sqlite" else 2)
        assert all(map(pid_running, [server_pid, *behind]))

        parent.send_signal(signal.SIGKILL)
        parent.wait(5)
        assert wait_until(lambda: not pid_running(server_pid), 5), "FerretDB outlived its parent"
        gone = wait_until(lambda: not any(map(pid_running, behind)), 10)
        assert gone, "PostgreSQL outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        assert parent.stdout is not None
        parent.stdout.close()
        for pid in ([server_pid] if server_pid else []) + behind:
            if pid_running(pid):
                os.kill(pid, signal.SIGKILL)
