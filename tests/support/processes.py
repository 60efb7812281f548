"""Bounded waits, and what /proc says about processes and loopback connections (Linux)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path


def wait_until(check: Callable[[], bool], seconds: float, what: str, step: float = 0.2) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(step)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}")


def _socket_inode(server_port: int, client_port: int) -> int | None:
    """The inode of the server side of the loopback connection client_port -> server_port."""
    want_local = f"0100007F:{server_port:04X}"
    want_remote = f"0100007F:{client_port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == want_local and fields[2] == want_remote:
            return int(fields[9])
    return None


def worker_serving(workers: list[int], server_port: int, client_port: int) -> int | None:
    """Which worker holds the accepted connection that ``client_port`` opened."""
    inode = _socket_inode(server_port, client_port)
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in workers:
        for fd in Path(f"/proc/{pid}/fd").glob("*"):
            with contextlib.suppress(OSError):
                if os.readlink(fd) == target:
                    return pid
    return None


def thread_states(pid: int) -> set[str]:
    """The scheduler states (R, S, T, ...) of every thread of ``pid``, from /proc."""
    states = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            states.add((task / "stat").read_text().rpartition(")")[2].split()[0])
    return states


def is_gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.split(") ", 1)[1].startswith("Z")
