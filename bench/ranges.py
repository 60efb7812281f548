"""Rows range_1KiB_of_1GiB, range_plaintext_1KiB_of_1GiB and db_rss_download_1GiB: random access
costs the range, not the file; the database holds no file in memory (issue 14, point 3).

Run by ``bench/scale.py`` on its server after the flat rows, so on the large store. The measuring
user uploads, through the API, a 1 GiB file (``--quick``: 128 MiB) and a 1 MiB file. A 1 KiB
Range near the end of each is requested in turn (ciphertext, then plaintext); value = ranges/s on
the large file, baseline = ranges/s on the 1 MiB file, goal ratio ≥ 1/3 ("within 3 times the time").
Then the large file is downloaded whole while the database's processes are sampled: the growth of
their summed PSS over their idle PSS just before (goal ≤ 100 MiB).
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

from bench.client import http_download, http_upload, request
from bench.common import MiB, log
from bench.report import Goal, Row, fmt, mib_per_s
from bench.sampling import RssSampler, cmdline, idle_mib, pss_kib
from bench.session import Bench

KiB = 1024
RANGE_ROWS = ("range_1KiB_of_1GiB", "range_plaintext_1KiB_of_1GiB", "db_rss_download_1GiB")
WITHIN = 3.0  # the large file's range may take up to this many times the small file's


def range_rows(bench: Bench) -> None:
    if not any(bench.wanted_row(n) for n in RANGE_ROWS):
        return
    size = bench.sizes.huge
    port = bench.port
    log(f"ranges: the measuring user uploads a {size // MiB} MiB file and a 1 MiB file")
    up = bench.measured(lambda: http_upload(port, "/upload", bench.token, bench.data, size))
    files = {"large": _info(bench, up["answer"]),
             "small": _info(bench, http_upload(port, "/upload", bench.token, bench.data, MiB)
                            ["answer"])}  # fmt: skip
    bench.meta.setdefault("scale", {})["large_file_upload_mib_s"] = round(mib_per_s(up), 1)
    for name, route, length in (
        ("range_1KiB_of_1GiB", "", "stored_size"),
        ("range_plaintext_1KiB_of_1GiB", "/plaintext", "size"),
    ):
        if bench.wanted_row(name):
            bench.add(_range_row(bench, name, route, length, files))
    if bench.wanted_row("db_rss_download_1GiB"):
        bench.add(_db_rss_row(bench, files["large"]))


def _info(bench: Bench, file_id: str) -> dict[str, Any]:
    status, body = request(bench.port, "GET", f"/files/{file_id}/info", None,
                           {"x-access-tokens": bench.token})  # fmt: skip
    if status != 200:
        raise RuntimeError(f"info of {file_id}: {status} {body[:200]!r}")
    return dict(json.loads(body))


def _range_row(
    bench: Bench, name: str, route: str, length: str, files: dict[str, dict[str, Any]]
) -> Row:
    """Alternate the two files' ranges (drift hits both); a time bound caps the slow side."""
    reps = 3 if bench.args.quick else 7
    bound = bench.sizes.scale_seconds
    times: dict[str, list[float]] = {"large": [], "small": []}
    starts = {}
    for side, info in files.items():
        # Near the end, inside one chunk: the worst place for a read that walks the file.
        starts[side] = info[length] - MiB // 2 - KiB if info[length] > MiB else info[length] - KiB
    # A warm-up on the small file only (the route's first call): on an engine that scans, one
    # range of the large file can take a minute, and the flat rows have warmed the server.
    _range(bench, files["small"]["id"], route, starts["small"])
    for _ in range(reps):
        for side, info in files.items():
            if sum(times[side]) < bound:  # at least once
                times[side].append(_range(bench, info["id"], route, starts[side]))
    median = {side: statistics.median(t) for side, t in times.items()}
    rate = {side: 1 / m for side, m in median.items()}
    what = "plaintext" if route else "ciphertext"
    return Row(
        name, rate["large"], "ranges/s", rate["small"],
        f"the same 1 KiB {what} Range near the end of the same user's 1 MiB file",
        Goal("ratio", ">=", round(1 / WITHIN, 3)),
        f"1 KiB {what} Range near the end of a {files['large']['size'] // MiB} MiB file; goal: "
        f"within {WITHIN:g} times the small file's time, i.e. ratio ≥ {1 / WITHIN:.3f}; "
        f"median {1000 * median['large']:.0f} ms vs {1000 * median['small']:.0f} ms",
        {"ms_large_file": [round(1000 * t, 1) for t in times["large"]],
         "ms_small_file": [round(1000 * t, 1) for t in times["small"]],
         "range_starts": starts, "file_bytes": {s: i[length] for s, i in files.items()}},
    )  # fmt: skip


def _range(bench: Bench, file_id: str, route: str, start: int) -> float:
    headers = {"x-access-tokens": bench.token, "Range": f"bytes={start}-{start + KiB - 1}"}
    began = time.perf_counter()
    status, body = request(bench.port, "GET", f"/files/{file_id}{route}", None, headers, 900)
    seconds = time.perf_counter() - began
    if status != 206 or len(body) != KiB:
        raise RuntimeError(f"Range of {file_id}{route}: {status}, {len(body)} bytes")
    return seconds


def _db_rss_row(bench: Bench, info: dict[str, Any]) -> Row:
    """PSS is the value: a sum of VmRSS counts PostgreSQL's shared buffers once per backend that
    touched them (33 backends summed to 971 MiB idle), PSS counts each page once. For a single
    process (FerretDB on SQLite) the two are the same; both are in the details."""
    groups = {"db": bench.db_pids}
    if not bench.db_pids():
        return Row("db_rss_download_1GiB", None, "MiB", note=(
            "no database process to sample (an external database without --database-pids)"))  # fmt: skip
    time.sleep(1)
    idle = idle_mib(groups, kib=pss_kib)["db"]
    idle_rss = idle_mib(groups)["db"]
    with RssSampler(groups, pss_kib) as sampler, RssSampler(groups) as rss:
        result = bench.measured(
            lambda: http_download(bench.port, f"/files/{info['id']}", bench.token)
        )
    peak = sampler.peak_mib("db")
    processes = {str(p): cmdline(p)[:120] for p in sorted(sampler.pids_seen["db"])}
    per_pid = {str(p): round(k / 1024, 1) for p, k in sampler.per_pid_peak.items()}
    return Row(
        "db_rss_download_1GiB", peak - idle, "MiB", goal=Goal("value", "<=", 100),
        note=(
            f"peak summed PSS of the database's {len(processes)} processes while the "
            f"{info['size'] // MiB} MiB file was downloaded, minus their idle PSS just before "
            f"({idle:.0f} MiB); summed VmRSS grew {rss.peak_mib('db') - idle_rss:.0f} MiB; "
            f"download at {fmt(mib_per_s(result))} MiB/s"
        ),
        details={"idle_db_pss_mib": round(idle, 1), "peak_db_pss_mib": round(peak, 1),
                 "idle_db_rss_sum_mib": round(idle_rss, 1),
                 "peak_db_rss_sum_mib": round(rss.peak_mib("db"), 1),
                 "processes": processes, "per_process_peak_pss_mib": per_pid,
                 "download_mib_s": round(mib_per_s(result), 1), "sampler": sampler.stats(),
                 **{k: v for k, v in result.items() if k.endswith("_cpu_s")}},
    )  # fmt: skip
