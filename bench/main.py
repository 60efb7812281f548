"""Benchmarks of crypto-files-server against its own database (`make bench`).

Starts the real server exactly as `make run` does (``python -m cryptofiles.dev.serve``, through
``cryptofiles.dev.harness`` as the end-to-end tests do: generated secrets, its own FerretDB/mongod,
gunicorn with the production options) on a free port with its var/ folder in
a temp dir, measures, prints a table and writes ``bench/results/latest.json``: a list of rows
``{"name", "value", "unit", "baseline", "ratio", ...}``. Every baseline is measured in the same run,
against the same database (pymongo connected to the URI the launcher logs), interleaved with our own
measurement so that drift (a growing SQLite file, other load on the machine) hits both alike.

    .venv/bin/python bench/run.py              # the full run (under ~10 minutes on 2 cores)
    .venv/bin/python bench/run.py --quick      # small sizes: a smoke run in about a minute
    .venv/bin/python bench/run.py --only small_upload_4KiB_c16,key_fetch_c16 \
        --server-env WEB_WORKERS=4 --out /tmp/w4.json   # one experiment

Details that do not fit the table (CPU seconds per process group, sampler statistics, controls)
go to ``bench/results/latest-run.json`` (``--quick``: ``latest-quick*.json``). See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from bench.ceilings import encrypt_row, sink_rows
from bench.common import BENCH, log
from bench.harness import dir_size, machine_info
from bench.memory import rss_rows
from bench.page import page_rows
from bench.report import ordered, print_table, write_results
from bench.scale import scale_rows
from bench.session import Bench
from bench.small import concurrency_rows, stored_upload_row
from bench.transfer import transfer_rows
from bench.tus import tus_rows

RESULTS = BENCH / "results"


def run(bench: Bench) -> None:
    """Every wanted row family, each server started once for the families that need it."""
    started = time.monotonic()
    bench.meta.update(machine_info(), quick=bench.args.quick, sizes=dataclasses.asdict(bench.sizes))
    bench.meta["loadavg_start"] = os.getloadavg()
    bench.make_data()
    if bench.wanted("upload_", "download_", "plaintext_") or any(
        bench.wanted_row(n) for n in ("small_upload_4KiB_c16", "key_fetch_c16", "tus_upload_512MiB")
    ):
        bench.start_server("var")
        log("registering the main user")
        bench.token = bench.register(f"bench-{os.getpid()}")
        transfer_rows(bench)
        tus_rows(bench)
        concurrency_rows(bench)
        bench.meta["database_size_bytes"] = dir_size(bench.tmp / "var" / "db")
        bench.stop_server()
    if bench.wanted("rss_"):
        # A fresh launcher and database: the idle RSS of a new server, and a chunks collection
        # that does not hold the throughput rows' files.
        bench.start_server("var-rss")
        bench.token = bench.register(f"bench-rss-{os.getpid()}")
        rss_rows(bench)
        bench.stop_server()
    # Each on a server and database of its own: what they store must not slow the rows above,
    # and what they measure depends on what exactly is stored.
    page_rows(bench)
    stored_upload_row(bench)
    scale_rows(bench)
    encrypt_row(bench)
    sink_rows(bench)
    bench.meta["loadavg_end"] = os.getloadavg()
    bench.meta["duration_s"] = round(time.monotonic() - started, 1)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench" if sys.argv[0].endswith("__main__.py") else None,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--only", help="comma-separated row names (or prefixes) to run")
    parser.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment for the launcher (e.g. WEB_WORKERS=4)")  # fmt: skip
    parser.add_argument("--out", type=Path, help="results file (default bench/results/latest.json)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (data, logs)")
    parser.add_argument("--mongodb-uri", metavar="URI",
                        help="run every server on this database (e.g. a FerretDB/PostgreSQL you "
                        "started) instead of the one the launcher starts; each server gets a fresh "
                        "database on it, dropped when it stops")  # fmt: skip
    parser.add_argument("--database-pids", type=lambda v: [int(p) for p in v.split(",") if p],
                        default=[], metavar="PID,...",
                        help="with --mongodb-uri: the external database's processes (each with "
                        "its descendants) for the database CPU and memory figures")  # fmt: skip
    parser.add_argument("--after-start", metavar="COMMAND",
                        help="a shell command run after each server is ready, with "
                        "BENCH_DATABASE_URI and BENCH_DATABASE_NAME in its environment "
                        "(e.g. to create an engine's own indexes on an external database)")  # fmt: skip
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out or RESULTS / ("latest-quick.json" if args.quick else "latest.json")

    def on_term(*_: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    bench = Bench(args)
    failed = False
    try:
        run(bench)
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
        failed = True
    except Exception as exc:
        log(f"FAILED: {type(exc).__name__}: {exc}")
        failed = True
        if bench.launcher is not None:
            log("end of the server log:\n" + bench.launcher.log_tail())
    finally:
        bench.cleanup()
    if not bench.rows and not failed:
        log("no row matched --only; nothing measured")
        return 2
    if bench.rows:
        print()
        print(f"crypto-files-server benchmarks{' (QUICK: small sizes)' if args.quick else ''}, "
              f"{bench.meta.get('cpus')} cores, {bench.meta.get('database')}")  # fmt: skip
        print_table(ordered(bench.rows))
        if not failed:
            write_results(bench.rows, bench.meta, out)
    return 1 if failed else 0
