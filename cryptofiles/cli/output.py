"""The files this command writes: private, replaced atomically, never left partial; safe names.

A download, a decryption or a token file is written to a private temporary file beside its target
and renamed onto it only once complete and flushed to disk, so a failed, interrupted or tampered
transfer never leaves partial (or unauthenticated) output behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from cryptofiles.cli import CliError
from cryptofiles.cli.terminal import CONTROL_CHARS


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
