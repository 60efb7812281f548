"""Talking to the server: its address (``ServerUrl``), HTTP requests (``Api``) and the tokens
stored per server (``TokenStore``).

Only the standard library speaks HTTP here. Every transfer goes in blocks, so memory use does not
grow with file size, and every failure becomes a ``CliError`` with the exit status it means:
unreachable (3), token rejected (4), no such file (5), too large (6), transfer broken off (7).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import select
import ssl
import urllib.parse
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from cryptofiles import __version__
from cryptofiles.cli import (
    EXIT_AUTH,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_TOO_LARGE,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    CliError,
)
from cryptofiles.cli.output import write_private_file
from cryptofiles.cli.terminal import Progress, clean, describe, progress

DEFAULT_URL = "http://127.0.0.1:5000"
URL_ENV = "CRYPTOFILES_URL"

# One segment of the file format: the server reads uploads in blocks of this size too.
BLOCK = 1 << 20
TIMEOUT_SECONDS = 120.0
ERROR_BODY_LIMIT = 16 << 10  # an error answer is one line; never buffer a large one


# -- the server's address and the stored tokens --------------------------------------------------


@dataclass(frozen=True)
class ServerUrl:
    scheme: str
    host: str
    port: int
    prefix: str  # a path the API is mounted under, without the trailing slash

    @classmethod
    def parse(cls, text: str) -> ServerUrl:
        parts = urllib.parse.urlsplit(text.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CliError(f"the server URL must look like {DEFAULT_URL}, not {text!r}", EXIT_USAGE)
        if parts.username or parts.password or parts.query or parts.fragment:
            raise CliError(
                "the server URL must not hold credentials, a query or a fragment", EXIT_USAGE
            )
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise CliError(f"the server URL has an invalid port: {text!r}", EXIT_USAGE) from None
        return cls(parts.scheme, parts.hostname, port, parts.path.rstrip("/"))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default_port = 443 if self.scheme == "https" else 80
        port = "" if self.port == default_port else f":{self.port}"
        return f"{self.scheme}://{host}{port}{self.prefix}"

    def connection(self) -> http.client.HTTPConnection:
        if self.scheme == "https":
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=TIMEOUT_SECONDS, context=ssl.create_default_context()
            )
        return http.client.HTTPConnection(self.host, self.port, timeout=TIMEOUT_SECONDS)


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME", "")
    # The XDG spec says a relative value is invalid and must be ignored.
    root = Path(base) if os.path.isabs(base) else Path.home() / ".config"
    return root / "cryptofiles"


class TokenStore:
    """Tokens by server URL in one JSON file (mode 0600, in a 0700 directory), so that logging in
    to a second server does not log out of the first."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def get(self, server: ServerUrl) -> str | None:
        return self._load().get(str(server))

    def put(self, server: ServerUrl, token: str) -> None:
        tokens = self._load()
        tokens[str(server)] = token
        self._save(tokens)

    def remove(self, server: ServerUrl) -> None:
        tokens = self._load()
        if tokens.pop(str(server), None) is not None:
            self._save(tokens)

    def _load(self) -> dict[str, str]:
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except ValueError:
            doc = None
        if not isinstance(doc, dict) or not all(isinstance(v, str) for v in doc.values()):
            raise CliError(f"{self.path} is damaged: delete it and log in again")
        return doc

    def _save(self, tokens: Mapping[str, str]) -> None:
        directory = self.path.parent
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)  # mkdir's mode is subject to umask, and the folder may be older
        write_private_file(self.path, json.dumps(tokens, indent=2) + "\n")


# -- HTTP ----------------------------------------------------------------------------------------


def server_message(response: http.client.HTTPResponse, data: bytes) -> str:
    """The one-line message of an error answer: RFC 9457 ``detail``, a JSON message, or text."""
    if "json" in (response.getheader("Content-Type") or ""):
        with contextlib.suppress(ValueError):
            doc = json.loads(data)
            for field in ("detail", "message", "title"):
                if isinstance(doc, dict) and isinstance(doc.get(field), str) and doc[field]:
                    return clean(doc[field])
    lines = data.decode("utf-8", "replace").strip().splitlines()
    return clean(lines[0]) if lines else f"{response.status} {response.reason}"


