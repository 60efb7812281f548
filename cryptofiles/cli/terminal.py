"""What a person at the terminal sees and types: progress bars, password prompts, printable text."""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import re
import sys
from collections.abc import Iterator
from typing import Protocol

from cryptofiles.cli import EXIT_USAGE, CliError

PASSWORD_ENV = "CRYPTOFILES_PASSWORD"  # noqa: S105 (the name of a variable, not a password)
PROGRESS_MIN_BYTES = 1 << 20
MAX_MESSAGE_CHARS = 300

CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


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
