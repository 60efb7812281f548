"""The ``cryptofiles`` command: a client of the server's HTTP API, and admin tasks on its database.

Client commands speak HTTP with the standard library only, stream every transfer in blocks (memory
use does not grow with file size) and decrypt downloads on this machine: the server's ``/plaintext``
route is never used, so with ``download --decrypt`` plaintext exists only here. Output files are
written to a private temporary file beside the target and renamed onto it only once complete, so a
failed, interrupted or tampered transfer never leaves partial output.

``admin`` commands do not use HTTP: they call the services on the database with the server's own
configuration (environment, ``.env``, and the launcher's ``var/secrets.env`` for missing secrets).

Exit status: 0 success; 1 other errors (the server's message is shown); 2 usage or configuration
error; 3 server or database unreachable; 4 not logged in or token rejected; 5 no such file; 6 file
over the server's size limit; 7 transfer interrupted; 8 decryption failed (wrong key or tampered
data); 130 interrupted by Ctrl-C.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import errno
import getpass
import http.client
import json
import logging
import mimetypes
import os
import re
import select
import ssl
import stat
import sys
import tempfile
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from cryptofiles import __version__

if TYPE_CHECKING:  # the server-side modules are imported by the commands that need them only
    from cryptofiles.config import Settings
    from cryptofiles.files import RewrapReport
    from cryptofiles.services import Services

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_AUTH = 4
EXIT_NOT_FOUND = 5
EXIT_TOO_LARGE = 6
EXIT_INTERRUPTED = 7
EXIT_DECRYPT = 8
EXIT_SIGINT = 130

DEFAULT_URL = "http://127.0.0.1:5000"
URL_ENV = "CRYPTOFILES_URL"
PASSWORD_ENV = "CRYPTOFILES_PASSWORD"  # noqa: S105 (the name of a variable, not a password)

# One segment of the file format: the server reads uploads in blocks of this size too.
BLOCK = 1 << 20
PROGRESS_MIN_BYTES = 1 << 20
TIMEOUT_SECONDS = 120.0
ERROR_BODY_LIMIT = 16 << 10  # an error answer is one line; never buffer a large one
MAX_MESSAGE_CHARS = 300
DEFAULT_PAGE_SIZE = 200
MAX_PAGE_SIZE = 1000  # the server's limit
KEY_BYTES = 32

CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


class CliError(Exception):
    """A failure to report as one line on stderr, with the exit status it maps to."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def describe(exc: BaseException) -> str:
    """A short reason for an OS or network error, without a traceback."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def clean(text: str) -> str:
    """Text from elsewhere (a server, a file name) made safe to print on one terminal line."""
    text = CONTROL_CHARS.sub(" ", text).strip()
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 3] + "..."


# -- progress ------------------------------------------------------------------------------------


class Progress(Protocol):
    def update(self, n: int) -> object: ...


class _NoProgress:
    def update(self, n: int) -> None:
        pass


@contextlib.contextmanager
def progress(total: int | None, label: str) -> Iterator[Progress]:
    """A progress bar on stderr for transfers of at least 1 MiB, only when a person watches it."""
    if total is None or total < PROGRESS_MIN_BYTES or not sys.stderr.isatty():
        yield _NoProgress()
        return
    from tqdm import tqdm  # imported only when a bar is drawn: most commands never need it

    bar = tqdm(
        total=total,
        desc=clean(label),
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    try:
        yield bar  # tqdm is untyped; its bars have update()
    finally:
        bar.close()


# -- passwords -----------------------------------------------------------------------------------


def read_password(args: argparse.Namespace, *, confirm: bool) -> str:
    """The password from --password-stdin, else $CRYPTOFILES_PASSWORD, else a prompt.

    Never from the command line: arguments are visible to every local user (``ps``) and land in
    shell history.
    """
    if args.password_stdin:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    elif os.environ.get(PASSWORD_ENV):
        password = os.environ[PASSWORD_ENV]
    else:
        password = prompt_password(confirm)
    if not password:
        raise CliError("the password is empty", EXIT_USAGE)
    return password


def prompt_password(confirm: bool) -> str:
    if not has_terminal():
        # getpass would fall back to echoing the password from stdin: refuse instead.
        raise CliError(
            f"no terminal to ask for the password on: use --password-stdin or {PASSWORD_ENV}",
            EXIT_USAGE,
        )
    password = getpass.getpass("Password: ")
    if confirm and getpass.getpass("Password (again): ") != password:
        raise CliError("the passwords do not match", EXIT_USAGE)
    return password


def has_terminal() -> bool:
    try:
        with open("/dev/tty", "rb"):  # getpass prompts on the terminal, not on stdin
            return True
    except OSError:
        return sys.stdin.isatty()


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


def write_private_file(path: Path, text: str) -> None:
    """Replace ``path`` atomically with a mode-0600 file: readers see the old or the new content."""
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:  # mkstemp creates it 0600
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    fsync_directory(path.parent)


def fsync_directory(directory: Path) -> None:
    # The rename is durable only once the directory entry is on disk (a no-op where unsupported).
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


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

    def check(self, method: str, path: str, response: http.client.HTTPResponse) -> None:
        """Return if the answer is a success, else raise the CliError it maps to."""
        if 200 <= response.status < 300:
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
        self, method: str, path: str, *, json_body: Mapping[str, Any] | None = None
    ) -> Iterator[http.client.HTTPResponse]:
        """Send a small request; yield the successful response to read (the body is streamed)."""
        body = None if json_body is None else json.dumps(json_body).encode()
        extra = {} if body is None else {"Content-Type": "application/json"}
        conn = self.connect()
        try:
            with self.network():
                conn.request(method, self.url.prefix + path, body=body, headers=self.headers(extra))
                response = conn.getresponse()
            self.check(method, path, response)
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
        conn = self.connect()
        try:
            with self.network():
                conn.putrequest("POST", self.url.prefix + path, skip_accept_encoding=True)
                for name, value in self.headers(headers).items():
                    conn.putheader(name, value)
                conn.putheader("Content-Length", str(size))
                conn.endheaders()
            complete = self._send_body(conn, source, size, label)
            with self.network():
                response = conn.getresponse()
            self.check("POST", path, response)
            if not complete:  # a success for a body we did not finish sending would be a lie
                raise CliError(
                    "the upload stopped before the whole file was sent", EXIT_INTERRUPTED
                )
            with self.network():
                return json_object(response.read())
        finally:
            conn.close()

    def _send_body(
        self, conn: http.client.HTTPConnection, source: BinaryIO, size: int, label: str
    ) -> bool:
        """Send the body; False if it stopped early because the server answered (or hung up)."""
        remaining = size
        with progress(size, label) as bar:
            while remaining:
                block = source.read(min(BLOCK, remaining))
                if not block:
                    raise CliError(f"{label} got shorter while it was being uploaded")
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


# -- local files ---------------------------------------------------------------------------------


def safe_filename(name: str | None) -> str | None:
    """A name from the server made safe to create in the current directory, or None.

    The name is whatever the uploader sent: keep only its last path component, so that
    "../../.bashrc" cannot write outside the target directory.
    """
    if not name:
        return None
    base = CONTROL_CHARS.sub("_", re.split(r"[/\\]", name)[-1]).strip()
    return None if base in ("", ".", "..") else base


def disposition_filename(value: str | None) -> str | None:
    """The file name of a Content-Disposition header, preferring RFC 8187's ``filename*``."""
    if not value:
        return None
    extended = re.search(r"filename\*\s*=\s*UTF-8''([^;\s]+)", value, re.IGNORECASE)
    if extended:
        return urllib.parse.unquote(extended.group(1), errors="replace")
    plain = re.search(r'filename\s*=\s*"([^"]*)"', value, re.IGNORECASE)
    return plain.group(1) if plain else None


