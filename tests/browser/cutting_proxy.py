"""A TCP proxy in front of the server that can cut one connection mid-request, as a network does.

Playwright's ``page.route`` sees whole requests only; a cut in the middle of an upload's body needs
the bytes themselves. ``cut_after(n)`` arms the proxy: the first connection whose client has then
sent more than ``n`` bytes (counted over the connection's life) is closed both ways at once, and the
proxy disarms. The browser sees a reset connection; the server, a client gone mid-body.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

BUFFER = 64 * 1024


class CuttingProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.cuts = 0
        self._limit: int | None = None
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._open: set[socket.socket] = set()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut_after(self, limit: int) -> None:
        with self._lock:
            self._limit = limit

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            for sock in list(self._open):
                _close(sock)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed
                return
            server = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self._lock:
                self._open.update((client, server))
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, upstream: bool) -> None:
        sent = 0
        with suppress(OSError):  # the other direction closed both sockets
            while data := source.recv(BUFFER):
                if upstream and self._cuts_at(sent + len(data)):
                    break
                sink.sendall(data)
                sent += len(data)
        for sock in (source, sink):
            _close(sock)
            with self._lock:
                self._open.discard(sock)

    def _cuts_at(self, total: int) -> bool:
        with self._lock:
            if self._limit is None or total <= self._limit:
                return False
            self._limit = None
            self.cuts += 1
            return True


def _close(sock: socket.socket) -> None:
    with suppress(OSError):  # already closed by the other side
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


@contextmanager
def cutting_proxy(upstream_port: int) -> Iterator[CuttingProxy]:
    proxy = CuttingProxy(upstream_port)
    try:
        yield proxy
    finally:
        proxy.close()
