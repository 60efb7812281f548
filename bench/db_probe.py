"""Database-level experiments behind the tuning advice in docs/benchmarks.md (not part of `make bench`).

Starts its own database exactly as the launcher does (cryptofiles.dev.database.LocalDatabase: FerretDB on
SQLite, or mongod if on PATH) in a temp dir, and measures with raw pymongo, without the service:

- reads: how the shape of the chunk query changes read speed and the database's CPU per MiB, as
  the chunks collection grows (the app's query has an ``n`` range; GridOut's does not);
- writes: one insert per chunk vs small insert_many batches vs GridIn's 48 MB batches, with the
  peak RSS growth of the writing process (GridIn holds up to 48 MB of chunks before it sends them);
- lookups: find_one shapes the request path uses (``_id`` alone, ``_id`` plus ``status``,
  ``public_id``) against a collection of a few hundred records.

    .venv/bin/python bench/db_probe.py [--file-mib 32] [--other-mib 160] [--json out.json]
        [--parts writes,reads,lookups,small]     # all parts: ~8 minutes here; reads are the slow part
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import gridfs
import pymongo
from bson import ObjectId

from cryptofiles.dev.database import LocalDatabase

ROOT = Path(__file__).resolve().parent.parent

MiB = 1 << 20
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@contextlib.contextmanager
def peak_rss(pid: int) -> Iterator[dict[str, float]]:
    """Peak VmRSS growth (MiB) of ``pid`` while the block runs, sampled every 20 ms."""
    out: dict[str, float] = {}
    stop = threading.Event()
    base = rss_kib(pid)
    peak = [base]

    def run() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_kib(pid))
            stop.wait(0.02)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield out
    finally:
        stop.set()
        thread.join()
        out["growth_mib"] = (max(peak[0], rss_kib(pid)) - base) / 1024


def timed(db_pid: int, fn: Callable[[], int]) -> dict[str, float]:
    cpu0, t0 = cpu_s(db_pid), time.perf_counter()
    nbytes = fn()
    seconds, cpu = time.perf_counter() - t0, cpu_s(db_pid) - cpu0
    mib = nbytes / MiB
    return {
        "mib_s": round(mib / seconds, 1) if mib else 0.0,
        "seconds": round(seconds, 3),
        "db_cpu_s": round(cpu, 2),
        "db_cpu_ms_per_mib": round(1000 * cpu / mib, 1) if mib else None,
    }


def chunk_docs(file_id: Any, mib: int, blob: bytes) -> Iterator[dict[str, Any]]:
    for n in range(mib):
        yield {"files_id": file_id, "n": n, "data": blob}


class SmallUploads:
    """The database work of one 4 KiB upload and one key fetch, 16 threads at once: as the app
    (cryptofiles/, Nov 24 17:30) does it, and with the fixes suggested in docs/benchmarks.md.

    Upload today: token check (revoked_tokens by _id, users by public_id), the quota
    (``bytes_used``: every complete record of the owner) twice (declared size, then the upload),
    the pending record, one chunk, the GridFS files entry, then ``complete_file`` by
    {_id, status}. FerretDB/SQLite pushes down only a filter that is exactly {_id: value}: every
    other query decodes the whole collection.
    """

    def __init__(self, db: Any, pubs: list[str]) -> None:
        self.db = db
        self.chunks, self.gfiles, self.files = (
            db["ciphertext.chunks"], db["ciphertext.files"], db["files"]
        )  # fmt: skip
        self.users, self.counters = db["users"], db["rate_counters"]
        self.chunks.create_index([("files_id", 1), ("n", 1)], unique=True, name="files_id_1_n_1")
        self.owners = owners = pubs[:16]
        self.now = now = datetime.now(UTC)
        self.ids = [str(uuid.uuid4()) for _ in range(800)]  # the records 800 earlier uploads left
        self.files.insert_many(
            [
                {"_id": i, "owner": owners[k % 16], "status": "complete", "size": 4096,
                 "wrapped_key": os.urandom(60), "kek_id": "k1", "created_at": now}
                for k, i in enumerate(self.ids)
            ]
        )  # fmt: skip
        self.users.create_index("public_id", unique=True)
        self.users.insert_many(
            [{"public_id": p, "name": p[:8], "password_hash": "x" * 150} for p in owners]
        )
        self.small_bucket = gridfs.GridFSBucket(db, "small", chunk_size_bytes=MiB)
        self.payload = os.urandom(4096 + 56)  # a 4 KiB file's ciphertext

    def auth(self, i: int) -> None:
        self.db["revoked_tokens"].find_one({"_id": uuid.uuid4().hex}, projection={"_id": 1})
        self.users.find_one({"public_id": self.owners[i]})

    def bytes_used(self, i: int) -> int:
        query = {"owner": self.owners[i], "status": "complete"}
        return sum(int(d.get("size", 0)) for d in self.files.find(query, {"size": 1}))

    def upload(self, i: int, quota_scans: int, id_only: bool) -> None:
        self.auth(i)
        for _ in range(quota_scans):
            self.bytes_used(i)
        fid = str(uuid.uuid4())
        self.files.insert_one(
            {"_id": fid, "owner": self.owners[i], "status": "pending", "created_at": self.now}
        )
        self.chunks.insert_one({"files_id": fid, "n": 0, "data": self.payload})
        self.gfiles.insert_one(
            {"_id": fid, "length": len(self.payload), "chunkSize": MiB, "filename": fid}
        )
        query = {"_id": fid} if id_only else {"_id": fid, "status": "pending"}
        self.files.update_one(query, {"$set": {"status": "complete", "size": 4096}})
        if quota_scans == 0:  # the quota as a running total on the user instead
            self.users.update_one({"public_id": self.owners[i]}, {"$inc": {"bytes_used": 4096}})

    def key_fetch(self, i: int, id_only: bool) -> None:
        self.auth(i)
        key = f"rl/keys/user:{self.owners[i]}"
        self.counters.find_one_and_update(
            {"_id": key, "expire_at": {"$gt": self.now}}, {"$inc": {"count": 1}}
        ) or self.counters.replace_one(
            {"_id": key}, {"count": 1, "expire_at": self.now + timedelta(minutes=1)}, upsert=True
        )
        ids = self.ids
        file_id = ids[(i * 7919 + int(time.perf_counter_ns())) % len(ids)]
        if id_only:
            doc = self.files.find_one({"_id": file_id})
            assert doc is not None and doc["status"] == "complete"
        else:
            assert self.files.find_one({"_id": file_id, "status": "complete"}) is not None

    def variants(self) -> dict[str, Callable[[int], Any]]:
        files, ids = self.files, self.ids
        return {
            "upload as the app: 2 quota scans, update by {_id, status}":
                lambda i: self.upload(i, 2, False),
            "upload, 1 quota scan": lambda i: self.upload(i, 1, False),
            "upload, quota as a running total ($inc), update by {_id}":
                lambda i: self.upload(i, 0, True),
            "baseline: GridFS upload_from_stream of 4 KiB":
                lambda i: self.small_bucket.upload_from_stream("s", self.payload),
            "key fetch as the app: files by {_id, status}": lambda i: self.key_fetch(i, False),
            "key fetch, files by {_id} (status checked in Python)":
                lambda i: self.key_fetch(i, True),
            "baseline: files.find_one({_id})": lambda i: files.find_one({"_id": ids[i]}),
        }  # fmt: skip


def small_uploads(db: Any, pid: int, pubs: list[str], count: int) -> dict[str, Any]:
    """Every variant of SmallUploads from 16 threads: requests per second, database CPU each."""
    out: dict[str, Any] = {}
    for label, fn in SmallUploads(db, pubs).variants().items():
        per = count // 16
        cpu0, t0 = cpu_s(pid), time.perf_counter()
        threads = [
            threading.Thread(target=lambda k=k, fn=fn, per=per: [fn(k) for _ in range(per)])
            for k in range(16)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - t0
        out[label] = {
            "per_s": round(per * 16 / seconds, 1),
            "db_cpu_ms_each": round(1000 * (cpu_s(pid) - cpu0) / (per * 16), 1),
        }
        print("16 threads:", label, out[label], flush=True)
    return out


def writes(db: Any, pid: int, size: int, blob: bytes, tmp: Path) -> dict[str, Any]:
    """Chunk inserts one by one, in small batches, and GridIn (to a collection of their own)."""
    out: dict[str, Any] = {}
    chunks = db["w.chunks"]
    chunks.create_index([("files_id", 1), ("n", 1)], unique=True, name="files_id_1_n_1")
    for label, batch in (("insert_one per chunk", 1), ("insert_many of 4", 4),
                         ("insert_many of 16", 16)):  # fmt: skip
        fid = str(uuid.uuid4())
        docs = list(chunk_docs(fid, size, blob))

        def write(docs: list[dict[str, Any]] = docs, batch: int = batch) -> int:
            for i in range(0, len(docs), batch):
                part = docs[i : i + batch]
                if batch == 1:
                    chunks.insert_one(part[0])
                else:
                    chunks.insert_many(part)
            return len(docs) * MiB

        with peak_rss(os.getpid()) as mem:
            out[label] = timed(pid, write)
        out[label]["client_rss_growth_mib"] = round(mem["growth_mib"], 1)
        print("write", label, out[label], flush=True)
    bucket = gridfs.GridFSBucket(db, "g", chunk_size_bytes=MiB)
    src_path = tmp / "src.bin"
    with open(src_path, "wb") as f:
        for _ in range(size):
            f.write(blob)
    gridin = "GridIn (upload_from_stream: 48 MB insert_many)"
    with peak_rss(os.getpid()) as mem, open(src_path, "rb") as src:
        out[gridin] = timed(pid, lambda: (bucket.upload_from_stream("x", src), size * MiB)[1])
    out[gridin]["client_rss_growth_mib"] = round(mem["growth_mib"], 1)
    print("write GridIn", out[gridin], flush=True)
    return out


def reads(chunks: Any, pid: int, size: int, blob: bytes, other_mib: int) -> dict[str, Any]:
    """Every read shape of one file, alone and after ``other_mib`` MiB of other files' chunks."""
    target, oid_target = _fill_read_targets(chunks, size, blob)
    shapes = _read_shapes(chunks, target, oid_target, size - 1)
    chunk_ids = [d["_id"] for d in chunks.find({"files_id": target}, {"_id": 1}, sort=[("n", 1)])]
    out: dict[str, Any] = {}
    for phase, other in (("alone", 0), (f"+{other_mib} MiB of other files", other_mib)):
        for i in range(0, other, 16):
            fid = str(uuid.uuid4())
            chunks.insert_many(
                [{"files_id": fid, "n": n, "data": blob} for n in range(min(16, other - i))]
            )
        stored = chunks.estimated_document_count()
        out[phase] = {"chunks_in_collection": stored}
        for label, fn in shapes.items():
            runs = [timed(pid, fn)]
            if runs[0]["seconds"] < 10:  # bounded: a slow shape is measured once
                runs.append(timed(pid, fn))
            best = max(runs, key=lambda r: r["mib_s"])
            out[phase][label] = best
            print("read", phase, f"({stored} chunks)", label, best, flush=True)
        for label, query, times in (
            ("one chunk by {files_id, n}", {"files_id": target, "n": size // 2}, 2),
            ("one chunk by _id", {"_id": chunk_ids[size // 2]}, 20),
            ("4 chunks by _id $in", {"_id": {"$in": chunk_ids[4:8]}}, 5),
        ):
            out[phase][label] = _lookup_chunk(chunks, pid, query, times)
            print("read", phase, label, out[phase][label], flush=True)
    return out


def _fill_read_targets(chunks: Any, size: int, blob: bytes) -> tuple[str, ObjectId]:
    """The file to read (string id, as the app's) and its twin under an ObjectId (GridFS's)."""
    target = str(uuid.uuid4())
    chunks.insert_many(list(chunk_docs(target, size, blob))[:16])
    for i in range(16, size, 16):
        chunks.insert_many(list(chunk_docs(target, size, blob))[i : i + 16])
    oid_target = ObjectId()
    for i in range(0, size, 16):
        chunks.insert_many(
            [{"files_id": oid_target, "n": n, "data": blob} for n in range(i, min(i + 16, size))]
        )
    return target, oid_target


def _read_shapes(
    chunks: Any, target: str, oid_target: ObjectId, last: int
) -> dict[str, Callable[[], int]]:
    def reader(query: dict[str, Any], sort: bool, batch: int) -> Callable[[], int]:
        def read() -> int:
            cursor = chunks.find(query, sort=[("n", 1)] if sort else None, batch_size=batch)
            return sum(len(d["data"]) for d in cursor)

        return read

    return {
        "app: files_id(str) + n range, sort n, batch 4": reader(
            {"files_id": target, "n": {"$gte": 0, "$lte": last}}, True, 4
        ),
        "GridOut shape: files_id(str), sort n, batch 4": reader({"files_id": target}, True, 4),
        "files_id(str), sort n, batch 1": reader({"files_id": target}, True, 1),
        "files_id(str), sort n, batch 16": reader({"files_id": target}, True, 16),
        "files_id(str), no sort, batch 4": reader({"files_id": target}, False, 4),
        "files_id(ObjectId), sort n, batch 4": reader({"files_id": oid_target}, True, 4),
    }


def _lookup_chunk(chunks: Any, pid: int, query: dict[str, Any], times: int) -> dict[str, float]:
    """One chunk at a time: latency and database CPU per query."""
    cpu0, t0 = cpu_s(pid), time.perf_counter()
    for _ in range(times):
        if not list(chunks.find(query)):
            raise RuntimeError(f"nothing found for {query}")
    return {
        "ms_per_query": round(1000 * (time.perf_counter() - t0) / times, 1),
        "db_cpu_ms_per_query": round(1000 * (cpu_s(pid) - cpu0) / times, 1),
    }


def seed_lookups(db: Any) -> tuple[list[str], list[str]]:
    """500 file records and 50 users (the small-uploads part needs the users' public ids)."""
    files = db["files"]
    files.create_index([("owner", 1), ("created_at", -1)])
    files.create_index([("status", 1), ("heartbeat_at", 1)])
    ids = [str(uuid.uuid4()) for _ in range(500)]
    files.insert_many(
        [{"_id": i, "owner": "o", "status": "complete", "wrapped_key": os.urandom(60)} for i in ids]
    )
    users = db["users"]
    users.create_index("public_id", unique=True)
    pubs = [str(uuid.uuid4()) for _ in range(50)]
    users.insert_many([{"public_id": p, "name": p[:8], "password_hash": "x" * 150} for p in pubs])
    return ids, pubs


def lookups(db: Any, pid: int, ids: list[str], pubs: list[str]) -> dict[str, Any]:
    """The find_one shapes of the request path, 300 times each, one after the other."""
    files, users = db["files"], db["users"]
    out: dict[str, Any] = {}
    for label, fn in (
        ("files.find_one({_id})", lambda k: files.find_one({"_id": ids[k % 500]})),
        ("files.find_one({_id, status})",
         lambda k: files.find_one({"_id": ids[k % 500], "status": "complete"})),
        ("users.find_one({public_id})", lambda k: users.find_one({"public_id": pubs[k % 50]})),
        ("quota: files.find({owner, status}), 500 match",
         lambda k: list(files.find({"owner": "o", "status": "complete"}, {"size": 1}))),
        ("revoked_tokens.find_one({_id}) (empty)",
         lambda k: db["revoked_tokens"].find_one({"_id": "x"})),
    ):  # fmt: skip
        cpu0, t0 = cpu_s(pid), time.perf_counter()
        lat = []
        for k in range(300):
            s = time.perf_counter()
            fn(k)
            lat.append(time.perf_counter() - s)
        out[label] = {
            "per_s_sequential": round(300 / (time.perf_counter() - t0)),
            "median_ms": round(1000 * statistics.median(lat), 2),
            "db_cpu_ms_each": round(1000 * (cpu_s(pid) - cpu0) / 300, 2),
        }
        print("lookup", label, out[label], flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--file-mib", type=int, default=32)
    parser.add_argument("--other-mib", type=int, default=160, help="other files' chunks to add")
    parser.add_argument("--uploads", type=int, default=320, help="4 KiB uploads per variant")
    parser.add_argument("--parts", default="writes,reads,lookups,small")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    parts = args.parts.split(",")
    results: dict[str, Any] = {}
    blob = os.urandom(MiB)
    with (
        tempfile.TemporaryDirectory(prefix="cryptofiles-dbprobe-") as tmp,
        LocalDatabase(Path(tmp) / "db", tools=ROOT / "tools") as database,
    ):
        assert database.process is not None
        pid = database.process.pid
        client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(database.uri)
        db = client["probe"]
        chunks = db["c.chunks"]
        chunks.create_index([("files_id", 1), ("n", 1)], unique=True, name="files_id_1_n_1")
        if "writes" in parts:
            results["writes"] = writes(db, pid, args.file_mib, blob, Path(tmp))
        if "reads" in parts:
            results["reads"] = reads(chunks, pid, args.file_mib, blob, args.other_mib)
        ids, pubs = seed_lookups(db)
        if "lookups" in parts:
            results["lookups"] = lookups(db, pid, ids, pubs)
        if "small" in parts:
            results["small_uploads"] = small_uploads(client["probe_small"], pid, pubs, args.uploads)
        client.close()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
