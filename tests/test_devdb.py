"""The development database (cryptofiles.dev.database): finding a server, and running FerretDB for real.

The LocalDatabase tests start the FerretDB binary that `make setup` builds into tools/, on each of
its engines: PostgreSQL (the default, whose server `make setup` installs) and SQLite (the fallback).
Without them they fail (on purpose: a silently skipped database test proves nothing). The
PostgreSQL-only rules (indexes, plan settings, the unprivileged user) are in test_devdb_postgres.py;
privacy and parent death in test_devdb_private.py.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymongo
import pytest

from cryptofiles.dev import database as devdb
from cryptofiles.dev.database import LocalDatabase, NoDatabaseServer

ROOT = Path(__file__).resolve().parents[1]


# -- helpers ------------------------------------------------------------------------------------


def pid_running(pid: int) -> bool:
    """True while ``pid`` is a live process (a zombie has exited: it only awaits reaping)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rpartition(")")[2].split()[0]
    return state not in ("Z", "X")


def wait_until(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@contextlib.contextmanager
def mongo(uri: str) -> Iterator[pymongo.MongoClient[dict[str, Any]]]:
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        uri, serverSelectionTimeoutMS=5000
    )
    try:
        yield client
    finally:
        client.close()


def ping(uri: str) -> float:
    with mongo(uri) as client:
        return float(client.admin.command("ping")["ok"])


def socket_of(uri: str) -> Path:
    """The Unix socket path of a ``mongodb://%2F...sock/`` URI."""
    host = uri.removeprefix("mongodb://").rstrip("/")
    assert host.startswith("%2F") and host.endswith(".sock"), f"not a Unix socket URI: {uri}"
    return Path(urllib.parse.unquote(host))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def modes_below(folder: Path) -> dict[str, int]:
    """Mode of every folder and regular file below ``folder`` (sockets are checked on their own)."""
    found = {}
    for path in folder.rglob("*"):
        kind = path.lstat().st_mode
        if stat.S_ISDIR(kind) or stat.S_ISREG(kind):
            found[str(path.relative_to(folder)) + ("/" if stat.S_ISDIR(kind) else "")] = mode(path)
    return found


