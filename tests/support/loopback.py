"""A small HTTP client for the server under test that never hangs: every request on a fresh loopback
connection with a timeout, users that register and log in, and uploads sent slowly from a thread so
that a fault can strike mid-body.
"""

from __future__ import annotations

import base64
import dataclasses
import http.client
import json
import socket
import threading
import time
from typing import Any

PASSWORD = "password1"


@dataclasses.dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


def call(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> Answer:
    """One request on a fresh connection; OSError (refused, reset, timeout) propagates."""
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        return Answer(
            response.status,
            {k.lower(): v for k, v in response.getheaders()},
            data,
            time.monotonic() - started,
        )
    finally:
        conn.close()


class Client:
    """A user of the server under test."""

    def __init__(self, port: int, name: str, password: str = PASSWORD) -> None:
        self.port = port
        self.name = name
        answer = call(port, "POST", "/registration", None, self._cred("New_", password))
        assert answer.status == 201, answer.text
        answer = call(port, "GET", "/login", None, self._cred("", password))
        assert answer.status == 200, answer.text
        self.token = answer.text

    def _cred(self, prefix: str, password: str) -> dict[str, str]:
        return {f"{prefix}User_Name": self.name, f"{prefix}User_Password": password}

    @property
    def auth(self) -> dict[str, str]:
        return {"x-access-tokens": self.token}

    def upload(self, payload: bytes, timeout: float = 30) -> Answer:
        return call(self.port, "POST", "/upload", payload, self.auth, timeout)

    def get(self, path: str, timeout: float = 30) -> Answer:
        return call(self.port, "GET", path, None, self.auth, timeout)

    def key(self, file_id: str) -> bytes:
        answer = self.get(f"/files/{file_id}/key")
        assert answer.status == 200, answer.text
        return base64.b64decode(answer.body)

    def ciphertext(self, file_id: str) -> bytes:
        answer = self.get(f"/files/{file_id}")
        assert answer.status == 200, (file_id, answer.status, answer.text)
        assert len(answer.body) == int(answer.headers["content-length"])
        return answer.body

    def listed(self) -> set[str]:
        answer = self.get("/files?limit=1000")
        assert answer.status == 200, answer.text
        return {f["id"] for f in json.loads(answer.body)["files"]}


def upload_until_ok(client: Client, payload: bytes, seconds: float) -> tuple[Answer, list[Answer]]:
    """Upload until a 201 (bounded in time); returns it and the answers before it."""
    before: list[Answer] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            answer = client.upload(payload, timeout=10)
        except OSError:
            time.sleep(0.3)
            continue
        if answer.status == 201:
            return answer, before
        before.append(answer)
        time.sleep(0.3)
    raise AssertionError(f"no successful upload within {seconds} s; answers: {before[-5:]}")


class SlowUpload:
    """A raw HTTP upload sent in pieces from a thread, so that a fault can strike mid-body.

    The body goes out in ``piece``-sized writes. After ``pause_after`` bytes the sender stops until
    ``go_on`` is set (or its own deadline passes), then sends the rest. ``outcome`` ends up as
    ``("answer", status, headers, body)`` or ``("error", exception name)``.
    """

    def __init__(
        self,
        port: int,
        token: str,
        payload: bytes,
        *,
        pause_after: int,
        piece: int = 256 * 1024,
        chunked: bool = False,
    ) -> None:
        self.port = port
        self.token = token
        self.payload = payload
        self.pause_after = pause_after
        self.piece = piece
        self.chunked = chunked
        self.paused = threading.Event()
        self.go_on = threading.Event()
        self.outcome: tuple[Any, ...] = ()
        self.client_port = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> SlowUpload:
        self.thread.start()
        assert self.paused.wait(30), f"the upload never reached its pause: {self.outcome}"
        return self

    def finish(self, seconds: float = 60) -> tuple[Any, ...]:
        self.go_on.set()
        self.thread.join(seconds)
        assert not self.thread.is_alive(), "the upload did not end"
        return self.outcome

    def _frame(self, data: bytes) -> bytes:
        return f"{len(data):x}\r\n".encode() + data + b"\r\n" if self.chunked else data

    def _run(self) -> None:
        try:
            self.outcome = self._send()
        except OSError as exc:
            self.outcome = ("error", type(exc).__name__)
        finally:
            self.paused.set()

    def _send(self) -> tuple[Any, ...]:
        framing = (
            "Transfer-Encoding: chunked" if self.chunked else f"Content-Length: {len(self.payload)}"
        )
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock:
            self.client_port = sock.getsockname()[1]
            sock.sendall(
                f"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nx-access-tokens: {self.token}\r\n"
                f"{framing}\r\n\r\n".encode()
            )
            sent = 0
            while sent < len(self.payload):
                if sent >= self.pause_after and not self.paused.is_set():
                    self.paused.set()
                    self.go_on.wait(60)
                    time.sleep(0.05)
                piece = self.payload[sent : sent + self.piece]
                sock.sendall(self._frame(piece))
                sent += len(piece)
            if self.chunked:
                sock.sendall(b"0\r\n\r\n")
            response = http.client.HTTPResponse(sock)
            try:
                response.begin()
                headers = {k.lower(): v for k, v in response.getheaders()}
                return ("answer", response.status, headers, response.read())
            finally:
                response.close()


def is_short_plain_message(answer_headers: dict[str, str], body: bytes) -> bool:
    """A one-line plain-text message: no traceback, no HTML, no internals."""
    text = body.decode(errors="replace")
    return (
        answer_headers.get("content-type", "").startswith("text/plain")
        and 0 < len(body) <= 200
        and text.count("\n") <= 1
        and "Traceback" not in text
        and "<" not in text
    )


def has_retry_after(headers: dict[str, str]) -> bool:
    value = headers.get("retry-after", "")
    return value.isdigit() and 0 < int(value) <= 3600
