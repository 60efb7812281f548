"""A loopback TCP proxy that kills tus uploads mid-PATCH, for the interop tests with tus clients.

The clients (tuspy, tus-js-client) talk to the real server through it. It reads the requests the
client sends (heads and ``Content-Length`` bodies; tus clients send nothing else) and keeps a log
of them, and it cuts the connection when the PATCH bodies it has forwarded, counted over all PATCH
requests, reach each of ``cut_points`` in turn: a cut happens in the middle of whichever PATCH is
running, whatever the client's chunk size, and the log says exactly how much of it the server got.

Three ways to cut (``how``):
- ``"settle"``: the server side is half-closed (FIN), so the server reads exactly the bytes
  forwarded and then end of file; the proxy waits until the server has closed its side, throwing
  away whatever it answered, and only then resets the client's connection. When the client asks
  for the offset, the server has finished with the cut request, so the offset it reports is
  exactly determined by the bytes it got.
- ``"reset"``: both connections are reset at once (RST, ``SO_LINGER`` 0), as a failure both ends
  notice; the server may lose what sat unread in its socket buffer, and the cut request may still
  be running when the client comes back (the client has to retry a 409).
- ``"stall"``: the client's connection is reset, the server's is left open and silent, as when a
  network drops without either end hearing of it: the server learns only from its idle limit.

Server answers are forwarded as they come, unparsed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import struct
import threading
from collections.abc import Sequence

SOCKET_TIMEOUT = 300.0  # nothing here may hang a test for ever
SETTLE_SECONDS = 60.0
MAX_HEAD = 64 * 1024
CUTS = ("settle", "reset", "stall")


@dataclasses.dataclass
class Request:
    """One request as the proxy forwarded it."""

    method: str
    path: str
    upload_offset: int | None  # the request's Upload-Offset header
    content_length: int
    body_forwarded: int = 0
    cut: bool = False
    settled: bool | None = None  # "settle": the server closed its side after the cut
    answer_after_cut: bytes = b""  # "settle": the first line the server answered, discarded

    @property
    def reached(self) -> int:
        """The upload offset the server's copy of this request's body reaches."""
        return (self.upload_offset or 0) + self.body_forwarded


def _reset(sock: socket.socket) -> None:
    """Close with RST rather than FIN: unsent data is dropped and the peer sees a reset."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _head_fields(head: bytes) -> tuple[str, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    fields: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return method, path, fields


class CuttingProxy:
    """Listens on 127.0.0.1 (``port``) and forwards to ``target_port``; see the module docstring."""

    def __init__(
        self, target_port: int, cut_points: Sequence[int] = (), *, how: str = "settle"
    ) -> None:
        if how not in CUTS:
            raise ValueError(f"how must be one of {CUTS}")
        if list(cut_points) != sorted(cut_points):
            raise ValueError("cut points must be in ascending order")
        self.target_port = target_port
        self.how = how
        self.requests: list[Request] = []
        self.patch_bytes = 0  # PATCH body bytes forwarded, over all requests
        self.errors: list[str] = []  # what the proxy could not parse (a test should see none)
        self._cut_points = list(cut_points)
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._closed = False
        self._stalled: list[socket.socket] = []
        self._start(self._accept_loop)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def cuts(self) -> list[Request]:
        return [r for r in self.requests if r.cut]

    def patches(self) -> list[Request]:
        return [r for r in self.requests if r.method == "PATCH"]

    def close(self) -> None:
        self._closed = True
        # Wakes the thread blocked in accept(), which close() alone would not do on Linux.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for sock in self._stalled:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes the thread still reading it
            sock.close()
        for thread in list(self._threads):
            thread.join(timeout=5)

    def __enter__(self) -> CuttingProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
            except OSError as exc:
                self.errors.append(f"cannot reach the server: {exc}")
                _reset(client)
                continue
            client.settimeout(SOCKET_TIMEOUT)
            server.settimeout(SOCKET_TIMEOUT)
            _Connection(self, client, server).start()

    def _allowance(self, request: Request, piece: int) -> int | None:
        """How many bytes of ``piece`` of ``request``'s body pass before a cut (None: all)."""
        if request.method != "PATCH":
            return None
        with self._lock:
            if not self._cut_points:
                return None
            left = self._cut_points[0] - self.patch_bytes
            if left >= piece:
                return None
            self._cut_points.pop(0)
            return max(left, 0)

    def _forwarded(self, request: Request, count: int) -> None:
        request.body_forwarded += count
        if request.method == "PATCH":
            with self._lock:
                self.patch_bytes += count


