"""The private PostgreSQL cluster behind FerretDB: found, installed, initialised, started, stopped.

The cluster lives in the data folder (``<data>/pg``, 0700), made once by ``initdb`` and reused by
every later run. It listens on a Unix socket only (``listen_addresses=''``), in ``<data>/pg/socket``
(0700, socket 0700), with ``trust`` authentication: whoever can reach that socket is the database's
superuser, so reaching it is the access check, as for FerretDB's own socket.

PostgreSQL refuses to run as root. When we are root, ``initdb`` and ``postgres`` run as the
``postgres`` OS user (Debian's package creates it), and the cluster folder is that user's (0700).
That user could not pass the folders above it (the data folder, ``var/`` and pytest's temporary
folders are 0700 root), and we change none of them: we open the cluster folder (as root), hand the
open descriptor to each PostgreSQL program, and give it ``-D /proc/self/fd/<n>``: a path the kernel
resolves through the descriptor, without walking the folders above. Its children inherit the
descriptor (and the postmaster works inside the cluster); clients (FerretDB, ``psql``, as root or
ourselves) reach the socket as ``/proc/<postmaster>/cwd/socket``, which is also short enough for a
socket address however deep the data folder is. So the data folder stays 0700, and only root and
the ``postgres`` user (and anything running as it, e.g. a distribution's own cluster) can read the
cluster; root can read everything anyway. When we are not root, everything runs as ourselves, the same way.
"""

from __future__ import annotations

import contextlib
import functools
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from cryptofiles.dev.daemons import (
    PRIVATE_UMASK,
    DatabaseStartError,
    children_of,
    die_with_parent,
    is_gone,
    private_file,
    read_pid,
    signal_and_wait,
)
from cryptofiles.dev.packages import apt_install
from cryptofiles.dev.pgindexes import PLAN_SETTINGS, install_sql

POSTGRES_ROOTS = (Path("/usr/lib/postgresql"),)  # Debian/Ubuntu: /usr/lib/postgresql/<major>/bin
PROGRAMS = ("initdb", "postgres", "psql", "pg_isready")
OS_USER = "postgres"  # who runs the cluster when we are root
SUPERUSER = "postgres"  # the cluster's superuser role, whoever runs it
DATABASE = "ferretdb"  # FerretDB's database: each MongoDB database is a schema in it
PORT = "5432"  # only names the socket file (.s.PGSQL.5432); nothing listens on TCP
SOCKET_FOLDER = "socket"
START_TIMEOUT_SECONDS = 30
STOP_TIMEOUT_SECONDS = 10
CONFIG_NAME = "cryptofiles.conf"
# A full disk: PostgreSQL fails a write that cannot extend a table (an error, the app answers 507),
# but stops altogether when it cannot create its next WAL segment, and cannot even recover until
# space is freed. So WAL segments are kept in reserve: small ones (1 MiB, not 16), WAL_RESERVE_MB
# of them made at each start and recycled by every checkpoint (min_wal_size), so that writes in
# flight when the disk fills find a segment ready.
WAL_SEGMENT_MB = 1
WAL_RESERVE_MB = 16
# The space a failed upload took (its chunks, rolled back: dead rows) is reusable only once vacuumed,
# and WAL segments are recycled only by a checkpoint: both soon, so that freeing disk space lets
# uploads work again within seconds.
WAL_SETTINGS = {
    "min_wal_size": f"{2 * WAL_RESERVE_MB}MB", "max_wal_size": "64MB",
    "autovacuum_naptime": "1s", "checkpoint_timeout": "30s",
}  # fmt: skip
RESERVE_WAL = (
    "CREATE TABLE IF NOT EXISTS cryptofiles_wal_reserve (); DROP TABLE cryptofiles_wal_reserve;\n"
    "SELECT pg_switch_wal();\n"
) * WAL_RESERVE_MB + "CHECKPOINT;\n"
CREATE_DATABASE = (  # psql's \gexec runs the CREATE only when the database is missing
    "SELECT 'CREATE DATABASE ferretdb' WHERE NOT EXISTS "
    "(SELECT FROM pg_database WHERE datname = 'ferretdb')\\gexec"
)
INSTALL_HINT = (
    "PostgreSQL's server programs (initdb, postgres, psql, pg_isready) were not found. "
    "Install them - Debian/Ubuntu: `sudo apt-get install postgresql`; "
    "Fedora: `sudo dnf install postgresql-server`; macOS: `brew install postgresql` - "
    "then run `make setup` again. As root, PostgreSQL runs as the `postgres` OS user, "
    "which those packages create."
)


