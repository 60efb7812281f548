"""The bench's output: rows with goals, the printed table, and the two JSON files."""

from __future__ import annotations

import dataclasses
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from bench.common import MiB, log

# The table's order (rows of one family are measured together, not in this order).
ORDER = [
    "upload_64MiB", "upload_512MiB", "download_64MiB", "download_512MiB", "plaintext_512MiB",
    "tus_upload_512MiB", "rss_upload_1GiB", "rss_download_1GiB", "rss_tus_upload_1GiB",
    "small_upload_4KiB_c16", "key_fetch_c16",
    "small_upload_4KiB_c16_1000stored", "flat_chunk_read_1MiB", "flat_download_8MiB",
    "flat_key_fetch", "flat_small_upload_4KiB", "flat_list_files", "range_1KiB_of_1GiB",
    "range_plaintext_1KiB_of_1GiB", "db_rss_download_1GiB", "page_upload_2GiB",
    "page_upload_2GiB_browser_rss", "page_decrypt_2GiB", "page_decrypt_2GiB_browser_rss",
    "encrypt_only", "http_sink_512MiB", "http_encrypt_sink_512MiB", "http_source_512MiB",
]  # fmt: skip


@dataclasses.dataclass
class Goal:
    on: str  # "ratio" or "value"
    op: str  # ">=" or "<="
    limit: float

    def __str__(self) -> str:
        return f"{self.on} {self.op} {self.limit:g}" + (" MiB" if self.on == "value" else "")

    def met(self, row: Row) -> bool | None:
        x = row.ratio if self.on == "ratio" else row.value
        if x is None:
            return None
        return x >= self.limit if self.op == ">=" else x <= self.limit


@dataclasses.dataclass
class Row:
    name: str
    value: float | None
    unit: str
    baseline: float | None = None
    baseline_label: str = ""
    goal: Goal | None = None
    note: str = ""
    details: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.baseline:
            return None
        return self.value / self.baseline

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": _round(self.value),
            "unit": self.unit,
            "baseline": _round(self.baseline),
            "ratio": _round(self.ratio, 3),
            "goal": str(self.goal) if self.goal else None,
            "met": self.goal.met(self) if self.goal else None,
            "baseline_label": self.baseline_label or None,
            "note": self.note or None,
            "details": self.details,
        }


def _round(x: float | None, digits: int = 2) -> float | None:
    return None if x is None else round(x, digits)


def fmt(x: float | None, digits: int = 1) -> str:
    return "null" if x is None else f"{x:.{digits}f}"


def mib_per_s(result: dict[str, Any]) -> float:
    return float(result["bytes"] / MiB / result["seconds"])


def throughput_row(
    name: str, ours: list[dict[str, Any]], theirs: list[dict[str, Any]], goal: Goal | None,
    baseline_label: str, cpu: bool = True,
) -> Row:  # fmt: skip
    value = statistics.median(mib_per_s(r) for r in ours)
    base = statistics.median(mib_per_s(r) for r in theirs) if theirs else None
    details: dict[str, Any] = {
        "bytes": ours[0]["bytes"],
        "runs_mib_s": [round(mib_per_s(r), 1) for r in ours],
        "baseline_runs_mib_s": [round(mib_per_s(r), 1) for r in theirs],
    }
    if cpu:
        for key in ("server_cpu_s", "db_cpu_s", "client_cpu_s"):
            details[key] = [r.get(key) for r in ours]
            details["baseline_" + key] = [r.get(key) for r in theirs]
        details["seconds"] = [round(r["seconds"], 2) for r in ours]
        details["baseline_seconds"] = [round(r["seconds"], 2) for r in theirs]
    return Row(name, value, "MiB/s", base, baseline_label, goal, details=details)


def ordered(rows: list[Row]) -> list[Row]:
    return sorted(rows, key=lambda r: ORDER.index(r.name) if r.name in ORDER else 99)


def print_table(rows: list[Row], out: Any = sys.stdout) -> None:
    header = ["name", "value", "unit", "baseline", "ratio", "goal", "met?"]
    lines = []
    for r in rows:
        met = r.goal.met(r) if r.goal else None
        lines.append([
            r.name, fmt(r.value), r.unit, fmt(r.baseline), fmt(r.ratio, 2),
            str(r.goal) if r.goal else "report", {True: "yes", False: "NO", None: "-"}[met],
        ])  # fmt: skip
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)), file=out)
    print("-|-".join("-" * w for w in widths), file=out)
    for line in lines:
        print(" | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)), file=out)
    notes = [r for r in rows if r.note or r.baseline_label]
    if notes:
        print(file=out)
    for r in notes:
        if r.baseline_label:
            print(f"- {r.name}: baseline = {r.baseline_label}", file=out)
        if r.note:
            print(f"- {r.name}: {r.note}", file=out)


def write_results(rows: list[Row], meta: dict[str, Any], out: Path) -> None:
    """The rows to ``out``; the run's facts (``meta``) next to it as ``<stem>-run.json``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps([r.as_json() for r in ordered(rows)], indent=2) + "\n")
    meta_path = out.with_name(out.stem + "-run.json")
    meta_path.write_text(json.dumps(meta, indent=2, default=str) + "\n")
    log(f"wrote {out} and {meta_path}")
