"""The processes of the local database: private files, death with the parent, leftovers, /proc.

Shared by ``database.py`` (FerretDB or mongod) and ``postgres.py`` (the PostgreSQL behind FerretDB).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import stat
import time
from collections.abc import Iterable
from pathlib import Path

PRIVATE_UMASK = 0o077  # what the servers create: folders 0700, files 0600


class NoDatabaseServer(RuntimeError):
    """Neither a URI, nor ``mongod``, nor FerretDB (nor Go to build it) is available."""


class DatabaseStartError(RuntimeError):
    """The local server did not start; the message carries the end of its log."""


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    # Linux: the server gets ``sig`` when the process that started it dies, even by SIGKILL, so a
    # crashed `make run` or test run never leaves a database behind. Called after any change of
    # user (subprocess runs preexec_fn last), which would otherwise clear the setting.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, sig)  # PR_SET_PDEATHSIG


def is_gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie only waits for its parent to collect it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


def signal_and_wait(pid: int, sig: int, seconds: float) -> bool:
    """Send ``sig``; True if the process is still running ``seconds`` later."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if is_gone(pid):
            return False
        time.sleep(0.05)
    return not is_gone(pid)


def children_of(pid: int) -> list[int]:
    """The live child processes of ``pid`` (PostgreSQL's backends of its postmaster), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
            if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
                found.append(int(entry.name))
    return found


def stop_leftover(pid: int, marker: str, signals: Iterable[int], seconds: float) -> None:
    """Stop process ``pid`` if its command line names ``marker`` (our data folder): a server left by
    a run that died. Anything else with that pid is left alone. One that survives every signal stops
    us: two servers on one data folder would corrupt it."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return
    if marker.encode() not in cmdline:
        return
    for sig in signals:
        if not signal_and_wait(pid, sig, seconds):
            return
    raise DatabaseStartError(f"a leftover server (pid {pid}) on {marker} won't stop")


def read_pid(path: Path) -> int | None:
    """The pid on the first line of a pid file; None when absent or not a number."""
    try:
        return int(path.read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def make_private(folder: Path) -> None:
    """``folder`` and every folder below it 0700, every file 0600: what a run before this rule (or
    with a looser umask) left behind is closed too. Links are not followed."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root, name)
            with contextlib.suppress(FileNotFoundError):  # a server's temporary file, gone
                mode = path.lstat().st_mode
                if stat.S_ISDIR(mode):
                    path.chmod(0o700)
                elif stat.S_ISREG(mode):
                    path.chmod(0o600)


def private_file(path: Path, flags: int) -> int:
    """An fd on ``path`` opened with ``flags``, created 0600 whatever our umask, and 0600 if older."""
    fd = os.open(path, flags | os.O_CREAT, 0o600)
    os.fchmod(fd, 0o600)
    return fd
