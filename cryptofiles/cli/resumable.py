"""Resumable uploads (``upload --resume``): a tus 1.0 client, and the uploads in progress, kept
beside the token store so that running the same command again continues where the last run stopped.

``POST /uploads/`` creates the upload (its id is the file's id); one ``PATCH`` then streams the
rest of the file from its offset, in blocks. The server encrypts bytes as they arrive and keeps
only whole segments, so after a cut (network, Ctrl-C, a restart) it reports the end of the last
segment it stored, and ``HEAD`` says where to go on from. A cut ``PATCH`` is retried for about a
minute here (``HEAD``, then ``PATCH`` the rest); past that the command fails and a re-run resumes.

The state file holds, per upload in progress, the server, the file's absolute path, size and
modification time (a changed file starts again) and the upload's URL; no token, no content.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import http.client
import json
import mimetypes
import os
import stat
import sys
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import BinaryIO

from cryptofiles.cli import (
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_SIGINT,
    EXIT_UNREACHABLE,
    CliError,
)
from cryptofiles.cli.output import write_private_file
from cryptofiles.cli.terminal import Progress, clean, progress
from cryptofiles.cli.transport import Api, config_dir

TUS_VERSION = "1.0.0"
PREFIX = "/uploads/"
# Seconds before each automatic retry of a cut transfer, about a minute in all: time for a server
# to restart, and for a request whose client vanished without a word to let go of the upload (it
# answers 409 until then: the server takes such a request's lock over after some seconds without
# bytes, or its idle limit ends the request). A retry that finds the upload further on starts the
# count again.
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
# 409: the cut request may still hold the upload for a moment; 502-504: a proxy in front of a
# server that is restarting.
RETRY_STATUSES = frozenset({409, 502, 503, 504})
GONE_STATUSES = frozenset({404, 410})
RETRY_EXITS = frozenset({EXIT_INTERRUPTED, EXIT_UNREACHABLE})


class Retry(Exception):
    """A failure that may pass: the connection broke, or the server asked to try again."""


class Gone(Exception):
    """The server no longer knows the upload (expired, removed, or never ours)."""


# -- the uploads in progress ---------------------------------------------------------------------


@dataclass(frozen=True)
class Pending:
    server: str
    path: str  # absolute, symlinks resolved
    size: int
    mtime_ns: int
    url: str = ""
    expires: str | None = None  # the server's Upload-Expires (RFC 7231 date)

    def same_file(self, other: Pending) -> bool:
        return (self.server, self.path, self.size, self.mtime_ns) == (
            other.server, other.path, other.size, other.mtime_ns
        )  # fmt: skip

    def expired(self, now: datetime) -> bool:
        if not self.expires:
            return False
        try:
            return parsedate_to_datetime(self.expires) <= now
        except (TypeError, ValueError):
            return False


class ResumeStore:
    """The uploads in progress in one JSON file (mode 0600, beside the token store); entries past
    their expiry are dropped whenever the file is written."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def find(self, key: Pending) -> Pending | None:
        return next((p for p in self._load() if p.same_file(key)), None)

    def put(self, entry: Pending) -> None:
        with self._locked():
            self._save([entry, *(p for p in self._load() if not p.same_file(entry))])

    def remove(self, key: Pending) -> None:
        with self._locked():
            kept = [p for p in self._load() if not p.same_file(key)]
            self._save(kept)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # Two uploads running at once must not drop each other's entry (read, change, write).
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _load(self) -> list[Pending]:
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            return [Pending(**entry) for entry in doc["uploads"]]
        except FileNotFoundError:
            return []
        except (ValueError, TypeError, KeyError):
            raise CliError(
                f"{self.path} is damaged: delete it (uploads in progress then start again)"
            ) from None

    def _save(self, entries: list[Pending]) -> None:
        now = datetime.now(UTC)
        doc = {"uploads": [asdict(p) for p in entries if not p.expired(now)]}
        os.chmod(self.path.parent, 0o700)
        write_private_file(self.path, json.dumps(doc, indent=2) + "\n")


def resume_store() -> ResumeStore:
    return ResumeStore(config_dir() / "uploads")


# -- the upload ----------------------------------------------------------------------------------


