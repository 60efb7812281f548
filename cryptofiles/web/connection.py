"""The client's connection inside a request: how long it may stay silent, and what a stall means.

gunicorn's gevent worker bounds the time to receive a request head (``--keep-alive``, set from
``HEADER_TIMEOUT_SECONDS`` by serve.py). Inside a request the bound is ours: a client that sends or
accepts no byte for ``IDLE_TIMEOUT_SECONDS`` is cut off, so a body trickled at a few bytes a minute
cannot hold an upload (and its pending record) open for ever. Under gevent the socket's timeout
applies to each wait for the socket, so a slow but steady client is never cut off.
"""

from __future__ import annotations

import contextlib
import socket
from typing import IO

from flask import Flask, request

# The raw socket gunicorn puts into every WSGI environment (absent under Flask's test client).
SOCKET_KEY = "gunicorn.socket"


class ClientStalled(Exception):
    """The client sent nothing for the idle limit while we waited for its body."""


def init_idle_limit(app: Flask, seconds: int) -> None:
    @app.before_request
    def limit_idle_time() -> None:
        sock = request.environ.get(SOCKET_KEY)
        if sock is not None:
            sock.settimeout(seconds)


def read(stream: IO[bytes], size: int) -> bytes:
    """``stream.read(size)``, with a stall turned into ``ClientStalled``."""
    try:
        return stream.read(size)
    except TimeoutError:
        stop_reading()
        raise ClientStalled("The client sent nothing for too long; the request is ended.") from None


def stop_reading() -> None:
    """Shut the socket for reading: the rest of a stalled body is not waited for.

    gunicorn would otherwise wait for (and drain) the remaining body before the connection's next
    request, time out again and log that as a socket error. The answer can still be written.
    """
    sock = request.environ.get(SOCKET_KEY)
    if sock is not None:
        with contextlib.suppress(OSError):  # already gone
            sock.shutdown(socket.SHUT_RD)
