"""What the web page's tests run on: Debian's Chromium (driven through Playwright) and Node.

Playwright downloads its own browser build by default, from a host this kind of machine cannot reach,
so the end-to-end tests drive the distribution's Chromium through ``executable_path`` instead. The
set-up (``make test`` runs ``python -m cryptofiles.dev.browser ensure``) finds Chromium, installs the
``chromium`` and ``chromium-driver`` packages with apt-get when they are missing and it may, and
otherwise says what to install. Node runs the decryptor's unit tests (``node --test``). The service
itself needs none of this: ``make run`` does not check for it.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from cryptofiles.dev.packages import apt_install

__all__ = ["MissingTool", "chromium_path", "ensure", "node_path"]

# CHROMIUM names another Chromium or Chrome binary, e.g. on a distribution that calls it differently.
ENV_VAR = "CHROMIUM"
NAMES = ("chromium", "chromium-browser")
PACKAGES = ["chromium", "chromium-driver"]
HOW = (
    "the web page's browser tests need Chromium and its driver - Debian/Ubuntu: "
    "`sudo apt-get install chromium chromium-driver`; elsewhere set CHROMIUM=/path/to/chromium"
)
NODE_HOW = "the decryptor's unit tests need Node.js 18 or newer on PATH (https://nodejs.org)"


class MissingTool(RuntimeError):
    """A tool the page's tests need is absent; the message says how to get it."""


def chromium_path(environ: Mapping[str, str] | None = None) -> Path | None:
    environ = os.environ if environ is None else environ
    if configured := environ.get(ENV_VAR):
        return Path(configured) if os.access(configured, os.X_OK) else None
    for name in NAMES:
        if found := shutil.which(name):
            return Path(found)
    return None


def node_path() -> Path | None:
    found = shutil.which("node")
    return Path(found) if found else None


def ensure(environ: Mapping[str, str] | None = None, *, out: IO[str] = sys.stderr) -> Path:
    """Chromium's path, installing Debian's packages first when missing and allowed."""
    environ = os.environ if environ is None else environ
    missing = chromium_path(environ) is None or (
        ENV_VAR not in environ and shutil.which("chromedriver") is None
    )
    if missing and ENV_VAR not in environ:
        apt_install(PACKAGES, "Chromium for the web page's tests", out)
    found = chromium_path(environ)
    if found is None:
        raise MissingTool(HOW)
    if node_path() is None:
        raise MissingTool(NODE_HOW)
    return found


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args != ["ensure"]:
        print("usage: python -m cryptofiles.dev.browser ensure", file=sys.stderr)
        return 2
    try:
        ensure()
    except MissingTool as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
