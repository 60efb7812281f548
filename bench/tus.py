"""Row tus_upload_512MiB: one file uploaded through tus (``POST /uploads/``, then one ``PATCH``
streaming the whole body) against the same bytes through ``POST /upload`` on the same server,
interleaved (ABBA) so that drift hits both sides alike. Its memory row, rss_tus_upload_1GiB, is
measured with the other rss_* rows (bench/memory.py)."""

from __future__ import annotations

from typing import Any

from bench.client import http_upload, tus_upload
from bench.common import MiB, log
from bench.report import Goal, Row, throughput_row
from bench.session import Bench

NAME = "tus_upload_512MiB"
REPS = 2  # each side; ABBA, so that neither side always goes first
LABEL = "POST /upload of the same bytes (the seed's one-request upload), same server, same run"


def tus_rows(bench: Bench) -> None:
    if not bench.wanted_row(NAME):
        return
    size = bench.sizes.large
    port = bench.port
    probe = tus_upload(port, bench.token, bench.data, 3 * MiB + 17)
    if probe["status"] != 204:
        bench.add(Row(NAME, None, "MiB/s", note=(
            f"POST /uploads/ answered {probe['status']}: the server has no tus uploads (yet); "
            "this row fills in by itself once it does")))  # fmt: skip
        return

    def tus() -> dict[str, Any]:
        return tus_upload(port, bench.token, bench.data, size)

    def post() -> dict[str, Any]:
        return http_upload(port, "/upload", bench.token, bench.data, size)

    ours: list[dict[str, Any]] = []
    theirs: list[dict[str, Any]] = []
    for rep in range(REPS):
        log(f"{NAME}: repetition {rep + 1}/{REPS}")
        steps = [(tus, ours), (post, theirs)]
        for step, results in steps if rep % 2 == 0 else steps[::-1]:
            results.append(bench.measured(step))
    row = throughput_row(NAME, ours, theirs, Goal("ratio", ">=", 0.9), LABEL)
    row.note = f"{size // MiB} MiB in one PATCH after POST /uploads/ (both requests timed)"
    bench.add(row)