class _Connection:
    """One client connection: a thread reading requests, a thread passing answers back."""

    def __init__(self, proxy: CuttingProxy, client: socket.socket, server: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.server = server
        self.cutting = threading.Event()
        self.discarded = b""
        self.answers = threading.Thread(target=self._answers, daemon=True)

    def start(self) -> None:
        self.answers.start()
        self.proxy._start(self._requests)

    def _answers(self) -> None:
        try:
            while data := self.server.recv(1 << 16):
                if self.cutting.is_set():
                    self.discarded = (self.discarded + data)[:512]
                else:
                    self.client.sendall(data)
        except OSError:
            pass
        if not self.cutting.is_set():
            with contextlib.suppress(OSError):
                self.client.shutdown(socket.SHUT_WR)

    def _requests(self) -> None:
        try:
            self._pump()
        except OSError:
            pass
        finally:
            if not self.cutting.is_set():
                self.answers.join(timeout=SOCKET_TIMEOUT)
                self.client.close()
                self.server.close()

    def _pump(self) -> None:
        head = b""
        request: Request | None = None
        remaining = 0
        while data := self.client.recv(1 << 16):
            while data:
                if request is None:
                    head += data
                    end = head.find(b"\r\n\r\n")
                    if end < 0:
                        if len(head) > MAX_HEAD:
                            raise self._lost("a request head too long")
                        self.server.sendall(data)
                        data = b""
                        continue
                    # Forward the head's last part; what follows it is body (or the next head).
                    rest = head[end + 4 :]
                    self.server.sendall(data[: len(data) - len(rest)])
                    request, remaining = self._parse(head[:end])
                    head, data = b"", rest
                    if remaining == 0:
                        request = None
                    continue
                piece = data[:remaining]
                allowed = self.proxy._allowance(request, len(piece))
                if allowed is not None:
                    self.server.sendall(piece[:allowed])
                    self.proxy._forwarded(request, allowed)
                    self._cut(request)
                    return
                self.server.sendall(piece)
                self.proxy._forwarded(request, len(piece))
                remaining -= len(piece)
                data = data[len(piece) :]
                if remaining == 0:
                    request = None
        self.server.shutdown(socket.SHUT_WR)

    def _parse(self, head: bytes) -> tuple[Request, int]:
        method, path, fields = _head_fields(head)
        if "transfer-encoding" in fields:
            raise self._lost("a chunked request body")
        offset = fields.get("upload-offset")
        length = int(fields.get("content-length", "0"))
        request = Request(method, path, int(offset) if offset else None, length)
        self.proxy.requests.append(request)
        return request, length

    def _lost(self, what: str) -> OSError:
        self.proxy.errors.append(f"cannot follow {what}; connection dropped")
        self.cutting.set()
        self._reset_both()
        return OSError(what)

    def _cut(self, request: Request) -> None:
        request.cut = True
        self.cutting.set()
        if self.proxy.how == "stall":
            _reset(self.client)  # the server's side stays open until the proxy closes
            self.proxy._stalled.append(self.server)
            return
        if self.proxy.how == "settle":
            self.server.shutdown(socket.SHUT_WR)
            self.answers.join(timeout=SETTLE_SECONDS)
            request.settled = not self.answers.is_alive()
            request.answer_after_cut = self.discarded.split(b"\r\n", 1)[0]
        self._reset_both()

    def _reset_both(self) -> None:
        # A socket that another thread is blocked reading is not released by close(), so no RST
        # would go out: wake that reader first (SHUT_RD sends nothing on the wire).
        with contextlib.suppress(OSError):
            self.server.shutdown(socket.SHUT_RD)
        self.answers.join(timeout=5)
        _reset(self.client)
        _reset(self.server)
