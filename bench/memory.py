"""Rows rss_upload_1GiB, rss_download_1GiB and rss_tus_upload_1GiB: the growth of the server's
resident memory (gunicorn master and workers) while one large file goes through (POST /upload,
GET, and a tus upload: POST /uploads/ and one PATCH), and the controls that prove the sampler would
see buffering (a deliberately buffering app under the same gunicorn options)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

from bench.client import http_download, http_upload, tus_upload
from bench.common import MiB, log, run_threads
from bench.harness import default_setting
from bench.report import Goal, Row, fmt, mib_per_s
from bench.sampling import RssSampler, cmdline, idle_mib, reset_hwm, stat_ppid, status_kib
from bench.session import Bench
from cryptofiles.dev.harness import Launcher


@dataclasses.dataclass
class Transfer:
    """One sampled transfer: its result, the sampler, and the VmHWM cross-check."""

    result: dict[str, Any]
    sampler: RssSampler
    hwm_mib: float
    hwm_ok: bool


RSS_ROWS = ("rss_upload_1GiB", "rss_download_1GiB", "rss_tus_upload_1GiB")


def rss_rows(bench: Bench) -> None:
    if not any(bench.wanted_row(n) for n in RSS_ROWS):
        return
    assert bench.launcher
    launcher = bench.launcher
    size = bench.sizes.huge
    groups = bench.groups()
    check = check_processes(launcher)

    # Warm-up: small uploads and downloads on several connections at once, so that every
    # worker has served the upload and download paths before the idle figure is taken.
    log(f"RSS: warm-up ({bench.sizes.warmup // MiB} MiB uploads+downloads on 4 connections, twice)")
    for _ in range(2):
        run_threads(4, lambda i: _warm_one(bench))
    time.sleep(1)
    idle = idle_mib(groups)
    log(f"RSS: idle server {idle['server']:.1f} MiB, database {idle['db']:.1f} MiB")

    if bench.wanted_row("rss_tus_upload_1GiB"):
        # First, on the idle server: the other transfers must not leave their garbage to it.
        tus = _sampled(bench, lambda: tus_upload(launcher.port, bench.token, bench.data, size))
        if tus.result["status"] == 204:
            bench.add(_rss_row("rss_tus_upload_1GiB", tus, idle, idle, check, size))
        else:
            bench.add(Row("rss_tus_upload_1GiB", None, "MiB", note=(
                f"POST /uploads/ answered {tus.result['status']}: the server has no tus "
                "uploads (yet)")))  # fmt: skip
        time.sleep(1)
        idle = idle_mib(groups)
    if not bench.wanted_row("rss_upload_1GiB") and not bench.wanted_row("rss_download_1GiB"):
        return
    up = _sampled(
        bench, lambda: http_upload(launcher.port, "/upload", bench.token, bench.data, size)
    )
    file_id = up.result["answer"]
    time.sleep(1)
    idle_after = idle_mib(groups)
    down = _sampled(bench, lambda: http_download(launcher.port, f"/files/{file_id}", bench.token))
    up.hwm_ok = down.hwm_ok = up.hwm_ok and down.hwm_ok  # one flag: both resets must work
    for name, transfer, idle_before in (
        ("rss_upload_1GiB", up, idle),
        ("rss_download_1GiB", down, idle_after),
    ):
        if bench.wanted_row(name):
            bench.add(_rss_row(name, transfer, idle, idle_before, check, size))
    bench.meta["rss_idle_after_upload"] = idle_after


def check_processes(launcher: Launcher) -> dict[str, Any]:
    """Sanity: the sampler sees the gunicorn master and every worker, and not the database."""
    pids = launcher.server_pids()
    master = [p for p in pids if "gunicorn" in cmdline(p) and stat_ppid(p) == launcher.process.pid]
    workers = [p for p in pids if master and stat_ppid(p) == master[0]]
    expected = int(launcher.env.get("WEB_WORKERS", default_setting("web_workers")))
    check = {
        "server_pids": pids,
        "master": master,
        "workers": workers,
        "expected_workers": expected,
        "database_pid": launcher.db_pid,
        "database_excluded": launcher.db_pid not in pids,
    }
    if len(master) != 1 or len(workers) != expected or launcher.db_pid in pids:
        raise RuntimeError(f"RSS sampler does not see the right processes: {check}")
    return check


def _sampled(bench: Bench, fn: Callable[[], dict[str, Any]]) -> Transfer:
    assert bench.launcher
    launcher = bench.launcher
    hwm_ok = reset_hwm(launcher.server_pids())
    with RssSampler(bench.groups()) as sampler:
        result = bench.measured(fn)
    hwm = sum(status_kib(p, "VmHWM") for p in launcher.server_pids()) / 1024
    return Transfer(result, sampler, hwm, hwm_ok)


def _rss_row(
    name: str, transfer: Transfer, idle: dict[str, float], idle_before: dict[str, float],
    check: dict[str, Any], size: int,
) -> Row:  # fmt: skip
    sampler = transfer.sampler
    peak = sampler.peak_mib("server")
    details = {
        "transfer_bytes": size,
        "idle_server_mib": round(idle["server"], 1),
        "peak_server_mib": round(peak, 1),
        "idle_before_this_transfer_mib": round(idle_before["server"], 1),
        "hwm_cross_check_growth_mib": (
            round(transfer.hwm_mib - idle["server"], 1) if transfer.hwm_ok else None
        ),
        "db_idle_mib": round(idle["db"], 1),
        "db_peak_mib": round(sampler.peak_mib("db"), 1),
        "per_process_peak_mib": {
            str(p): round(k / 1024, 1)
            for p, k in sampler.per_pid_peak.items()
            if p in sampler.pids_seen["server"]
        },
        "sampler": sampler.stats(),
        "throughput_mib_s": round(mib_per_s(transfer.result), 1),
        "processes": check,
        **{k: v for k, v in transfer.result.items() if k.endswith("_cpu_s")},
    }
    return Row(
        name, peak - idle["server"], "MiB", goal=Goal("value", "<=", 100),
        details=details,
        note=(
            f"peak RSS of gunicorn master+{len(check['workers'])} workers while one "
            f"{size // MiB} MiB file went through, minus the idle RSS after warm-up "
            f"({idle['server']:.0f} MiB); {details['sampler']['samples']} samples; VmHWM "
            f"cross-check: {fmt(details['hwm_cross_check_growth_mib'])} MiB; the database process "
            f"went {details['db_idle_mib']:.0f} -> {details['db_peak_mib']:.0f} MiB"
        ),
    )  # fmt: skip


def _warm_one(bench: Bench) -> None:
    port = bench.port
    if bench.wanted_row("rss_tus_upload_1GiB"):
        tus_upload(port, bench.token, bench.data, bench.sizes.warmup)
    file_id = http_upload(port, "/upload", bench.token, bench.data, bench.sizes.warmup)["answer"]
    result = http_download(port, f"/files/{file_id}", bench.token)
    if result["status"] != 200:
        raise RuntimeError(f"warm-up download: {result}")


def rss_controls(bench: Bench) -> None:
    """Prove the sampler: a deliberately buffering app must show ~1 GiB of growth."""
    assert bench.sink
    sink = bench.sink
    size = bench.sizes.huge
    data = bench.data
    groups = {"server": sink.pids}
    controls = {}
    hold = "hold=0.3"  # the control keeps its buffer 0.3 s: six sampling intervals
    for label, fn in (
        ("streaming_upload", lambda: http_upload(sink.port, "/sink", None, data, size)),
        ("buffering_upload",
         lambda: http_upload(sink.port, f"/buffer?{hold}", None, data, size)),
        ("streaming_download", lambda: http_download(sink.port, f"/source?bytes={size}", None)),
        ("buffering_download",
         lambda: http_download(sink.port, f"/buffered-source?bytes={size}&{hold}", None)),
    ):  # fmt: skip
        run_threads(2, lambda i: http_upload(sink.port, "/sink", None, data, 4 * MiB))
        time.sleep(0.5)
        idle = idle_mib(groups, 0.5)["server"]
        hwm_ok = reset_hwm(sink.pids())
        with RssSampler(groups) as sampler:
            fn()
        hwm = sum(status_kib(p, "VmHWM") for p in sink.pids()) / 1024
        controls[label] = {
            "growth_mib": round(sampler.peak_mib("server") - idle, 1),
            "hwm_growth_mib": round(hwm - idle, 1) if hwm_ok else None,
            "idle_mib": round(idle, 1),
            **sampler.stats(),
        }
        log(f"RSS control {label}: +{controls[label]['growth_mib']} MiB "
            f"(VmHWM: +{controls[label]['hwm_growth_mib']} MiB)")  # fmt: skip
        time.sleep(0.5)
    bench.meta["rss_controls"] = controls
    _attach_controls(bench.rows, controls, size)


def _attach_controls(rows: list[Row], controls: dict[str, Any], size: int) -> None:
    """The buffering control is the rss rows' baseline: what buffering the file would show."""
    for row in rows:
        kind = {"rss_upload_1GiB": "upload", "rss_download_1GiB": "download",
                "rss_tus_upload_1GiB": "upload"}.get(row.name)  # fmt: skip
        if kind and row.value is not None:
            row.baseline = controls[f"buffering_{kind}"]["growth_mib"]
            row.baseline_label = (
                f"control, not a database figure: the same sampler on a deliberately buffering "
                f"WSGI app (bench/sink_app.py under the same gunicorn options) for the same "
                f"{size // MiB} MiB {kind} (a streaming one: "
                f"+{controls[f'streaming_{kind}']['growth_mib']} MiB); proves buffering would show"
            )
            expected = size / MiB * 0.8
            if controls[f"buffering_{kind}"]["growth_mib"] < expected:
                row.note += " | WARNING: the buffering control grew less than expected"