def output_path(requested: str | None, default: str) -> Path:
    """-o PATH, or the default name in the current directory (or in PATH when it is a folder)."""
    if requested is None:
        return Path(default)
    path = Path(requested)
    return path / default if path.is_dir() else path


def refuse_existing(target: Path, force: bool) -> None:
    if not force and (target.exists() or target.is_symlink()):
        raise CliError(f"{target} already exists (use --force to replace it)")


@contextlib.contextmanager
def atomic_output(target: Path, *, force: bool) -> Iterator[BinaryIO]:
    """A private temporary file beside ``target``, put in its place only if the block succeeds.

    So a failed, interrupted or tampered transfer never leaves partial (or unauthenticated)
    output at ``target``; the result is mode 0600, as decrypted content deserves.
    """
    refuse_existing(target, force)
    fd, temp = tempfile.mkstemp(prefix=".cryptofiles-", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as sink:
            yield sink
            sink.flush()
            os.fsync(sink.fileno())
        publish(Path(temp), target, force)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    fsync_directory(target.parent)


def publish(temp: Path, target: Path, force: bool) -> None:
    if force:
        os.replace(temp, target)
        return
    try:
        # link() fails if the target exists, unlike rename(): no file that appeared meanwhile is
        # clobbered without --force.
        os.link(temp, target)
    except FileExistsError:
        raise CliError(f"{target} already exists (use --force to replace it)") from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        refuse_existing(target, force)  # a file system without hard links: check, then rename
        os.replace(temp, target)
        return
    os.unlink(temp)


def file_blocks(source: BinaryIO, bar: Progress) -> Iterator[bytes]:
    while block := source.read(BLOCK):
        bar.update(len(block))
        yield block


def counted(blocks: Iterable[bytes], bar: Progress) -> Iterator[bytes]:
    for block in blocks:
        bar.update(len(block))
        yield block


def parse_key(text: str) -> bytes:
    """A 32-byte file key from base64 (standard or URL-safe, padding and whitespace optional)."""
    cleaned = "".join(text.split()).rstrip("=").replace("-", "+").replace("_", "/")
    try:
        key = base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise CliError("the key is not valid base64", EXIT_USAGE) from None
    if len(key) != KEY_BYTES:
        raise CliError(f"the key must decode to {KEY_BYTES} bytes, not {len(key)}", EXIT_USAGE)
    return key


def read_key_file(name: str) -> bytes:
    """The key in a file ('-': stdin) as base64 text, or as the 32 raw bytes."""
    if name == "-":
        raw = sys.stdin.buffer.read(4096)
    else:
        with open(name, "rb") as handle:
            raw = handle.read(4096)
    try:
        return parse_key(raw.decode("ascii"))
    except (UnicodeDecodeError, CliError):
        if len(raw) == KEY_BYTES:  # 32 raw bytes; base64 of a 32-byte key is 44 characters
            return raw
        raise CliError(f"{name}: expected a key in base64 (or 32 raw bytes)", EXIT_USAGE) from None


def decrypt_into(key: bytes, ciphertext: Iterable[bytes], sink: BinaryIO) -> None:
    """Decrypt a ciphertext stream into ``sink``, segment by segment; exit 8 if it is rejected."""
    from cryptofiles import crypto

    try:
        for plain in crypto.decrypt_stream(key, ciphertext):
            sink.write(plain)
    except crypto.DecryptionError as exc:
        raise CliError(f"decryption failed: {exc}", EXIT_DECRYPT) from None


# -- client commands -----------------------------------------------------------------------------


def server_url(args: argparse.Namespace) -> ServerUrl:
    return ServerUrl.parse(args.server or os.environ.get(URL_ENV) or DEFAULT_URL)


def token_store() -> TokenStore:
    return TokenStore(config_dir() / "token")


def logged_in_api(args: argparse.Namespace) -> Api:
    url = server_url(args)
    token = token_store().get(url)
    if token is None:
        raise CliError(f"not logged in to {url}: run `cryptofiles login NAME`", EXIT_AUTH)
    return Api(url, token)


def cmd_register(args: argparse.Namespace) -> int:
    password = read_password(args, confirm=True)
    # A JSON body rather than the seed's headers: it carries any character, and proxies drop
    # header names with underscores (New_User_Name) by default.
    body = {"New_User_Name": args.name, "New_User_Password": password}
    doc = Api(server_url(args)).call("POST", "/registration", json_body=body)
    print(f"Registered {doc.get('name', args.name)}")
    return EXIT_OK


def cmd_login(args: argparse.Namespace) -> int:
    password = read_password(args, confirm=False)
    url = server_url(args)
    body = {"User_Name": args.name, "User_Password": password}
    doc = Api(url).call("GET", "/login", json_body=body)
    token = doc.get("token")
    if not isinstance(token, str) or not token:
        raise CliError("the server's login answer holds no token")
    store = token_store()
    store.put(url, token)
    expires = f", expires {doc['expires_at']}" if isinstance(doc.get("expires_at"), str) else ""
    print(f"Logged in to {url} as {args.name} (token stored in {store.path}{expires})")
    return EXIT_OK


def cmd_logout(args: argparse.Namespace) -> int:
    url = server_url(args)
    store = token_store()
    token = store.get(url)
    if token is None:
        print(f"Not logged in to {url}", file=sys.stderr)
        return EXIT_OK
    try:
        Api(url, token).call("POST", "/logout")
    except CliError as exc:
        if exc.exit_code != EXIT_AUTH:
            raise  # e.g. unreachable: keep the token, which is still valid, so logout can retry
        print("The token had already expired or been revoked.", file=sys.stderr)
    store.remove(url)
    print(f"Logged out of {url}")
    return EXIT_OK


def cmd_whoami(args: argparse.Namespace) -> int:
    doc = logged_in_api(args).call("GET", "/test_login")
    print(doc.get("name", ""))
    return EXIT_OK


def cmd_upload(args: argparse.Namespace) -> int:
    api = logged_in_api(args)
    for name in args.files:
        print(upload_one(api, Path(name)), flush=True)  # each id as soon as it exists
    return EXIT_OK


def upload_one(api: Api, path: Path) -> str:
    with open(path, "rb") as source:
        info = os.fstat(source.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise CliError(f"{path}: not a regular file")
        # Header values go out as bytes: the server reads them as UTF-8, whatever the name holds.
        headers: dict[str, str | bytes] = {
            "Content-Type": "application/octet-stream",
            "X-File-Name": path.name.encode("utf-8", "replace"),
        }
        media_type, _ = mimetypes.guess_type(path.name)
        if media_type:
            headers["X-Content-Type"] = media_type
        doc = api.upload("/upload", source, info.st_size, headers, path.name)
    file_id = doc.get("id")
    if not isinstance(file_id, str):
        raise CliError("the server's upload answer holds no file id")
    return file_id


def cmd_ls(args: argparse.Namespace) -> int:
    files = list(list_files(logged_in_api(args), args.page_size))
    if args.json:
        print(json.dumps(files, indent=2, ensure_ascii=False))
        return EXIT_OK
    rows = [(str(f["id"]), str(f["size"]), when(f["created_at"]), f["name"] or "-") for f in files]
    width = max((len(size) for _, size, _, _ in rows), default=0)
    for file_id, size, created, name in rows:
        print(f"{file_id}  {size:>{width}}  {created}  {clean(name)}")
    return EXIT_OK


def list_files(api: Api, page_size: int) -> Iterator[dict[str, Any]]:
    """Every file of the user, newest first, page after page."""
    cursor: str | None = None
    seen: set[str] = set()
    while True:
        query = {"limit": str(page_size)} | ({"cursor": cursor} if cursor else {})
        doc = api.call("GET", "/files?" + urllib.parse.urlencode(query))
        yield from doc.get("files", [])
        cursor = doc.get("next_cursor")
        if not cursor or cursor in seen:  # a repeated cursor would loop forever
            return
        seen.add(cursor)


def when(iso: str) -> str:
    try:
        moment = datetime.fromisoformat(iso)
    except (TypeError, ValueError):
        return str(iso)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def cmd_info(args: argparse.Namespace) -> int:
    doc = logged_in_api(args).call("GET", file_path(args.id, "/info"))
    print(json.dumps(doc, indent=2, ensure_ascii=False))
    return EXIT_OK


def cmd_rm(args: argparse.Namespace) -> int:
    """Delete each id; unknown ids are reported and skipped, like rm(1) does."""
    api = logged_in_api(args)
    status = EXIT_OK
    for file_id in args.ids:
        try:
            api.call("DELETE", file_path(file_id))
        except CliError as exc:
            if exc.exit_code != EXIT_NOT_FOUND:
                raise
            print(f"cryptofiles: {exc.message}", file=sys.stderr)
            status = EXIT_NOT_FOUND
    return status


def fetch_key(api: Api, file_id: str) -> str:
    """The file's key in base64, checked to be one this client can decrypt with."""
    from cryptofiles import crypto

    doc = api.call("GET", file_path(file_id, "/key"))
    key = doc.get("key")
    if not isinstance(key, str):
        raise CliError("the server's key answer holds no key")
    if doc.get("algorithm", crypto.ALGORITHM) != crypto.ALGORITHM:
        raise CliError(f"the file uses {clean(str(doc['algorithm']))}, which this client lacks")
    return key


def cmd_key(args: argparse.Namespace) -> int:
    print(fetch_key(logged_in_api(args), args.id))  # printing the key is this command's purpose
    return EXIT_OK


def cmd_download(args: argparse.Namespace) -> int:
    api = logged_in_api(args)
    if args.output is not None and not Path(args.output).is_dir():
        refuse_existing(Path(args.output), args.force)  # before any transfer
    if args.decrypt:
        target = download_plaintext(api, args.id, args.output, args.force)
    else:
        target = download_ciphertext(api, args.id, args.output, args.force)
    print(target)
    return EXIT_OK


def download_ciphertext(api: Api, file_id: str, output: str | None, force: bool) -> Path:
    with api.exchange("GET", file_path(file_id)) as response:
        # Only the owner may read the name through /info; the download names the file for anyone.
        name = safe_filename(disposition_filename(response.getheader("Content-Disposition")))
        target = output_path(output, name or f"{safe_filename(file_id) or 'file'}.enc")
        with (
            atomic_output(target, force=force) as sink,
            progress(content_length(response), target.name) as bar,
        ):
            for block in counted(api.blocks(response), bar):
                sink.write(block)
    return target


def download_plaintext(api: Api, file_id: str, output: str | None, force: bool) -> Path:
    """Download the ciphertext and decrypt it here while it arrives, with the owner's key."""
    info = api.call("GET", file_path(file_id, "/info"))  # 404 unless the file is ours
    key = parse_key(fetch_key(api, file_id))
    default = safe_filename(info.get("name")) or safe_filename(file_id) or "file"
    target = output_path(output, default)
    refuse_existing(target, force)  # fail before the transfer, not after it
    with (
        api.exchange("GET", file_path(file_id)) as response,
        atomic_output(target, force=force) as sink,
        progress(content_length(response), target.name) as bar,
    ):
        decrypt_into(key, counted(api.blocks(response), bar), sink)
    return target


def cmd_decrypt(args: argparse.Namespace) -> int:
    """Decrypt a downloaded ciphertext offline: no server, no token."""
    key = read_key_file(args.key_file) if args.key_file else parse_key(args.key)
    source = Path(args.file)
    default = source.name.removesuffix(".enc") if source.suffix == ".enc" else source.name + ".dec"
    target = output_path(args.output, default)
    with open(source, "rb") as ciphertext:
        total = os.fstat(ciphertext.fileno()).st_size
        with atomic_output(target, force=args.force) as sink, progress(total, source.name) as bar:
            decrypt_into(key, file_blocks(ciphertext, bar), sink)
    print(target)
    return EXIT_OK


# -- admin commands: on the database, with the server's configuration ----------------------------

SECRET_NAMES = ("SECRET_KEY", "MASTER_KEYS")
NO_DATABASE = (
    "MONGODB_URI is not set: admin commands work on the database directly, so point it at the "
    "server's database. The local launcher's database (`make run`) lives only while it runs; its "
    "URI is in the launcher's log at start-up: 'Started a local database at mongodb://...'."
)
MASTER_KEYS_LINE = re.compile(r"^\s*(?:export\s+)?MASTER_KEYS\s*=")


def admin_settings(secrets_file: Path) -> Settings:
    """The server's settings; secrets missing from the configuration come from the launcher's
    secrets file, which is never created or extended here (a new MASTER_KEYS would not open
    anything stored)."""
    from cryptofiles.config import ConfigError, Settings, configured_values, read_env_file

    values = configured_values()
    if not values.get("MONGODB_URI", "").strip():
        raise CliError(NO_DATABASE, EXIT_USAGE)
    stored = read_env_file(secrets_file)
    for name in SECRET_NAMES:
        if not values.get(name, "").strip() and name in stored:
            values[name] = stored[name]
    try:
        return Settings.from_mapping(values)
    except ConfigError as exc:
        raise CliError(f"{exc} (nor found in {secrets_file})", EXIT_USAGE) from None


def redacted(uri: str) -> str:
    """A database URI without its credentials, to name it in messages."""
    parts = urllib.parse.urlsplit(uri)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


@contextlib.contextmanager
def open_services(settings: Settings) -> Iterator[Services]:
    """The server's own services (``services.build_services``), with database errors as CliError."""
    from cryptofiles.services import build_services, open_storage
    from cryptofiles.storage import DatabaseUnavailable, StorageError

    storage = open_storage(settings)
    try:
        yield build_services(settings, storage=storage)
    except DatabaseUnavailable:
        raise CliError(
            f"cannot reach the database at {redacted(settings.mongodb_uri)}", EXIT_UNREACHABLE
        ) from None
    except StorageError as exc:
        raise CliError(f"database error: {exc}") from None
    finally:
        storage.close()


def cmd_admin_init_db(args: argparse.Namespace) -> int:
    settings = admin_settings(args.secrets_file)
    with open_services(settings) as services:  # building them ensures the indexes
        revocations = (
            "TTL" if services.storage.ttl_supported else "plain; the server purges expired rows"
        )
    print(f"Database {settings.mongodb_db!r} at {redacted(settings.mongodb_uri)}: indexes ensured")
    print("  users: unique_name, unique_public_id")
    print(f"  revoked_tokens: expires_at ({revocations})")
    print("  files: files_by_owner, files_by_status")
    print("  ciphertext.chunks: files_id_1_n_1 (unique)")
    return EXIT_OK


def cmd_admin_sweep(args: argparse.Namespace) -> int:
    settings = admin_settings(args.secrets_file)
    with open_services(settings) as services:
        report = services.files.sweep(orphans=True)
    print(
        f"Swept: unfinished={report.unfinished} orphans={report.orphans}"
        f" ownerless={report.ownerless}"
    )
    return EXIT_OK


def cmd_admin_create_user(args: argparse.Namespace) -> int:
    from cryptofiles.auth import InvalidAccountData
    from cryptofiles.storage import NameTaken

    password = read_password(args, confirm=True)
    settings = admin_settings(args.secrets_file)
    # Building the services ensures the unique name index, which is what makes names unique.
    with open_services(settings) as services:
        try:
            user = services.accounts.register(args.name, password)
        except InvalidAccountData as exc:
            raise CliError(str(exc)) from None
        except NameTaken:
            raise CliError(f"the user name {args.name!r} is already taken") from None
    print(f"Created user {user.name} ({user.public_id})")
    return EXIT_OK


def cmd_admin_rotate(args: argparse.Namespace) -> int:
    """Re-wrap every file key under a new master key (file contents are untouched).

    Where the key ring lives decides what is done. In the launcher's secrets file: a new key is
    put first there (saved before anything is wrapped under it), then keys are re-wrapped. In
    the environment (or .env): nothing is edited, keys are re-wrapped under its first key.
    """
    from cryptofiles.config import configured_values

    if configured_values().get("MASTER_KEYS", "").strip():
        return rotate_configured_ring(args)
    return rotate_secrets_file_ring(args)


def rotate_configured_ring(args: argparse.Namespace) -> int:
    if args.key_id:
        raise CliError("--key-id applies only to a key ring kept in the secrets file", EXIT_USAGE)
    settings = admin_settings(args.secrets_file)
    with open_services(settings) as services:
        report = services.files.rewrap_all()
    print_rewrap(report, settings.master_keys.active_id)
    print(
        "MASTER_KEYS comes from the environment, so nothing was edited. To add a key, put a new "
        "entry first in MASTER_KEYS (keep the old ones after it), restart the server, and run "
        "this command again."
    )
    return EXIT_ERROR if report.failed else EXIT_OK


def rotate_secrets_file_ring(args: argparse.Namespace) -> int:
    from cryptofiles.config import read_env_file

    secrets_file: Path = args.secrets_file
    current = read_env_file(secrets_file).get("MASTER_KEYS")
    if not current:
        raise CliError(
            f"MASTER_KEYS is neither in the environment nor in {secrets_file}: nothing to rotate",
            EXIT_USAGE,
        )
    settings = admin_settings(secrets_file)
    # A default id per UTC day makes a re-run (after an interruption, or after the server's
    # restart) finish the same rotation instead of adding yet another key.
    new_id = args.key_id or "k" + datetime.now(UTC).strftime("%Y%m%d")
    from cryptofiles.services import build_services

    with open_services(settings) as services:
        services.storage.ping()  # no new key while the database cannot be re-wrapped anyway
        added = add_master_key(secrets_file, settings, new_id, current)
        # Wrap under what the file now holds, so no key is ever wrapped under an unsaved master.
        settings = admin_settings(secrets_file)
        report = build_services(settings, storage=services.storage).files.rewrap_all()
    print_rewrap(report, new_id)
    if added or report.rewrapped:
        print(
            "Restart the server now: it read the key ring at start-up, so until then it cannot "
            f"unwrap keys re-wrapped under {new_id}, and it wraps new files under the old key. "
            f"After the restart, run `cryptofiles admin rotate-master-key --key-id {new_id}` to "
            "re-wrap those. Old keys stay in the ring: backups made before now need them."
        )
    return EXIT_ERROR if report.failed else EXIT_OK


def add_master_key(secrets_file: Path, settings: Settings, new_id: str, current: str) -> bool:
    """Put a new key ``new_id`` first in the file's ring; False if it is the active one already."""
    from cryptofiles.crypto import KeyRing, KeyRingError

    ring = settings.master_keys
    if new_id == ring.active_id:
        print(f"{new_id} is already the active master key: re-wrapping only", file=sys.stderr)
        return False
    if new_id in ring.ids():
        raise CliError(f"{new_id!r} is an older key of the ring: pick a new --key-id", EXIT_USAGE)
    try:
        entry = KeyRing.generate_entry(new_id)
    except KeyRingError as exc:
        raise CliError(f"--key-id: {exc}", EXIT_USAGE) from None
    prepend_master_key(secrets_file, entry, current)
    print(f"Added master key {new_id} first in MASTER_KEYS in {secrets_file}")
    return True


def prepend_master_key(secrets_file: Path, entry: str, current: str) -> None:
    """Put ``entry`` first in the file's MASTER_KEYS line; the rest of the file is kept as is."""
    lines = secrets_file.read_text(encoding="utf-8").splitlines(keepends=True)
    hits = [n for n, line in enumerate(lines) if MASTER_KEYS_LINE.match(line)]
    if len(hits) != 1:
        raise CliError(f"{secrets_file} should hold exactly one MASTER_KEYS line", EXIT_USAGE)
    lines[hits[0]] = f"MASTER_KEYS={entry},{current}\n"
    write_private_file(secrets_file, "".join(lines))


def print_rewrap(report: RewrapReport, active_id: str) -> None:
    print(
        f"Re-wrapped under {active_id}: rewrapped={report.rewrapped} skipped={report.skipped} "
        f"failed={report.failed}"
    )
    if report.failed:
        print("Some keys could not be unwrapped (see above); they were left as they are.")


# -- the command line ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cryptofiles",
        description="Client of a crypto-files-server, and its admin tasks.",
        epilog="Exit status: 0 ok, 1 error, 2 usage, 3 unreachable, 4 not logged in, "
        "5 no such file, 6 too large, 7 interrupted transfer, 8 decryption failed.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--server", help=f"server URL (default: ${URL_ENV}, else {DEFAULT_URL})", metavar="URL"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_account_commands(commands)
    add_file_commands(commands)
    add_admin_commands(commands)
    return parser


def password_options() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--password-stdin",
        action="store_true",
        help=f"read the password from the first line of stdin (else ${PASSWORD_ENV}, else a "
        "prompt); never give it as an argument",
    )
    return options


def add_account_commands(commands: Any) -> None:
    pw = password_options()
    cmd = commands.add_parser("register", parents=[pw], help="create an account")
    cmd.add_argument("name")
    cmd.set_defaults(handler=cmd_register)
    cmd = commands.add_parser("login", parents=[pw], help="log in and store the token")
    cmd.add_argument("name")
    cmd.set_defaults(handler=cmd_login)
    cmd = commands.add_parser("logout", help="revoke the stored token and forget it")
    cmd.set_defaults(handler=cmd_logout)
    cmd = commands.add_parser("whoami", help="the name the stored token speaks for")
    cmd.set_defaults(handler=cmd_whoami)


def add_file_commands(commands: Any) -> None:
    cmd = commands.add_parser("upload", help="upload files; prints one id per line")
    cmd.add_argument("files", nargs="+", metavar="FILE")
    cmd.set_defaults(handler=cmd_upload)
    cmd = commands.add_parser("ls", help="list your files: id, size, created, name")
    cmd.add_argument("--json", action="store_true", help="print the list as JSON")
    cmd.add_argument("--page-size", type=page_size, default=DEFAULT_PAGE_SIZE, help="per request")
    cmd.set_defaults(handler=cmd_ls)
    cmd = commands.add_parser("info", help="a file's metadata, as JSON")
    cmd.add_argument("id")
    cmd.set_defaults(handler=cmd_info)
    cmd = commands.add_parser("rm", help="delete files")
    cmd.add_argument("ids", nargs="+", metavar="ID")
    cmd.set_defaults(handler=cmd_rm)
    cmd = commands.add_parser("key", help="print a file's key (base64); owner only")
    cmd.add_argument("id")
    cmd.set_defaults(handler=cmd_key)
    cmd = commands.add_parser(
        "download", help="download a file's ciphertext, or with --decrypt its content"
    )
    cmd.add_argument("id")
    cmd.add_argument(
        "-o",
        "--output",
        metavar="PATH",
        help="output file or folder (default: <name>.enc here, or with --decrypt the original name)",
    )
    cmd.add_argument("--decrypt", action="store_true", help="decrypt here while downloading")
    cmd.add_argument("--force", action="store_true", help="replace an existing output file")
    cmd.set_defaults(handler=cmd_download)
    cmd = commands.add_parser("decrypt", help="decrypt a downloaded ciphertext, offline")
    cmd.add_argument("file", metavar="FILE")
    keys = cmd.add_mutually_exclusive_group(required=True)
    keys.add_argument("--key", help="the key in base64 (visible in `ps`: prefer --key-file)")
    keys.add_argument("--key-file", metavar="F", help="file holding the key ('-': stdin)")
    cmd.add_argument("-o", "--output", metavar="PATH", help="default: its name without .enc, here")
    cmd.add_argument("--force", action="store_true", help="replace an existing output file")
    cmd.set_defaults(handler=cmd_decrypt)


def add_admin_commands(commands: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--secrets-file",
        type=Path,
        help="the launcher's secrets, used for SECRET_KEY/MASTER_KEYS missing from the "
        "environment (default: $CRYPTOFILES_VAR_DIR/secrets.env, else var/secrets.env)",
    )
    admin = commands.add_parser("admin", help="maintenance on the database (no HTTP)")
    tasks = admin.add_subparsers(dest="task", required=True, metavar="TASK")
    cmd = tasks.add_parser("init-db", parents=[common], help="create the indexes")
    cmd.set_defaults(handler=cmd_admin_init_db)
    cmd = tasks.add_parser("sweep", parents=[common], help="remove upload leftovers and orphans")
    cmd.set_defaults(handler=cmd_admin_sweep)
    cmd = tasks.add_parser(
        "rotate-master-key", parents=[common], help="re-wrap every file key under a new master key"
    )
    cmd.add_argument(
        "--key-id", help="id of the new key (default: k<UTC date>; a re-run finishes that rotation)"
    )
    cmd.set_defaults(handler=cmd_admin_rotate)
    cmd = tasks.add_parser(
        "create-user", parents=[common, password_options()], help="create an account"
    )
    cmd.add_argument("name")
    cmd.set_defaults(handler=cmd_admin_create_user)


def page_size(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= MAX_PAGE_SIZE:
        raise argparse.ArgumentTypeError(f"must be an integer from 1 to {MAX_PAGE_SIZE}")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "admin":
        if args.secrets_file is None:
            from cryptofiles.dev.serve import var_dir  # the launcher's rule, not a copy of it

            args.secrets_file = var_dir() / "secrets.env"
        # The services log what they skip or fail (e.g. a key that does not unwrap): show it.
        logging.basicConfig(level=logging.WARNING, format="cryptofiles: %(message)s")
    try:
        return int(args.handler(args))
    except CliError as exc:
        print(f"cryptofiles: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("cryptofiles: interrupted", file=sys.stderr)
        return EXIT_SIGINT
    except BrokenPipeError:
        # Whoever read our output stopped (`cryptofiles ls | head`): nothing to report. Point
        # stdout at /dev/null so that the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    except OSError as exc:  # local files: missing input, unwritable folder, full disk...
        where = f": {exc.filename}" if exc.filename else ""
        print(f"cryptofiles: {describe(exc)}{where}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
