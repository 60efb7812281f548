"""Measure the local database (issue 14): the real server as `make run` starts it, and the suite.

    .venv/bin/python scripts/measure_local_db.py requests [GiB]   # key fetch, 200 KiB download:
                                                                  # empty store vs after GiB stored
    .venv/bin/python scripts/measure_local_db.py suite            # pytest tests/test_files.py
                                                                  # tests/test_storage.py, per engine

Prints medians in ms (requests) or wall seconds (suite). Uses temporary folders; leaves nothing.
"""

from __future__ import annotations

import http.client
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptofiles.dev.database import LocalDatabase
from cryptofiles.dev.harness import PROJECT_ROOT, Launcher, project_tools

ENV = {
    "WEB_WORKERS": "2",
    "RATE_LIMIT_LOGIN_NAME": "10000/minute",
    "RATE_LIMIT_LOGIN_ADDRESS": "10000/minute",
    "RATE_LIMIT_REGISTRATION": "10000/minute",
    "RATE_LIMIT_KEYS": "100000/minute",
    "MAX_UPLOAD_BYTES": str(1 << 30),
    "QUOTA_BYTES": str(8 << 30),
}
MiB = 1 << 20


class Http:
    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)

    def call(self, method: str, path: str, body: bytes | None = None, **headers: str) -> bytes:
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        data = response.read()
        assert response.status < 300, (response.status, data[:200])
        return data

    def token(self, name: str) -> str:
        self.call("POST", "/registration", New_User_Name=name, New_User_Password="x" * 12)
        return self.call("GET", "/login", User_Name=name, User_Password="x" * 12).decode()


def median_ms(action: object, times: int = 40) -> float:
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        action()  # type: ignore[operator]
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def requests(gib: float) -> None:
    with tempfile.TemporaryDirectory(prefix="measure-db-") as tmp, Launcher(Path(tmp), ENV) as app:
        alice = Http(app.port)
        token = alice.token("alice")
        file_id = alice.call(
            "POST", "/upload", os.urandom(200 * 1024), **{"x-access-tokens": token}
        )
        file_id = file_id.decode().strip()
        key = lambda: alice.call("GET", f"/files/{file_id}/key", **{"x-access-tokens": token})  # noqa: E731
        get = lambda: alice.call("GET", f"/files/{file_id}", **{"x-access-tokens": token})  # noqa: E731
        print(f"empty store: key fetch {median_ms(key):.1f} ms, 200 KiB download "
              f"{median_ms(get):.1f} ms", flush=True)  # fmt: skip
        others = Http(app.port)
        bob = others.token("bob")
        stored, started = 0, time.monotonic()
        while stored < gib * 1024 * MiB:
            others.call("POST", "/upload", os.urandom(128 * MiB), **{"x-access-tokens": bob})
            stored += 128 * MiB
        for _ in range(600):  # and many small files
            others.call("POST", "/upload", os.urandom(1024), **{"x-access-tokens": bob})
        alice.conn.close()  # idle for minutes: the server closed it; the next call reconnects
        print(f"stored {stored / MiB:.0f} MiB + 600 small files in "
              f"{time.monotonic() - started:.0f} s", flush=True)  # fmt: skip
        print(f"after: key fetch {median_ms(key):.1f} ms, 200 KiB download "
              f"{median_ms(get):.1f} ms", flush=True)  # fmt: skip


def suite() -> None:
    tests = ["tests/test_files.py", "tests/test_storage.py"]
    for engine in ("sqlite", "postgresql"):
        with tempfile.TemporaryDirectory(prefix="measure-suite-") as tmp:
            database = LocalDatabase(Path(tmp) / "db", tools=project_tools(), engine=engine)
            started = time.monotonic()
            with database:
                ready = time.monotonic() - started
                run = subprocess.run(
                    [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
                    cwd=PROJECT_ROOT, env={**os.environ, "MONGODB_URI": database.uri},
                    capture_output=True, text=True, check=False,
                )  # fmt: skip
            total = time.monotonic() - started
            print(f"{engine}: database ready in {ready:.1f} s; suite + start/stop {total:.1f} s; "
                  f"{run.stdout.strip().splitlines()[-1]}", flush=True)  # fmt: skip


if __name__ == "__main__":
    if sys.argv[1:2] == ["requests"]:
        requests(float(sys.argv[2]) if len(sys.argv) > 2 else 1.0)
    elif sys.argv[1:] == ["suite"]:
        suite()
    else:
        sys.exit(__doc__)
