"""Load on the server under test: a few client threads doing small uploads and key fetches, a
/healthz prober, and the check that every acknowledged upload comes back intact (decrypted by Tink)."""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable

from cryptofiles.dev.tink_oracle import TinkError, tink_decrypt
from tests.support.loopback import Answer, Client, call


@dataclasses.dataclass
class Outcome:
    kind: str  # "upload", "key" or "healthz"
    started: float
    ended: float
    status: int | None  # None: a connection-level error
    headers: dict[str, str]
    body: bytes
    error: str = ""

    @property
    def seconds(self) -> float:
        return self.ended - self.started


@dataclasses.dataclass
class Acknowledged:
    client: Client
    file_id: str
    payload: bytes


class Load:
    """A few client threads doing small uploads and key fetches, and a /healthz prober.

    Bounded: every thread stops at ``stop()``, after ``max_requests`` each, or ``max_seconds`` after
    the start, whichever comes first; every request has a client timeout.
    """

    def __init__(
        self,
        clients: list[Client],
        *,
        max_requests: int = 400,
        max_seconds: float = 60,
        request_timeout: float = 30,
    ) -> None:
        self.clients = clients
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.request_timeout = request_timeout
        self.outcomes: list[Outcome] = []
        self.acknowledged: list[Acknowledged] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._user, args=(c, i), daemon=True)
            for i, c in enumerate(clients)
        ] + [threading.Thread(target=self._prober, args=(clients[0].port,), daemon=True)]
        self._deadline = 0.0

    def __enter__(self) -> Load:
        self._deadline = time.monotonic() + self.max_seconds
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.request_timeout + 5)
        assert not any(t.is_alive() for t in self._threads), "a load thread did not end"

    def _running(self, n: int) -> bool:
        return (
            not self._stop.is_set() and n < self.max_requests and time.monotonic() < self._deadline
        )

    def _record(self, kind: str, started: float, answer: Answer | None, error: str = "") -> Outcome:
        outcome = Outcome(
            kind,
            started,
            time.monotonic(),
            answer.status if answer else None,
            answer.headers if answer else {},
            answer.body[:500] if answer else b"",
            error,
        )
        with self._lock:
            self.outcomes.append(outcome)
        return outcome

    def _timed(self, kind: str, request: Callable[[], Answer]) -> tuple[Outcome, Answer | None]:
        started = time.monotonic()
        try:
            answer = request()
        except OSError as exc:
            return self._record(kind, started, None, type(exc).__name__), None
        return self._record(kind, started, answer), answer

    def _user(self, client: Client, index: int) -> None:
        mine: list[str] = []
        n = 0
        while self._running(n):
            n += 1
            # Small files: the point is many requests, and every one is checked afterwards.
            payload = os.urandom(1 + (n * 7919 + index * 104729) % 4096)
            _, answer = self._timed(
                "upload", lambda p=payload: client.upload(p, timeout=self.request_timeout)
            )
            if answer is not None and answer.status == 201:
                mine.append(answer.text)
                with self._lock:
                    self.acknowledged.append(Acknowledged(client, answer.text, payload))
            if mine:
                file_id = mine[n % len(mine)]
                self._timed(
                    "key",
                    lambda f=file_id: client.get(f"/files/{f}/key", timeout=self.request_timeout),
                )
            time.sleep(0.05)

    def _prober(self, port: int) -> None:
        n = 0
        while self._running(n):
            n += 1
            self._timed("healthz", lambda: call(port, "GET", "/healthz", timeout=10))
            time.sleep(0.2)

    def between(self, start: float, end: float, kind: str | None = None) -> list[Outcome]:
        """Outcomes of requests that started at or after ``start`` and ended by ``end``."""
        with self._lock:
            return [
                o
                for o in self.outcomes
                if o.started >= start and o.ended <= end and (kind is None or o.kind == kind)
            ]

    def snapshot(self) -> list[Outcome]:
        with self._lock:
            return list(self.outcomes)


def check_acknowledged(files: list[Acknowledged]) -> list[str]:
    """Download and Tink-decrypt every acknowledged upload; the problems found (none: [])."""
    problems = []
    for item in files:
        try:
            ciphertext = item.client.ciphertext(item.file_id)
            if tink_decrypt(item.client.key(item.file_id), ciphertext) != item.payload:
                problems.append(f"{item.file_id}: decrypts to other content")
        except (AssertionError, OSError, TinkError) as exc:
            problems.append(f"{item.file_id}: {type(exc).__name__}: {exc}")
    return problems
