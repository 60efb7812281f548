"""Rows encrypt_only (our streaming encryption in-process, against Tink) and http_sink_512MiB,
http_encrypt_sink_512MiB, http_source_512MiB (bench/sink_app.py under the launcher's gunicorn
options): the ceilings that the crypto and the HTTP stack put on a transfer, without a database."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from typing import Any

from bench.client import http_download, http_upload
from bench.common import MiB, log
from bench.harness import SinkServer
from bench.memory import rss_controls
from bench.report import Row, mib_per_s, throughput_row
from bench.session import Bench
from cryptofiles import crypto


def encrypt_row(bench: Bench) -> None:
    if not bench.wanted("encrypt_only"):
        return
    # tink: a dev dependency, loaded late
    from cryptofiles.dev.tink_oracle import tink_streaming_aead

    total = bench.sizes.encrypt
    blocks = [os.urandom(MiB) for _ in range(min(64, total // MiB))]  # app's BODY_BLOCK = 1 MiB
    key = crypto.new_file_key()

    def source() -> Iterator[bytes]:
        for k in range(total // MiB):
            yield blocks[k % len(blocks)]

    def ours() -> dict[str, Any]:
        start = time.perf_counter()
        stored = sum(len(s) for s in crypto.encrypt_stream(key, source()))
        return {"bytes": total, "stored": stored, "seconds": time.perf_counter() - start}

    class Discard(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, data: Any) -> int:
            return len(data)

    def tink() -> dict[str, Any]:
        primitive = tink_streaming_aead(key)
        start = time.perf_counter()
        with primitive.new_encrypting_stream(Discard(), b"") as stream:
            for block in source():
                stream.write(block)
        return {"bytes": total, "seconds": time.perf_counter() - start}

    mine: list[dict[str, Any]] = []
    theirs: list[dict[str, Any]] = []
    for rep in range(3):
        for step in (ours, tink) if rep % 2 == 0 else (tink, ours):
            (mine if step is ours else theirs).append(step())
    bench.add(throughput_row("encrypt_only", mine, theirs, None,
                             "Tink StreamingAead (AES256_GCM_HKDF_1MB, cryptofiles/dev/"
                             f"tink_oracle.py) encrypting the same {total // MiB} MiB in 1 MiB writes, "
                             "in-process", cpu=False))  # fmt: skip


def sink_rows(bench: Bench) -> None:
    want = [n for n in ("http_sink_512MiB", "http_encrypt_sink_512MiB", "http_source_512MiB")
            if bench.wanted(n)]  # fmt: skip
    want_controls = bench.wanted("rss_upload_1GiB", "rss_download_1GiB", "rss_tus_upload_1GiB")
    if not (want or want_controls):
        return
    log("starting the sink app (bench/sink_app.py) under the launcher's gunicorn options")
    bench.sink = SinkServer(bench.tmp / "sink.log", bench.server_env)
    sink = bench.sink
    size = bench.sizes.large
    bench.meta["sink_gunicorn"] = sink.args
    for name, fn, note in (
        ("http_sink_512MiB", lambda: http_upload(sink.port, "/sink", None, bench.data, size),
         "POST to a WSGI app that reads the body in 1 MiB blocks and drops it: the HTTP "
         "stack's upload ceiling here (client and server share the 2 cores)"),
        ("http_encrypt_sink_512MiB",
         lambda: http_upload(sink.port, "/encrypt-sink", None, bench.data, size),
         "diagnostic: as http_sink, plus crypto.encrypt_stream on every block, as the upload "
         "route does: our upload's ceiling without a database"),
        ("http_source_512MiB", lambda: http_download(sink.port, f"/source?bytes={size}", None),
         "diagnostic: GET of 1 MiB blocks from memory: the download path's HTTP ceiling"),
    ):  # fmt: skip
        if name in want:
            fn()  # warm-up: the first request to a fresh worker pays for imports
            results = [fn() for _ in range(3)]
            best = max(results, key=mib_per_s)
            bench.add(Row(name, mib_per_s(best), "MiB/s", note=note,
                          details={"runs_mib_s": [round(mib_per_s(r), 1) for r in results]}))  # fmt: skip
    if want_controls:
        rss_controls(bench)
