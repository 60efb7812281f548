"""Rows flat_*: does a request cost the same whatever OTHER users store? (issue 14, point 2)

One server on a fresh database. The measuring user ("me", registered through the API) uploads,
through the API, an 8 MiB file and a few small files. Other users' data is then written straight
into the collections (``bench/fill.py``): first the small store (64 MiB of chunks in 16 MiB files,
1,000 file records; ``--quick``: 8 MiB, 200), then, after the first measurement, the large store
(2 GiB, 100,000 records; ``--quick``: 128 MiB, 2,000). Each operation is timed at both sizes by the
same user on the same files, repetitions of the five operations interleaved; the row's value is its
rate at the large store, its baseline the rate at the small store, and the ratio large/small
(goal ≥ 0.8: the cost does not depend on what others stored).

Then, on the same server and store, the random-access rows (``bench/ranges.py``).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from typing import Any

from bench.client import http_download, http_upload, request
from bench.common import MiB, log
from bench.fill import Filler
from bench.ranges import RANGE_ROWS, range_rows
from bench.report import Goal, Row
from bench.sampling import cpu_seconds
from bench.session import Bench

SMALL_FILE = 4 * 1024
OWN_SMALL_FILES = 20  # the measuring user's own small files: the listing's page, the keys fetched
CHUNK_INDEX = 3  # the chunk read: ciphertext chunk 3 of the 8 MiB file, as one Range
FLAT_ROWS = {
    # name: (unit, what one operation is)
    "flat_chunk_read_1MiB": ("reads/s", "GET /files/<id> with Range: one whole 1 MiB chunk"),
    "flat_download_8MiB": ("MiB/s", "GET /files/<id> of the user's 8 MiB file, whole"),
    "flat_key_fetch": ("requests/s", "GET /files/<id>/key of one of the user's files"),
    "flat_small_upload_4KiB": ("uploads/s", "POST /upload of 4 KiB (deleted again, untimed)"),
    "flat_list_files": ("requests/s", f"GET /files: the user's {OWN_SMALL_FILES + 1} files"),
}


def scale_rows(bench: Bench) -> None:
    want_flat = any(bench.wanted_row(n) for n in FLAT_ROWS)
    if not (want_flat or any(bench.wanted_row(n) for n in RANGE_ROWS)):
        return
    bench.start_server("var-scale")
    started = time.monotonic()
    bench.token = bench.register(f"bench-scale-{os.getpid()}")
    assert bench.client is not None
    flat = Flat(bench)
    filler = Filler(bench.db, bench.data)
    s = bench.sizes
    small = filler.grow(s.store_small, s.records_small).as_dict()
    small["settle_seconds"] = settle(bench)
    at_small = flat.measure("small store") if want_flat else {}
    large = filler.grow(s.store_large, s.records_large).as_dict()
    large["settle_seconds"] = settle(bench)
    at_large = flat.measure("large store") if want_flat else {}
    for name, (unit, what) in FLAT_ROWS.items():
        if bench.wanted_row(name):
            row = flat_row(name, unit, what, at_small[name], at_large[name], small, large)
            row.details.update(flat.cpu_details(name))
            bench.add(row)
    bench.meta["scale"] = {"small_store": small, "large_store": large,
                           "flat_seconds": round(time.monotonic() - started, 1)}  # fmt: skip
    range_rows(bench)
    bench.meta["scale"]["total_seconds"] = round(time.monotonic() - started, 1)
    bench.stop_server()


def settle(bench: Bench, limit: float = 120.0) -> float:
    """Wait until the database's processes are nearly idle (under 10 % of a core for 2 s), at
    most ``limit`` seconds: after a fill an engine may still be flushing or analysing (autovacuum),
    and that would be charged to the measurement that follows. Returns the seconds waited."""
    start = time.monotonic()
    before = cpu_seconds(bench.db_pids())
    while time.monotonic() - start < limit:
        time.sleep(2)
        after = cpu_seconds(bench.db_pids())
        if after - before < 0.2:
            break
        before = after
    waited = round(time.monotonic() - start, 1)
    log(f"scale: the database settled after {waited} s")
    return waited


def flat_row(
    name: str, unit: str, what: str, small: list[float], large: list[float],
    small_store: dict[str, Any], large_store: dict[str, Any],
) -> Row:  # fmt: skip
    per = 8.0 if unit == "MiB/s" else 1.0  # the download's rate is in MiB/s, the others per op

    def rate(seconds: list[float]) -> float:
        return per / statistics.median(seconds)

    def ms(seconds: list[float]) -> list[float]:
        return [round(1000 * x, 1) for x in seconds]

    return Row(
        name, rate(large), unit, rate(small),
        f"the same operation by the same user at the small store ({_store(small_store)})",
        Goal("ratio", ">=", 0.8),
        f"{what}; value at the large store ({_store(large_store)}); ratio = large/small",
        {"ms_small_store": ms(small), "ms_large_store": ms(large),
         "median_ms_small": round(1000 * statistics.median(small), 1),
         "median_ms_large": round(1000 * statistics.median(large), 1),
         # Load from other programs only ever adds time: the fastest runs are the steadiest view.
         "ratio_of_fastest": round(min(small) / min(large), 3),
         "small_store": small_store, "large_store": large_store},
    )  # fmt: skip


def _store(store: dict[str, Any]) -> str:
    return f"others' {store['chunk_mib']:.0f} MiB of chunks, {store['file_records']} records"


class Flat:
    """The measuring user's files and the five timed operations on them."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.headers = {"x-access-tokens": bench.token}
        port = bench.port
        log("scale: the measuring user uploads an 8 MiB file and its small files")
        self.big = http_upload(port, "/upload", bench.token, bench.data, 8 * MiB)["answer"]
        self.small = [
            http_upload(port, "/upload", bench.token, bench.data, SMALL_FILE)["answer"]
            for _ in range(OWN_SMALL_FILES)
        ]
        self.calls = 0
        # CPU seconds (server + database processes) per operation and store: steadier than wall
        # time on a shared machine, where the load can change between the two store sizes.
        self.cpu: dict[str, dict[str, list[float]]] = {}
        self.ops: dict[str, Callable[[], float]] = {
            "flat_chunk_read_1MiB": self.chunk_read,
            "flat_download_8MiB": self.download,
            "flat_key_fetch": self.key_fetch,
            "flat_small_upload_4KiB": self.small_upload,
            "flat_list_files": self.list_files,
        }

    def measure(self, label: str) -> dict[str, list[float]]:
        """Every operation, interleaved, until each has its repetitions or its time bound."""
        bench = self.bench
        reps = 9 if bench.args.quick else 15
        bound = bench.sizes.scale_seconds
        wanted = {n: op for n, op in self.ops.items() if bench.wanted_row(n)}
        times: dict[str, list[float]] = {n: [] for n in wanted}
        spent = dict.fromkeys(wanted, 0.0)
        for op in wanted.values():
            op()  # warm-up: connections, caches
        log(f"scale: timing {len(wanted)} operations at the {label}, up to {reps} times each")
        for _ in range(reps):
            for name, op in wanted.items():
                if spent[name] < bound:  # at least once: every bound is above zero
                    before = bench.cpu()
                    took = op()
                    after = bench.cpu()
                    times[name].append(took)
                    spent[name] += took
                    cpu = after["server_cpu_s"] + after["db_cpu_s"]
                    cpu -= before["server_cpu_s"] + before["db_cpu_s"]
                    self.cpu.setdefault(name, {}).setdefault(label, []).append(cpu)
        for name, runs in times.items():
            log(f"scale: {name} at the {label}: median {1000 * statistics.median(runs):.1f} ms "
                f"over {len(runs)}")  # fmt: skip
        return times

    def cpu_details(self, name: str) -> dict[str, Any]:
        """Mean CPU ms per operation at each store, and their ratio small/large (like the row's
        ratio: ≥ 0.8 means the large store costs at most 1.25 times the CPU)."""
        means = {label: 1000 * statistics.fmean(v) for label, v in self.cpu.get(name, {}).items()}
        small, large = means.get("small store"), means.get("large store")
        return {
            "cpu_ms_per_op_small": round(small, 1) if small is not None else None,
            "cpu_ms_per_op_large": round(large, 1) if large is not None else None,
            "cpu_ratio": round(small / large, 3) if small and large else None,
        }

    def _get(self, path: str, headers: dict[str, str] | None = None) -> tuple[float, bytes]:
        start = time.perf_counter()
        status, body = request(self.bench.port, "GET", path, None,
                               {**self.headers, **(headers or {})}, timeout=900)  # fmt: skip
        seconds = time.perf_counter() - start
        if status not in (200, 206):
            raise RuntimeError(f"GET {path}: {status} {body[:200]!r}")
        return seconds, body

    def chunk_read(self) -> float:
        first = CHUNK_INDEX * MiB
        seconds, body = self._get(f"/files/{self.big}",
                                  {"Range": f"bytes={first}-{first + MiB - 1}"})  # fmt: skip
        if len(body) != MiB:
            raise RuntimeError(f"chunk read: {len(body)} bytes")
        return seconds

    def download(self) -> float:
        result = http_download(self.bench.port, f"/files/{self.big}", self.bench.token)
        if result["status"] != 200:
            raise RuntimeError(f"download: {result}")
        return float(result["seconds"])

    def key_fetch(self) -> float:
        self.calls += 1
        return self._get(f"/files/{self.small[self.calls % len(self.small)]}/key")[0]

    def small_upload(self) -> float:
        bench = self.bench
        result = http_upload(bench.port, "/upload", bench.token, bench.data, SMALL_FILE)
        # The user's own files stay the same between the two store sizes: what changes is others'.
        status, body = request(bench.port, "DELETE", f"/files/{result['answer']}", None,
                               self.headers)  # fmt: skip
        if status != 204:
            raise RuntimeError(f"delete: {status} {body[:200]!r}")
        return float(result["seconds"])

    def list_files(self) -> float:
        seconds, body = self._get("/files")
        if body.count(b'"id"') != OWN_SMALL_FILES + 1:
            raise RuntimeError(f"listing: {body[:300]!r}")
        return seconds
