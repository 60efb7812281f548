"""Process measurements from /proc: process trees, CPU seconds, and RSS sampled in a thread."""

from __future__ import annotations

import contextlib
import itertools
import os
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")
SAMPLE_INTERVAL = 0.05


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


def rss_kib(pid: int) -> int:
    return status_kib(pid, "VmRSS")


def pss_kib(pid: int) -> int:
    """Proportional set size in KiB (0 once gone): shared pages divided among the processes that
    map them, so that a sum over processes sharing memory (PostgreSQL's backends and its shared
    buffers) counts each page once, where a sum of VmRSS counts it in every process."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
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

    def __init__(
        self, groups: dict[str, Callable[[], list[int]]], kib: Callable[[int], int] = rss_kib
    ) -> None:
        self.groups = groups
        self.kib = kib  # what is summed: VmRSS by default, or pss_kib
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
                kib = self.kib(pid)
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


def idle_mib(
    groups: dict[str, Callable[[], list[int]]], seconds: float = 1.0,
    kib: Callable[[int], int] = rss_kib,
) -> dict[str, float]:  # fmt: skip
    """Median summed RSS (or what ``kib`` reads) of each group over ``seconds`` of quiet."""
    sampler = RssSampler(groups, kib)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        sampler.sample_once()
        time.sleep(SAMPLE_INTERVAL)
    return {g: statistics.median(k for _, k in s) / 1024 for g, s in sampler.samples.items()}


def stat_ppid(pid: int) -> int:
    try:
        return int(_stat_fields(pid)[1])
    except (OSError, ValueError, IndexError):
        return -1


def status_meminfo(field: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0
