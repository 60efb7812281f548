"""A tiny WSGI app for the benchmarks only: never imported by the service, never deployed.

bench/harness.py (SinkServer) serves it as ``bench.sink_app:app`` with gunicorn, with the same
options as the launcher's gunicorn, on its own loopback port, to measure what the HTTP stack alone
can do and to prove that the RSS sampler sees memory growth when a server does buffer a body:

- ``POST /sink``: read the body in ``block`` bytes (default 1 MiB, like the app's BODY_BLOCK) and
  discard it; answers the byte count. The HTTP stack's upload ceiling.
- ``POST /encrypt-sink``: the same, but every block goes through ``cryptofiles.crypto.encrypt_stream``
  first, exactly as the upload route feeds it; the ceiling of "HTTP + encryption" without a database.
- ``POST /buffer``: the deliberately bad control: reads the whole body into memory before answering
  (``hold=S``: and keeps it S seconds longer, so that a sampler cannot miss the peak).
- ``GET /source?bytes=N``: N bytes streamed in 1 MiB blocks (the download path's HTTP ceiling).
- ``GET /buffered-source?bytes=N``: the control for downloads: builds the whole N-byte answer in
  memory first.

Query parameter ``block`` (bytes) changes the read size of /sink and /encrypt-sink.
"""

from __future__ import annotations

import os
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from typing import Any

BLOCK = 1 << 20
_SOURCE_BLOCK = os.urandom(BLOCK)


def _blocks(stream: Any, block: int) -> Iterator[bytes]:
    while True:
        data = stream.read(block)
        if not data:
            return
        yield data


def _answer(start_response: Callable[..., Any], text: str, status: str = "200 OK") -> list[bytes]:
    body = text.encode()
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def _source(total: int) -> Iterator[bytes]:
    left = total
    while left > 0:
        piece = _SOURCE_BLOCK if left >= BLOCK else _SOURCE_BLOCK[:left]
        left -= len(piece)
        yield piece


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    method = environ["REQUEST_METHOD"]
    path = environ.get("PATH_INFO", "")
    query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
    block = int(query.get("block", [BLOCK])[0])
    stream = environ["wsgi.input"]
    if method == "POST" and path == "/sink":
        return _answer(start_response, str(sum(len(b) for b in _blocks(stream, block))))
    if method == "POST" and path == "/encrypt-sink":
        from cryptofiles import crypto

        key = crypto.new_file_key()
        total = sum(len(s) for s in crypto.encrypt_stream(key, _blocks(stream, block)))
        return _answer(start_response, str(total))
    if method == "POST" and path == "/buffer":
        held = bytearray()
        for data in _blocks(stream, BLOCK):
            held += data
        time.sleep(float(query.get("hold", ["0"])[0]))  # keep the peak for a few samples
        return _answer(start_response, str(len(held)))
    if method == "GET" and path in ("/source", "/buffered-source"):
        total = int(query.get("bytes", ["0"])[0])
        headers = [("Content-Type", "application/octet-stream"), ("Content-Length", str(total))]
        start_response("200 OK", headers)
        if path == "/source":
            return _source(total)
        held = b"\x01" * total  # touched pages: really resident, unlike a zero-filled buffer
        time.sleep(float(query.get("hold", ["0"])[0]))
        return [held]
    if method == "GET" and path == "/healthz":
        return _answer(start_response, "ok")
    return _answer(start_response, "not found", "404 Not Found")