def listening_addresses(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket that ``pid`` listens on, from /proc."""
    inodes = set()
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except FileNotFoundError:  # ended meanwhile (a short-lived backend): it listens on nothing
        return set()
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = set()
    for table in ("tcp", "tcp6"):
        lines = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A: LISTEN
                continue
            address_hex, port_hex = local.split(":")
            if table == "tcp":
                address = socket.inet_ntop(
                    socket.AF_INET, bytes.fromhex(address_hex)[::-1]
                )  # little-endian in /proc
            else:
                raw = bytes.fromhex(address_hex)
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                address = socket.inet_ntop(socket.AF_INET6, words)
            found.add((address, int(port_hex, 16)))
    return found


@dataclass
class Barren:
    """An environment with no database server: PATH without mongod/go, an empty tools dir."""

    bin_dir: Path
    tools: Path


@pytest.fixture
def barren(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Barren:
    bin_dir = tmp_path / "empty-bin"
    tools = tmp_path / "empty-tools"
    bin_dir.mkdir()
    tools.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("CRYPTOFILES_TOOLS_DIR", str(tools))
    monkeypatch.delenv("MONGODB_URI", raising=False)
    return Barren(bin_dir, tools)


@pytest.fixture
def ferretdb_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The tools dir holding the real FerretDB; PATH emptied so that a mongod is not preferred."""
    tools = Path(os.environ.get("CRYPTOFILES_TOOLS_DIR") or ROOT / "tools").resolve()
    binary = devdb.ferretdb_binary(tools)
    assert binary.is_file(), f"FerretDB is not built at {binary}: run `make setup` first"
    empty_bin = tmp_path / "no-mongod-bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))
    return tools


@pytest.fixture(params=["postgresql", "sqlite"])
def engine(request: pytest.FixtureRequest) -> str:
    """FerretDB's backend: each LocalDatabase test runs on both."""
    return str(request.param)


@pytest.fixture
def databases(ferretdb_tools: Path, engine: str) -> Iterator[Callable[[Path], LocalDatabase]]:
    """Make LocalDatabase objects; whatever a test leaves running is stopped afterwards."""
    made: list[LocalDatabase] = []

    def make(data_dir: Path) -> LocalDatabase:
        database = LocalDatabase(data_dir, tools=ferretdb_tools, engine=engine)
        made.append(database)
        return database

    yield make
    for database in reversed(made):
        database.stop()


# -- no server available ------------------------------------------------------------------------


def assert_names_the_ways_out(message: str) -> None:
    assert "MONGODB_URI" in message
    assert "mongod" in message
    assert "Go" in message and "make setup" in message


@pytest.mark.parametrize("via", ["argument", "environment"])
def test_find_server_without_any_server(barren: Barren, via: str) -> None:
    with pytest.raises(NoDatabaseServer) as raised:
        devdb.find_server(barren.tools if via == "argument" else None)
    assert_names_the_ways_out(str(raised.value))


def test_find_server_finds_ferretdb_in_tools(barren: Barren) -> None:
    binary = devdb.ferretdb_binary(barren.tools)
    binary.parent.mkdir(parents=True)
    binary.write_bytes(b"")
    assert devdb.find_server() == ("ferretdb", binary)


def test_find_server_prefers_mongod_on_path(barren: Barren) -> None:
    mongod = barren.bin_dir / "mongod"
    mongod.write_text("#!/bin/sh\nexit 1\n")
    mongod.chmod(0o755)
    assert devdb.find_server() == ("mongod", mongod)


@pytest.mark.parametrize("environ", [None, {}], ids=["process-environment", "empty-mapping"])
def test_ensure_server_without_any_server_raises(
    barren: Barren, environ: dict[str, str] | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(barren.tools)  # an empty environ means the default ./tools: none here
    with pytest.raises(NoDatabaseServer) as raised:
        devdb.ensure_server(environ, out=io.StringIO())
    assert_names_the_ways_out(str(raised.value))


def test_ensure_server_honours_the_environ_it_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The process environment has a server (a mongod stub, never run, and a FerretDB stub);
    # the environ handed to ensure_server has none. The latter is the one asked about.
    process_bin = tmp_path / "process-bin"
    process_bin.mkdir()
    (process_bin / "mongod").write_text("#!/bin/sh\nexit 1\n")
    (process_bin / "mongod").chmod(0o755)
    process_tools = tmp_path / "process-tools"
    stub = devdb.ferretdb_binary(process_tools)
    stub.parent.mkdir(parents=True)
    stub.write_bytes(b"")
    monkeypatch.setenv("PATH", str(process_bin))
    monkeypatch.setenv("CRYPTOFILES_TOOLS_DIR", str(process_tools))
    monkeypatch.delenv("MONGODB_URI", raising=False)
    (tmp_path / "bin").mkdir()
    (tmp_path / "tools").mkdir()
    environ = {"PATH": str(tmp_path / "bin"), "CRYPTOFILES_TOOLS_DIR": str(tmp_path / "tools")}

    with pytest.raises(NoDatabaseServer):
        devdb.ensure_server(environ, out=io.StringIO())


def test_ensure_server_with_uri_does_nothing(
    barren: Barren, monkeypatch: pytest.MonkeyPatch
) -> None:
    builds: list[object] = []
    monkeypatch.setattr(devdb, "build_ferretdb", lambda *a, **kw: builds.append((a, kw)))
    out = io.StringIO()
    devdb.ensure_server({"MONGODB_URI": "mongodb://db.example:27017/"}, out=out)
    assert builds == []
    assert "MONGODB_URI is set" in out.getvalue()
    assert list(barren.tools.iterdir()) == []


@pytest.mark.parametrize("tools_from", ["CRYPTOFILES_TOOLS_DIR", "cwd"])
def test_ensure_command_fails_fast_with_the_message(barren: Barren, tools_from: str) -> None:
    # The package is importable from the project root (an editable install is not assumed).
    env = {"PATH": str(barren.bin_dir), "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    if tools_from == "CRYPTOFILES_TOOLS_DIR":
        env["CRYPTOFILES_TOOLS_DIR"] = str(barren.tools)
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "cryptofiles.dev.database", "ensure"],
        env=env,
        cwd=barren.tools,  # an empty folder: no tools/ below it either
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert time.monotonic() - started < 15
    assert result.returncode == 1, result.stderr
    assert devdb.NO_SERVER_MESSAGE in result.stderr
    assert_names_the_ways_out(result.stderr)


@pytest.mark.parametrize("argv", [[], ["build"], ["ensure", "now"]])
def test_devdb_command_usage(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert devdb.main(argv) == 2
    assert "usage: python -m cryptofiles.dev.database ensure" in capsys.readouterr().err


# -- a real FerretDB ------------------------------------------------------------------------------


def test_two_servers_run_at_once(
    databases: Callable[[Path], LocalDatabase], tmp_path: Path
) -> None:
    first = databases(tmp_path / "one")
    second = databases(tmp_path / "two")
    first_uri, second_uri = first.start(), second.start()
    assert socket_of(first_uri) != socket_of(second_uri)
    assert ping(first_uri) == 1.0
    assert ping(second_uri) == 1.0
    assert first.process is not None and second.process is not None
    assert first.pid_file.read_text() == str(first.process.pid)
    assert second.pid_file.read_text() == str(second.process.pid)


def test_stop_ends_the_process(databases: Callable[[Path], LocalDatabase], tmp_path: Path) -> None:
    database = databases(tmp_path / "db")
    database.start()
    process = database.process
    assert process is not None and process.poll() is None
    assert database.pid_file.is_file()
    pids = database.pids()
    assert len(pids) > (0 if database.engine == "sqlite" else 2)
    database.stop()
    assert process.poll() is not None
    assert wait_until(lambda: not any(map(pid_running, pids)), 5)
    assert not database.pid_file.exists()
    assert database.process is None
    database.stop()  # stopping twice is harmless


def test_context_manager_starts_and_stops(
    ferretdb_tools: Path, tmp_path: Path, engine: str
) -> None:
    with LocalDatabase(tmp_path / "db", tools=ferretdb_tools, engine=engine) as database:
        process = database.process
        assert process is not None
        pids = database.pids()
        assert ping(database.uri) == 1.0
    assert process.poll() is not None
    assert wait_until(lambda: not any(map(pid_running, pids)), 5)


def test_data_persists_across_restarts(
    databases: Callable[[Path], LocalDatabase], tmp_path: Path
) -> None:
    data_dir = tmp_path / "db"
    database = databases(data_dir)
    kept: dict[str, Any] = {"_id": "kept", "value": 42}
    with mongo(database.start()) as client:
        client.persist.things.insert_one(dict(kept))
    database.stop()
    assert not database.pid_file.exists()

    again = databases(data_dir)
    with mongo(again.start()) as client:
        assert client.persist.things.find_one({"_id": "kept"}) == kept


def test_leftover_server_is_replaced(
    databases: Callable[[Path], LocalDatabase], tmp_path: Path
) -> None:
    data_dir = tmp_path / "db"
    crashed = databases(data_dir)
    crashed.start()
    old = crashed.process
    assert old is not None
    # The run that started it is "gone": nobody stops it, but (like init for an orphan) something
    # reaps it once it exits.
    reaper = threading.Thread(target=old.wait, daemon=True)
    reaper.start()
    old_pids = crashed.pids()
    if crashed.postgres is not None:  # its PostgreSQL is left running too
        postmaster = crashed.postgres.process
        assert postmaster is not None
        threading.Thread(target=postmaster.wait, daemon=True).start()
    crashed.process = crashed.postgres = None  # forgotten: only the next start can stop them

    fresh = databases(data_dir)
    started = time.monotonic()
    uri = fresh.start()
    assert time.monotonic() - started < 5
    reaper.join(5)
    assert not pid_running(old.pid)
    assert old.returncode is not None
    assert fresh.process is not None and fresh.process.pid != old.pid
    assert fresh.pid_file.read_text() == str(fresh.process.pid)
    assert ping(uri) == 1.0
    assert wait_until(lambda: not any(map(pid_running, old_pids)), 5)
    assert not set(old_pids) & set(fresh.pids())


@pytest.fixture
def bystander(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A process unrelated to any database (its command line does not name the data dir)."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process
    process.kill()
    process.wait()


@pytest.mark.parametrize("pid_text", ["bystander", "not a pid", "", "999999999"])
def test_stale_pid_file_harms_no_one(
    databases: Callable[[Path], LocalDatabase],
    tmp_path: Path,
    bystander: subprocess.Popen[bytes],
    pid_text: str,
) -> None:
    data_dir = tmp_path / "db"
    data_dir.mkdir()
    (data_dir / "server.pid").write_text(
        str(bystander.pid) if pid_text == "bystander" else pid_text
    )
    database = databases(data_dir)
    assert ping(database.start()) == 1.0
    assert bystander.poll() is None  # the pid was not one of ours: left alone
    assert database.process is not None
    assert database.pid_file.read_text() == str(database.process.pid)


def test_stubborn_leftover_is_killed(
    databases: Callable[[Path], LocalDatabase], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(devdb, "STOP_TIMEOUT_SECONDS", 1)
    data_dir = tmp_path / "db"
    data_dir.mkdir()
    # A "server" of this data dir that ignores SIGTERM (as a hung or slow-to-flush server would).
    script = (
        "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)"
    )
    stubborn = subprocess.Popen(
        [sys.executable, "-c", script, str(data_dir.resolve())], stdout=subprocess.PIPE
    )
    try:
        assert stubborn.stdout is not None
        assert stubborn.stdout.readline() == b"ready\n"
        (data_dir / "server.pid").write_text(str(stubborn.pid))
        database = databases(data_dir)
        database.start()
        assert not pid_running(stubborn.pid)
    finally:
        stubborn.kill()
        stubborn.wait()
        assert stubborn.stdout is not None
        stubborn.stdout.close()
