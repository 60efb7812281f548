"""Rows small_upload_4KiB_c16 and key_fetch_c16: many small requests from CONCURRENCY clients at
once, each on its own keep-alive connection with its own account, against the same operations
from as many pymongo threads; both sides timed from a common start (a barrier)."""

from __future__ import annotations

import http.client
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from bench.client import connection
from bench.common import log, run_threads
from bench.report import Goal, Row
from bench.session import Bench

CONCURRENCY = 16
SMALL_FILE = 4 * 1024
PHASE_TIME_BOUND = 180  # seconds: a concurrent phase stops early (and says so) past this


STORED_ROW = "small_upload_4KiB_c16_1000stored"


def concurrency_rows(bench: Bench) -> None:
    want_small = bench.wanted_row("small_upload_4KiB_c16")
    want_keys = bench.wanted_row("key_fetch_c16")
    if not (want_small or want_keys):
        return
    clients = Clients(bench)
    payload = os.urandom(SMALL_FILE)
    if want_small:
        clients.small_upload_row(payload)
    if want_keys:
        clients.key_fetch_row(payload)


def stored_upload_row(bench: Bench) -> None:
    """small_upload_4KiB_c16 when the uploading users already have files (issue 14, point 4: the
    goal's precondition). Its own server and database: 16 new users, each given
    ``sizes.stored_per_uploader`` complete 4 KiB files written straight into the collections
    (bench/fill.py: the cost measured is the uploads', not the fill's), then the same two sides as
    small_upload_4KiB_c16."""
    if not bench.wanted_row(STORED_ROW):
        return
    from bench.fill import Filler  # the fill is only this row's and the scale rows' business

    bench.start_server("var-stored")
    clients = Clients(bench)
    filler = Filler(bench.db, bench.data)
    per_user = bench.sizes.stored_per_uploader
    for i in range(CONCURRENCY):
        owner = bench.db["users"].find_one({"name": clients.names[i]})["_id"]
        filler.add_files(owner, per_user, SMALL_FILE + 40)  # a 4 KiB file's ciphertext size
    log(f"{STORED_ROW}: {per_user * CONCURRENCY} files stored by the {CONCURRENCY} uploaders")
    clients.small_upload_row(os.urandom(SMALL_FILE), STORED_ROW)
    bench.rows[-1].details["stored_before"] = {"per_user": per_user,
                                               "total": per_user * CONCURRENCY}  # fmt: skip
    bench.stop_server()


def concurrency_row(
    name: str, unit: str, ours: dict[str, Any], theirs: dict[str, Any], goal: Goal | None,
    label: str,
) -> Row:  # fmt: skip
    note = ""
    if ours["time_bound_hit"] or theirs["time_bound_hit"]:
        note = f"stopped by the {PHASE_TIME_BOUND} s time bound before the fixed count"
    return Row(name, ours["per_s"], unit, theirs["per_s"], label, goal, note,
               {"ours": ours, "baseline": theirs, "clients": CONCURRENCY})  # fmt: skip


def _must(doc: Any) -> Any:
    if doc is None:
        raise RuntimeError("find_one found nothing")
    return doc


