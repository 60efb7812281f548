"""BODY_BLOCK experiment (not part of `make bench`): how the request-body read size changes the
upload path's CPU ceiling without a database.

Serves bench/sink_app.py under the launcher's gunicorn options and POSTs the same bytes to
``/encrypt-sink?block=N`` (read N bytes at a time from gunicorn, as app.request_body does with
BODY_BLOCK, and encrypt with crypto.encrypt_stream) and to ``/sink?block=N`` (read only).

    .venv/bin/python -m bench.body_block [--mib 256] [--reps 3]     # from the project root
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from bench.client import http_upload
from bench.common import MiB, log
from bench.harness import SinkServer
from bench.report import mib_per_s

BLOCKS = {
    "64 KiB": 64 * 1024,
    "256 KiB": 256 * 1024,
    "1 MiB (BODY_BLOCK today)": MiB,
    "1 MiB - 16 (one plaintext segment)": MiB - 16,
    "4 MiB": 4 * MiB,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cryptofiles-bodyblock-"))
    sink = None
    try:
        data = tmp / "random.bin"
        with open(data, "wb") as out:
            for _ in range(args.mib):
                out.write(os.urandom(MiB))
        sink = SinkServer(tmp / "sink.log", {})
        size = args.mib * MiB
        print("| block | /sink MiB/s | /encrypt-sink MiB/s |")
        print("|---|---|---|")
        for label, block in BLOCKS.items():
            results = {}
            for route in ("sink", "encrypt-sink"):
                runs = [
                    mib_per_s(http_upload(sink.port, f"/{route}?block={block}", None, data, size))
                    for _ in range(args.reps)
                ]
                results[route] = statistics.median(runs)
            print(
                f"| {label} | {results['sink']:.0f} | {results['encrypt-sink']:.0f} |", flush=True
            )
    finally:
        if sink is not None:
            sink.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
