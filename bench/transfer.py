"""Rows upload_64MiB, upload_512MiB, download_64MiB, download_512MiB and plaintext_512MiB: one
file through the server over HTTP against the same bytes through pymongo's GridFS on the same
database, interleaved (ABAB) so that drift hits both sides alike."""

from __future__ import annotations

import time
from typing import Any

from pymongo.errors import ProtocolError

from bench.client import LimitedReader, http_download, http_upload, request
from bench.common import MiB, log
from bench.report import Goal, Row, throughput_row
from bench.session import Bench

UPLOAD_LABEL = (
    "pymongo GridFSBucket.upload_from_stream, 1 MiB chunks, "
    "same bytes, bucket bench_baseline, same database"
)


def transfer_rows(bench: Bench) -> None:
    Transfers(bench).rows()


def chunk_batch() -> int:
    from cryptofiles.storage import chunks

    return int(getattr(chunks, "CHUNK_BATCH", 4))


class Transfers:
    """The files of one server's transfer rows: ours by size, the baseline's by size."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.ours: dict[int, str] = {}  # size -> our file id
        self.theirs: dict[int, Any] = {}  # size -> baseline GridFS id
        # Bytes in each chunks collection: on FerretDB/SQLite a chunk query scans the whole
        # collection, so download speed depends on it (see docs/benchmarks.md).
        self.stored = {"ours": 0, "baseline": 0}

    def rows(self) -> None:
        s = self.bench.sizes
        plans = [
            (s.small, "64MiB", s.reps_small),
            (s.large, "512MiB", s.reps_large),
        ]
        for size, label, reps in plans:
            up, down = f"upload_{label}", f"download_{label}"
            need_plain = label == "512MiB" and self.bench.wanted("plaintext_512MiB")
            if not (self.bench.wanted(up, down) or need_plain):
                continue
            self.upload_row(up, size, reps)
            if self.bench.wanted(down):
                self.download_row(down, size, reps)
            if need_plain:
                self.plaintext_row(size)

    def upload_row(self, name: str, size: int, reps: int) -> None:
        """Uploads ``reps`` times each side (once if only the downloads need the files)."""
        ours: list[dict[str, Any]] = []
        theirs: list[dict[str, Any]] = []
        for rep in range(reps if self.bench.wanted(name) else 1):
            log(f"{name}: repetition {rep + 1}/{reps}")
            order = [self.our_upload, self.baseline_upload]
            for step in order if rep % 2 == 0 else order[::-1]:
                (ours if step == self.our_upload else theirs).append(step(size))
        if self.bench.wanted(name):
            self.bench.add(
                throughput_row(name, ours, theirs, Goal("ratio", ">=", 0.9), UPLOAD_LABEL)
            )

    def download_row(self, name: str, size: int, reps: int) -> None:
        ours: list[dict[str, Any]] = []
        theirs: list[dict[str, Any]] = []
        for rep in range(reps):
            log(f"{name}: repetition {rep + 1}/{reps}")
            order = [self.our_download, self.baseline_download_of]
            for step in order if rep % 2 == 0 else order[::-1]:
                (ours if step == self.our_download else theirs).append(step(size))
        how = {t.get("how") for t in theirs}
        label = (
            "pymongo GridFSBucket.open_download_stream of the baseline object"
            if how == {"gridout"}
            else "pymongo find() on bench_baseline.chunks sorted by n with "
            f"batch_size={chunk_batch()} (as storage.chunks.read): GridOut fails on "
            "this database for files over ~45 MiB (reply > 48 MB max message size)"
        )
        row = throughput_row(name, ours, theirs, Goal("ratio", ">=", 0.9), label)
        row.details["chunks_collections_mib_at_download"] = {
            k: round(v / MiB) for k, v in self.stored.items()
        }
        self.bench.add(row)

    def our_upload(self, size: int) -> dict[str, Any]:
        bench = self.bench
        port = bench.port
        result = bench.measured(lambda: http_upload(port, "/upload", bench.token, bench.data, size))
        self.ours.setdefault(size, result["answer"])
        self.stored["ours"] += size
        return result

    def baseline_upload(self, size: int) -> dict[str, Any]:
        bucket = self.bench.bucket("bench_baseline")

        def run() -> dict[str, Any]:
            with LimitedReader(self.bench.data, size) as source:
                start = time.perf_counter()
                file_id = bucket.upload_from_stream(f"baseline-{size}", source)
                seconds = time.perf_counter() - start
            self.theirs.setdefault(size, file_id)
            self.stored["baseline"] += size
            return {"bytes": size, "seconds": seconds}

        return self.bench.measured(run)

    def our_download(self, size: int) -> dict[str, Any]:
        bench = self.bench
        port = bench.port
        file_id = self.ours[size]
        result = bench.measured(lambda: http_download(port, f"/files/{file_id}", bench.token))
        if result["status"] != 200:
            raise RuntimeError(f"download of {file_id}: {result}")
        return result

    def baseline_download_of(self, size: int) -> dict[str, Any]:
        return baseline_download(self.bench, self.theirs[size])

    def plaintext_row(self, size: int) -> None:
        bench = self.bench
        name = "plaintext_512MiB"
        port = bench.port
        # The route is new: first check on a small file that it exists and answers the plaintext.
        probe_size = 3 * MiB + 17
        probe_id = http_upload(port, "/upload", bench.token, bench.data, probe_size)["answer"]
        status, body = request(port, "GET", f"/files/{probe_id}/plaintext", None,
                               {"x-access-tokens": bench.token}, timeout=120)  # fmt: skip
        if status != 200:
            bench.add(Row(name, None, "MiB/s", note=(
                f"GET /files/<id>/plaintext answered {status} for the owner's own file: the route "
                "does not exist (yet); this row fills in by itself once it does")))  # fmt: skip
            return
        with open(bench.data, "rb") as f:
            correct = body == f.read(probe_size)
        result = bench.measured(
            lambda: http_download(port, f"/files/{self.ours[size]}/plaintext", bench.token)
        )
        if result["status"] != 200:
            bench.add(
                Row(name, None, "MiB/s", note=f"answered {result['status']} for a 512 MiB file")
            )
            return
        base = baseline_download(bench, self.theirs[size])
        label = (
            "raw pymongo read of the same-size baseline object's chunks "
            "(what the database can deliver; the ciphertext download's baseline)"
        )
        row = throughput_row(name, [result], [base], None, label)
        row.note = (
            f"plaintext of a {probe_size}-byte probe file "
            + ("matched the uploaded bytes" if correct else "DID NOT MATCH the uploaded bytes")
            + f"; {result['bytes']} bytes received for {size} uploaded"
        )
        bench.add(row)


def baseline_download(bench: Bench, file_id: Any) -> dict[str, Any]:
    """GridOut if the database allows it, else the chunks with a batch size (labelled)."""

    def gridout() -> dict[str, Any]:
        start = time.perf_counter()
        stream = bench.bucket("bench_baseline").open_download_stream(file_id)
        total = 0
        while data := stream.readchunk():
            total += len(data)
        return {"bytes": total, "seconds": time.perf_counter() - start, "how": "gridout"}

    def chunks() -> dict[str, Any]:
        start = time.perf_counter()
        total = 0
        cursor = bench.db["bench_baseline.chunks"].find(
            {"files_id": file_id}, sort=[("n", 1)], batch_size=chunk_batch()
        )
        with cursor:
            for doc in cursor:
                total += len(doc["data"])
        return {"bytes": total, "seconds": time.perf_counter() - start, "how": "chunks"}

    if not bench.meta.get("gridout_fails"):
        try:
            return bench.measured(gridout)
        except ProtocolError as exc:
            if "larger than server max message size" not in str(exc):
                raise
            bench.meta["gridout_fails"] = str(exc)
            log(f"GridOut fails on this database ({exc}); baseline reads the chunks instead")
    return bench.measured(chunks)