def json_object(data: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise CliError(
            "the server's answer is not the JSON object expected; is this the right URL?"
        )
    return doc


class Api:
    """Requests to one server, with the stored token when there is one; failures raise CliError."""

    def __init__(self, url: ServerUrl, token: str | None = None) -> None:
        self.url = url
        self.token = token

    def headers(self, extra: Mapping[str, str | bytes] | None = None) -> dict[str, str | bytes]:
        # JSON answers, so that a single value (token, id, key) is never confused with a message.
        headers: dict[str, str | bytes] = {
            "Accept": "application/json",
            "User-Agent": f"cryptofiles-cli/{__version__}",
        }
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        headers.update(extra or {})
        return headers

    def connect(self) -> http.client.HTTPConnection:
        """An open connection; only failures here mean the server is unreachable (exit 3)."""
        conn = self.url.connection()
        try:
            conn.connect()
        except OSError as exc:
            conn.close()
            raise CliError(
                f"cannot reach the server at {self.url}: {describe(exc)} "
                f"(set --server or {URL_ENV})",
                EXIT_UNREACHABLE,
            ) from None
        return conn

    @contextlib.contextmanager
    def network(self) -> Iterator[None]:
        """Around network calls on an open connection: a failure there is a broken transfer."""
        try:
            yield
        except (OSError, http.client.HTTPException) as exc:
            raise CliError(
                f"the connection to {self.url} broke off: {describe(exc)}", EXIT_INTERRUPTED
            ) from None

    def check(
        self,
        method: str,
        path: str,
        response: http.client.HTTPResponse,
        handled: Collection[int] = (),
    ) -> None:
        """Return if the answer is a success or a status in ``handled`` (the caller's to read),
        else raise the CliError it maps to."""
        if 200 <= response.status < 300 or response.status in handled:
            return
        with self.network():
            data = response.read(ERROR_BODY_LIMIT)
        message = server_message(response, data)
        if response.status == 401:
            if self.token:  # the stored token expired or was revoked: logging in again helps
                message += " Log in again: cryptofiles login NAME"
            raise CliError(message, EXIT_AUTH)
        if response.status == 404:
            raise CliError(f"{message} ({method} {path})", EXIT_NOT_FOUND)
        if response.status == 413:
            raise CliError(message, EXIT_TOO_LARGE)
        raise CliError(f"the server answered {response.status} {response.reason}: {message}")

    @contextlib.contextmanager
    def exchange(
        self,
        method: str,
        path: str,
        *,
        json_body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str | bytes] | None = None,
        handled: Collection[int] = (),
    ) -> Iterator[http.client.HTTPResponse]:
        """Send a small request; yield the successful response (or one with a ``handled``
        status) to read (the body is streamed)."""
        body = None if json_body is None else json.dumps(json_body).encode()
        extra = dict(headers or {}) | ({} if body is None else {"Content-Type": "application/json"})
        conn = self.connect()
        try:
            with self.network():
                conn.request(method, self.url.prefix + path, body=body, headers=self.headers(extra))
                response = conn.getresponse()
            self.check(method, path, response, handled)
            yield response
        finally:
            conn.close()

    def call(
        self, method: str, path: str, *, json_body: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """A request whose answer is a JSON object ({} for an empty answer such as 204)."""
        with self.exchange(method, path, json_body=json_body) as response, self.network():
            data = response.read()
        return json_object(data) if data else {}

    def blocks(self, response: http.client.HTTPResponse) -> Iterator[bytes]:
        """The response body in blocks, failing (exit 7) if it ends before its Content-Length.

        http.client just stops when the connection closes early, so the count is checked here.
        """
        expected = content_length(response)
        received = 0
        while True:
            with self.network():
                block = response.read(BLOCK)
            if not block:
                break
            received += len(block)
            yield block
        if expected is not None and received != expected:
            raise CliError(
                f"the download from {self.url} broke off after {received} of {expected} bytes",
                EXIT_INTERRUPTED,
            )

    def upload(
        self,
        path: str,
        source: BinaryIO,
        size: int,
        headers: Mapping[str, str | bytes],
        label: str,
    ) -> dict[str, Any]:
        """POST ``size`` bytes of ``source`` as the raw body, in blocks; the JSON answer."""
        with (
            progress(size, label) as bar,
            self.streamed("POST", path, source, size, headers, bar) as (response, complete),
        ):
            if not complete:  # a success for a body we did not finish sending would be a lie
                raise CliError(
                    "the upload stopped before the whole file was sent", EXIT_INTERRUPTED
                )
            with self.network():
                return json_object(response.read())

    @contextlib.contextmanager
    def streamed(
        self,
        method: str,
        path: str,
        source: BinaryIO,
        size: int,
        headers: Mapping[str, str | bytes],
        bar: Progress,
        handled: Collection[int] = (),
    ) -> Iterator[tuple[http.client.HTTPResponse, bool]]:
        """Send the next ``size`` bytes of ``source`` as the body, in blocks (never the whole
        file in memory); yield the answer (checked as ``check`` does) and whether the whole body
        went out before the server answered."""
        conn = self.connect()
        try:
            with self.network():
                conn.putrequest(method, self.url.prefix + path, skip_accept_encoding=True)
                for name, value in self.headers(headers).items():
                    conn.putheader(name, value)
                conn.putheader("Content-Length", str(size))
                conn.endheaders()
            complete = self._send_body(conn, source, size, bar)
            with self.network():
                response = conn.getresponse()
            self.check(method, path, response, handled)
            yield response, complete
        finally:
            conn.close()

    def _send_body(
        self, conn: http.client.HTTPConnection, source: BinaryIO, size: int, bar: Progress
    ) -> bool:
        """Send the body; False if it stopped early because the server answered (or hung up)."""
        remaining = size
        while remaining:
            block = source.read(min(BLOCK, remaining))
            if not block:
                raise CliError(f"{describe_source(source)} got shorter while it was being uploaded")
            try:
                conn.send(block)
            except OSError:
                # The server may have answered already (413, 401) and closed the connection:
                # its answer, read next, says more than a broken pipe.
                return False
            remaining -= len(block)
            bar.update(len(block))
            if remaining and answered_early(conn):
                return False
        return True


def describe_source(source: BinaryIO) -> str:
    name = getattr(source, "name", None)
    return os.path.basename(name) if isinstance(name, str) else "the file"


def answered_early(conn: http.client.HTTPConnection) -> bool:
    """True when the server has started to answer (or closed) while we are still sending."""
    if conn.sock is None:
        return True
    readable, _, _ = select.select([conn.sock], [], [], 0)
    return bool(readable)


def content_length(response: http.client.HTTPResponse) -> int | None:
    value = response.getheader("Content-Length")
    return int(value) if value and value.isdigit() else None


def file_path(file_id: str, suffix: str = "") -> str:
    # Quoted so that an id can never step onto another route ("../upload", "x/key").
    return f"/files/{urllib.parse.quote(file_id, safe='')}{suffix}"
