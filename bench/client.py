"""The bench's HTTP client: keep-alive connections with 1 MiB blocks, streamed uploads from a
file, downloads read to nowhere."""

from __future__ import annotations

import http.client
import io
import time
from pathlib import Path
from typing import Any

from bench.common import MiB

HTTP_TIMEOUT = 900  # seconds; a 1 GiB download at FerretDB speed takes about a minute


class LimitedReader(io.RawIOBase):
    """The first ``size`` bytes of a file, read in the caller's block size (never all at once)."""

    def __init__(self, path: Path, size: int) -> None:
        self._file = open(path, "rb")  # noqa: SIM115 (closed in close())
        self._left = size

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self._left if n < 0 else min(n, self._left)
        data = self._file.read(n)
        self._left -= len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._file.close()
        super().close()


def connection(port: int, timeout: float = HTTP_TIMEOUT) -> http.client.HTTPConnection:
    # blocksize: http.client reads a file body in blocks of this size (default 8 KiB).
    return http.client.HTTPConnection("127.0.0.1", port, timeout=timeout, blocksize=MiB)


def request(
    port: int, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
    timeout: float = 60,
) -> tuple[int, bytes]:  # fmt: skip
    conn = connection(port, timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def http_upload(port: int, path_: str, token: str | None, data: Path, size: int) -> dict[str, Any]:
    """POST ``size`` bytes of ``data`` with Content-Length, streamed from the file."""
    conn = connection(port)
    headers = {"Content-Length": str(size), "Content-Type": "application/octet-stream"}
    if token:
        headers["x-access-tokens"] = token
    with LimitedReader(data, size) as body:
        try:
            start = time.perf_counter()
            conn.request("POST", path_, body=body, headers=headers)
            response = conn.getresponse()
            answer = response.read()
            seconds = time.perf_counter() - start
        finally:
            conn.close()
    if response.status not in (200, 201):
        raise RuntimeError(f"POST {path_} answered {response.status}: {answer[:300]!r}")
    return {"bytes": size, "seconds": seconds, "answer": answer.decode().strip()}


def http_download(port: int, path_: str, token: str | None) -> dict[str, Any]:
    """GET ``path_`` and read the body to nowhere, 1 MiB at a time; status != 200 → ``status``."""
    conn = connection(port)
    headers = {"x-access-tokens": token} if token else {}
    buffer = bytearray(MiB)
    total = 0
    try:
        start = time.perf_counter()
        conn.request("GET", path_, headers=headers)
        response = conn.getresponse()
        if response.status != 200:
            return {"status": response.status, "answer": response.read()[:300]}
        while n := response.readinto(buffer):
            total += n
        seconds = time.perf_counter() - start
    finally:
        conn.close()
    expected = response.getheader("Content-Length")
    if expected is not None and int(expected) != total:
        raise RuntimeError(f"GET {path_}: {total} bytes of {expected}")
    return {"status": 200, "bytes": total, "seconds": seconds}


TUS = {"Tus-Resumable": "1.0.0"}


def tus_upload(port: int, token: str, data: Path, size: int) -> dict[str, Any]:
    """A tus upload of ``size`` bytes of ``data``: ``POST /uploads/`` with the length, then one
    ``PATCH`` streaming the whole body from the file (tus-js-client's default, one request). Both
    requests on one keep-alive connection, both timed. A server without tus: ``status`` 404."""
    conn = connection(port)
    auth = {"x-access-tokens": token, **TUS}
    created = {**auth, "Upload-Length": str(size), "Upload-Metadata": "filename YmVuY2guYmlu"}
    patch = {**auth, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream",
             "Content-Length": str(size)}  # fmt: skip
    with LimitedReader(data, size) as body:
        try:
            start = time.perf_counter()
            conn.request("POST", "/uploads/", headers=created)
            response = conn.getresponse()
            answer = response.read()
            if response.status != 201:
                return {"status": response.status, "answer": answer[:300]}
            location = response.getheader("Location") or ""
            path = "/uploads/" + location.rstrip("/").rsplit("/", 1)[-1]
            conn.request("PATCH", path, body=body, headers=patch)
            response = conn.getresponse()
            answer = response.read()
            seconds = time.perf_counter() - start
        finally:
            conn.close()
    offset = response.getheader("Upload-Offset")
    if response.status != 204 or offset != str(size):
        raise RuntimeError(f"PATCH {path} answered {response.status}, offset {offset}: "
                           f"{answer[:300]!r}")  # fmt: skip
    return {"status": 204, "bytes": size, "seconds": seconds, "answer": path.rsplit("/", 1)[1]}