def upload_resumable(api: Api, path: Path, store: ResumeStore) -> str:
    """Upload ``path`` through tus, resuming the upload recorded for this very file if there is
    one; the file id."""
    with open(path, "rb") as source:
        info = os.fstat(source.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise CliError(f"{path}: not a regular file")
        key = Pending(str(api.url), str(path.resolve()), info.st_size, info.st_mtime_ns)
        with progress(info.st_size, path.name) as bar:
            upload = Upload(api, source, info.st_size, path.name, bar)
            try:
                file_id = upload.run(store, key)
            except KeyboardInterrupt:
                raise CliError(
                    f"interrupted: run the same command again with --resume to continue {path.name}"
                    " where the server stopped",
                    EXIT_SIGINT,
                ) from None
    store.remove(key)
    return file_id


class Upload:
    """One file's way through tus, with one progress bar across every request and retry."""

    def __init__(self, api: Api, source: BinaryIO, size: int, label: str, bar: Progress) -> None:
        self.api = api
        self.source = source
        self.size = size
        self.label = label
        self.bar = bar
        self.shown = 0  # where the bar stands

    def run(self, store: ResumeStore, key: Pending) -> str:
        entry = store.find(key)
        if entry is not None:
            file_id = upload_id(entry.url)
            try:
                self.send_rest(file_id, None)  # from where the server says
                return file_id
            except Gone:
                say(
                    f"the earlier upload of {self.label} is gone (expired or removed); starting again"
                )
        file_id, expires = self.create()
        store.put(Pending(**{**asdict(key), "url": self.url_of(file_id), "expires": expires}))
        try:
            self.send_rest(file_id, 0)
        except Gone:
            raise CliError(f"the server lost the upload of {self.label}; try again") from None
        return file_id

    def url_of(self, file_id: str) -> str:
        return f"{self.api.url}{self.path_of(file_id)}"

    @staticmethod
    def path_of(file_id: str) -> str:
        return PREFIX + urllib.parse.quote(file_id, safe="")

    def create(self) -> tuple[str, str | None]:
        headers = tus_headers(
            {"Upload-Length": str(self.size), "Upload-Metadata": metadata(self.label)}
        )
        with self.api.exchange("POST", PREFIX, headers=headers, handled={404}) as response:
            if response.status == 404:
                raise CliError(
                    f"{self.api.url} offers no resumable uploads (POST {PREFIX} answered 404): "
                    "upload without --resume",
                    EXIT_NOT_FOUND,
                )
            location = response.getheader("Location") or ""
            return upload_id(location), response.getheader("Upload-Expires")

    def head(self, file_id: str) -> int:
        handled = GONE_STATUSES | RETRY_STATUSES
        with self.api.exchange(
            "HEAD", self.path_of(file_id), headers=tus_headers(), handled=handled
        ) as response:
            response.read()
            self.raise_for(response)
            length = number(response.getheader("Upload-Length"))
            offset = number(response.getheader("Upload-Offset"))
        if length != self.size or offset is None or not 0 <= offset <= self.size:
            raise Gone  # not the upload of this file: start it again
        self.show(offset)
        return offset

    def send_rest(self, file_id: str, offset: int | None) -> None:
        """PATCH from ``offset`` (None: from the server's offset, a resumed upload) to the end;
        after a cut, HEAD and go on, a few times."""
        failures = 0
        known = offset
        stuck_at = offset or 0  # where the upload stood at the last failure
        resuming = offset is None
        while True:
            try:
                with retryable():
                    if known is None:
                        known = self.head(file_id)
                        if resuming:
                            say(f"resuming {self.label} at byte {known} of {self.size}")
                            resuming = False
                            stuck_at = known
                    if known > stuck_at:  # progress since the last failure: a fresh count
                        failures, stuck_at = 0, known
                    if known >= self.size:
                        return
                    known = self.patch(file_id, known)
            except Retry as exc:
                if failures == len(RETRY_DELAYS):
                    raise CliError(
                        f"the upload of {self.label} broke off ({exc}) and {failures} retries "
                        f"failed, the server holding {stuck_at} of {self.size} bytes when last "
                        "asked: run the same command again with --resume to continue",
                        EXIT_INTERRUPTED,
                    ) from None
                delay = RETRY_DELAYS[failures]
                failures += 1
                say(f"{exc}; retrying in {delay:g} s ({failures} of {len(RETRY_DELAYS)})")
                time.sleep(delay)
                known = None

    def patch(self, file_id: str, offset: int) -> int:
        """One PATCH with the whole rest of the file (the server keeps what it can, in whole
        segments); the new offset."""
        self.source.seek(offset)
        self.show(offset)
        headers = tus_headers(
            {"Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"}
        )
        rest = self.size - offset
        handled = GONE_STATUSES | RETRY_STATUSES
        path = self.path_of(file_id)
        sending = self.api.streamed("PATCH", path, self.source, rest, headers, self, handled)
        with sending as (response, _):
            self.raise_for(response)
            new = number(response.getheader("Upload-Offset"))
        if new is None or not offset < new <= self.size:
            raise CliError(
                f"the server's answer to the upload of {self.label} makes no progress "
                f"(offset {offset} -> {new})"
            )
        self.show(new)
        return new

    def raise_for(self, response: http.client.HTTPResponse) -> None:
        if response.status in GONE_STATUSES:
            raise Gone
        if response.status in RETRY_STATUSES:
            raise Retry(f"the server answered {response.status} {response.reason}")

    # The bar follows the bytes sent, and is set back to the server's offset when it kept less.
    def update(self, n: int) -> None:
        self.shown += n
        self.bar.update(n)

    def show(self, offset: int) -> None:
        self.update(offset - self.shown)


@contextlib.contextmanager
def retryable() -> Iterator[None]:
    """A broken connection or an unreachable server may pass: a Retry, not the end."""
    try:
        yield
    except CliError as exc:
        if exc.exit_code in RETRY_EXITS:
            raise Retry(exc.message) from None
        raise


def tus_headers(extra: dict[str, str] | None = None) -> dict[str, str | bytes]:
    return {"Tus-Resumable": TUS_VERSION, **(extra or {})}


def metadata(name: str) -> str:
    """Upload-Metadata: the file's name and, when known, its type, each in base64."""
    pairs = {"filename": name}
    media_type, _ = mimetypes.guess_type(name)
    if media_type:
        pairs["filetype"] = media_type
    return ",".join(
        f"{k} {base64.b64encode(v.encode('utf-8', 'replace')).decode()}" for k, v in pairs.items()
    )


def upload_id(url: str) -> str:
    """The upload's id (the file's id) from its URL: the last part of its path. Requests go to
    the server we were given, never to the host a Location names, so the token goes nowhere else."""
    segment = urllib.parse.urlsplit(url).path.rstrip("/").rpartition("/")[2]
    file_id = urllib.parse.unquote(segment)
    if not file_id or file_id in (".", "..") or not file_id.isprintable():
        raise CliError(f"the server gave no usable upload URL ({clean(url) or 'none'})")
    return file_id


def number(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None


def say(message: str) -> None:
    print(f"cryptofiles: {message}", file=sys.stderr, flush=True)