def _version(bin_dir: Path) -> tuple[int, ...]:
    name = bin_dir.parent.name
    return tuple(int(p) for p in name.split(".") if p.isdigit())


def find_postgres(path: str | None = None, roots: tuple[Path, ...] | None = None) -> Path | None:
    """The folder of PostgreSQL's server programs: from PATH (``initdb``, symlinks resolved), else
    the newest ``<root>/<major>/bin``. None when there is none."""
    candidates = []
    initdb = shutil.which("initdb", path=path)
    if initdb:
        candidates.append(Path(initdb).resolve().parent)
    for root in POSTGRES_ROOTS if roots is None else roots:
        candidates += sorted(root.glob("*/bin"), key=_version, reverse=True)
    if os.geteuid() == 0 and not _has_user(OS_USER):
        return None  # PostgreSQL will not run as root, and there is no one else to run it as
    for folder in candidates:
        if all((folder / program).is_file() for program in PROGRAMS):
            return folder
    return None


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def install_postgres(out: IO[str] = sys.stderr) -> bool:
    """``apt-get install postgresql`` when we may (root, apt-get present); True if it worked."""
    return apt_install(["postgresql"], "PostgreSQL's server", out)


class PostgresCluster:
    """A PostgreSQL server on its own cluster folder and socket folder, for FerretDB alone."""

    def __init__(
        self, folder: Path, bin_dir: Path, log_file: Path, settings: Mapping[str, str] | None = None
    ) -> None:
        self.folder = folder
        self.bin_dir = bin_dir
        self.log_file = log_file
        self.settings = {**PLAN_SETTINGS, **WAL_SETTINGS, **(settings or {})}
        self.process: subprocess.Popen[bytes] | None = None
        self.owner = pwd.getpwnam(OS_USER) if os.geteuid() == 0 else None

    @property
    def socket_dir(self) -> str:
        """The socket folder as clients reach it: through the running postmaster's directory."""
        assert self.process is not None, "PostgreSQL is not running"
        return f"/proc/{self.process.pid}/cwd/{SOCKET_FOLDER}"

    @property
    def url(self) -> str:
        """FerretDB's ``--postgresql-url``: the socket folder as ``host``."""
        return f"postgres://{SUPERUSER}@/{DATABASE}?host={self.socket_dir}"

    def start(self) -> None:
        self._prepare()
        self._stop_leftover()
        self.process = self._spawn()
        self._wait_ready()
        self.psql("postgres", CREATE_DATABASE)
        self.psql(DATABASE, install_sql())
        self.psql("postgres", RESERVE_WAL)

    def _own(self, path: Path) -> None:
        if self.owner is not None:
            os.chown(path, self.owner.pw_uid, self.owner.pw_gid)

    def _prepare(self) -> None:
        if not (self.folder / "PG_VERSION").is_file():
            self._initdb()
        sockets = self.folder / SOCKET_FOLDER
        sockets.mkdir(mode=0o700, exist_ok=True)
        self._own(sockets)
        sockets.chmod(0o700)
        # Rewritten at each start, so that a reused cluster gets today's settings.
        config = self.folder / CONFIG_NAME
        config.write_text("".join(f"{k} = '{v}'\n" for k, v in self.settings.items()))
        config.chmod(0o600)
        self._own(config)

    def _initdb(self) -> None:
        # Into a side folder first: only a complete cluster is ever taken for one.
        partial = self.folder.with_name(self.folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(mode=0o700, parents=True)
        self._own(partial)
        with self._handed(partial) as (here, how):
            args = [str(self.bin_dir / "initdb"), "-D", here, "-A", "trust", "-U", SUPERUSER,
                    "-E", "UTF8", "--locale=C", f"--wal-segsize={WAL_SEGMENT_MB}"]  # fmt: skip
            done = subprocess.run(
                args, **how, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                check=False, timeout=120,
            )  # fmt: skip
        if done.returncode != 0:
            raise DatabaseStartError(f"initdb failed:\n{done.stdout[-2000:]}")
        with (partial / "postgresql.conf").open("a") as conf:
            conf.write(f"\ninclude_if_exists = '{CONFIG_NAME}'  # written at each start\n")
        shutil.rmtree(self.folder, ignore_errors=True)
        partial.rename(self.folder)

    @contextlib.contextmanager
    def _handed(self, folder: Path) -> Iterator[tuple[str, dict[str, Any]]]:
        """``folder`` as ``/proc/self/fd/<n>`` for a program, and the Popen arguments that hand it
        the descriptor and run it as the owner, umask 077 (see the module's docstring)."""
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        how: dict[str, Any] = {"cwd": "/", "umask": PRIVATE_UMASK, "pass_fds": (fd,)}
        if self.owner is not None:
            how.update(user=self.owner.pw_uid, group=self.owner.pw_gid, extra_groups=[])
        try:
            yield f"/proc/self/fd/{fd}", how
        finally:
            os.close(fd)

    def _spawn(self) -> subprocess.Popen[bytes]:
        log = private_file(self.log_file, os.O_WRONLY | os.O_APPEND)
        try:
            with self._handed(self.folder) as (here, how):
                args = [str(self.bin_dir / "postgres"), "-D", here, "-p", PORT,
                        "-c", "listen_addresses=",
                        "-c", f"unix_socket_directories={here}/{SOCKET_FOLDER}",
                        "-c", "unix_socket_permissions=0700"]  # fmt: skip
                return subprocess.Popen(
                    args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True, **how,
                    # SIGINT is PostgreSQL's fast shutdown; a smart one (SIGTERM) waits for clients.
                    preexec_fn=functools.partial(die_with_parent, signal.SIGINT),
                )  # fmt: skip
        finally:
            os.close(log)

    def _wait_ready(self) -> None:
        # PostgreSQL accepts connections before it accepts sessions; pg_isready tells them apart.
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        ready = [str(self.bin_dir / "pg_isready"), "-q", "-h", self.socket_dir, "-p", PORT,
                 "-U", SUPERUSER, "-d", "postgres"]  # fmt: skip
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                break
            if subprocess.run(ready, check=False).returncode == 0:
                return
            time.sleep(0.05)
        self.stop()
        tail = self.log_file.read_text(errors="replace")[-2000:]
        raise DatabaseStartError(f"PostgreSQL did not start; end of {self.log_file}:\n{tail}")

    def psql(self, database: str, sql: str) -> str:
        """Run ``sql`` with PostgreSQL's own client, as the cluster's superuser; its output."""
        args = [str(self.bin_dir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                "-h", self.socket_dir, "-p", PORT, "-U", SUPERUSER, "-d", database]  # fmt: skip
        done = subprocess.run(args, input=sql, capture_output=True, text=True, check=False,
                              timeout=60)  # fmt: skip
        if done.returncode != 0:
            raise DatabaseStartError(f"psql on {database} failed: {done.stderr.strip()[-2000:]}")
        return done.stdout

    def pids(self) -> list[int]:
        """The postmaster and its children (every process of this cluster)."""
        if self.process is None or self.process.poll() is not None:
            return []
        return [self.process.pid, *children_of(self.process.pid)]

    def kill(self) -> None:
        """kill -9 every process of the cluster (a crash), and wait until each one is gone."""
        pids = self.pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):  # a backend that just ended
                os.kill(pid, signal.SIGKILL)
        if self.process is not None:
            self.process.wait(STOP_TIMEOUT_SECONDS)
        self.process = None
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        while not all(map(is_gone, pids)) and time.monotonic() < deadline:
            time.sleep(0.02)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        with_children = [process.pid, *children_of(process.pid)]
        for sig in (signal.SIGINT, signal.SIGQUIT):  # fast shutdown, then immediate
            process.send_signal(sig)
            try:
                process.wait(STOP_TIMEOUT_SECONDS)
                break
            except subprocess.TimeoutExpired:
                continue
        else:
            for pid in with_children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            process.wait()

    def _stop_leftover(self) -> None:
        """A postmaster left by a run that died: its pid is in postmaster.pid, and it runs inside
        our cluster folder. Fast shutdown, then immediate, then SIGKILL; its children must be gone
        too, or PostgreSQL refuses to start on shared memory still in use."""
        pid = read_pid(self.folder / "postmaster.pid")
        if pid is None or is_gone(pid):
            return
        try:
            inside = Path(os.readlink(f"/proc/{pid}/cwd")) == self.folder.resolve()
        except OSError:
            return
        if not inside:
            return  # that pid is now someone else's
        children = children_of(pid)
        for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGKILL):
            if not signal_and_wait(pid, sig, STOP_TIMEOUT_SECONDS):
                break
        else:
            raise DatabaseStartError(
                f"a leftover PostgreSQL (pid {pid}) on {self.folder} won't stop"
            )
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        while not all(map(is_gone, children)) and time.monotonic() < deadline:
            time.sleep(0.05)