class Clients:
    """CONCURRENCY accounts (registered on creation) and the small files each one uploaded."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.small_ids: dict[int, list[str]] = {}  # client index -> its files
        log(f"registering {CONCURRENCY} users (scrypt: a few seconds)")
        self.tokens = [""] * CONCURRENCY
        self.names = [f"bench-c{i:02d}-{os.getpid()}" for i in range(CONCURRENCY)]

        def reg(i: int) -> None:
            self.tokens[i] = bench.register(self.names[i])

        run_threads(4, lambda k: [reg(i) for i in range(k, CONCURRENCY, 4)])

    def small_upload_row(self, payload: bytes, name: str = "small_upload_4KiB_c16") -> None:
        count = self.bench.sizes.small_uploads
        ours = self.http_concurrent(
            lambda conn, i, k: self._small_upload(conn, i, payload), count, warmups=1
        )
        bucket = self.bench.bucket("bench_small")
        theirs = self.pymongo_concurrent(
            lambda i, k: bucket.upload_from_stream(f"small-{i}-{k}", payload), count
        )
        self.bench.add(concurrency_row(name, "uploads/s", ours, theirs,
                                       Goal("ratio", ">=", 0.5),
                                       f"pymongo GridFSBucket.upload_from_stream of 4 KiB, "
                                       f"{CONCURRENCY} threads sharing one MongoClient"))  # fmt: skip

    def key_fetch_row(self, payload: bytes) -> None:
        port = self.bench.port
        for i in range(CONCURRENCY):  # files to fetch keys of, if the upload row did not run
            while len(self.small_ids.get(i, [])) < 4:
                conn = connection(port, 60)
                self._small_upload(conn, i, payload)
                conn.close()
        count = self.bench.sizes.key_fetches
        ours = self.http_concurrent(self._key_fetch, count, warmups=1)
        files = self.bench.db["files"]
        theirs = self.pymongo_concurrent(
            lambda i, k: _must(files.find_one({"_id": self._pick(i, k)})), count
        )
        self.bench.add(concurrency_row("key_fetch_c16", "requests/s", ours, theirs, None,
                                       f"pymongo find_one by _id on the files collection, "
                                       f"{CONCURRENCY} threads sharing one MongoClient"))  # fmt: skip

    def _pick(self, i: int, k: int) -> str:
        ids = self.small_ids[i]
        return ids[k % len(ids)]

    def _small_upload(self, conn: http.client.HTTPConnection, i: int, payload: bytes) -> None:
        conn.request("POST", "/upload", body=payload, headers={"x-access-tokens": self.tokens[i]})
        response = conn.getresponse()
        body = response.read()
        if response.status != 201:
            raise RuntimeError(f"small upload: {response.status} {body[:200]!r}")
        self.small_ids.setdefault(i, []).append(body.decode().strip())

    def _key_fetch(self, conn: http.client.HTTPConnection, i: int, k: int) -> None:
        conn.request(
            "GET", f"/files/{self._pick(i, k)}/key", headers={"x-access-tokens": self.tokens[i]}
        )
        response = conn.getresponse()
        body = response.read()
        if response.status != 200 or len(body.strip()) != 44:
            raise RuntimeError(f"key fetch: {response.status} {body[:200]!r}")

    def http_concurrent(
        self, op: Callable[[http.client.HTTPConnection, int, int], None], count: int, warmups: int
    ) -> dict[str, Any]:
        """``count`` operations split over CONCURRENCY clients, each on its own keep-alive
        connection with its own token; timed from a common start to the last one's end."""
        port = self.bench.port
        conns = [connection(port, 60) for _ in range(CONCURRENCY)]
        per = count // CONCURRENCY

        def work(i: int, barrier: threading.Barrier, deadline: list[float]) -> int:
            for k in range(warmups):
                op(conns[i], i, -1 - k)
            barrier.wait()
            done = 0
            for k in range(per):
                if time.monotonic() > deadline[0]:
                    break
                op(conns[i], i, k)
                done += 1
            return done

        try:
            return self._timed_threads(work, per * CONCURRENCY)
        finally:
            for conn in conns:
                conn.close()

    def pymongo_concurrent(self, op: Callable[[int, int], Any], count: int) -> dict[str, Any]:
        per = count // CONCURRENCY

        def work(i: int, barrier: threading.Barrier, deadline: list[float]) -> int:
            self.bench.db.command("ping")  # a pooled connection for this thread
            barrier.wait()
            done = 0
            for k in range(per):
                if time.monotonic() > deadline[0]:
                    break
                op(i, k)
                done += 1
            return done

        return self._timed_threads(work, per * CONCURRENCY)

    def _timed_threads(
        self, work: Callable[[int, threading.Barrier, list[float]], int], expected: int
    ) -> dict[str, Any]:
        deadline = [float("inf")]
        start: list[float] = []

        def go() -> None:
            start.append(time.perf_counter())
            deadline[0] = time.monotonic() + PHASE_TIME_BOUND

        barrier = threading.Barrier(CONCURRENCY, action=go)
        before = self.bench.cpu()
        done = run_threads(CONCURRENCY, lambda i: work(i, barrier, deadline))
        seconds = time.perf_counter() - start[0]
        after = self.bench.cpu()
        total = sum(done)
        return {
            "ops": total,
            "seconds": round(seconds, 3),
            "per_s": total / seconds,
            "time_bound_hit": total < expected,
            **{k: round(after[k] - before[k], 2) for k in before},
        }
