"""What the web page's tests run on: Debian's Chromium (driven through Playwright) and Node.

Playwright downloads its own browser build by default, from a host this kind of machine cannot reach,
so the end-to-end tests drive the distribution's Chromium through ``executable_path`` instead. The
set-up (``make test`` runs ``python -m cryptofiles.dev.browser ensure``) finds Chromium, installs the
``chromium`` and ``chromium-driver`` packages with apt-get when they are missing and it may, and
otherwise says what to install. Node runs the decryptor's unit tests (``node --test``) and
tus-js-client for the tus interop tests: ``ensure`` runs ``npm ci`` in ``tests/js/tus`` when its
``node_modules`` is missing or older than the committed ``package-lock.json`` (a stamp holds the
lock file's hash), so it is quick once done. The service itself needs none of this: ``make run``
does not check for it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from cryptofiles.dev.packages import apt_install

__all__ = ["NPM_FOLDERS", "MissingTool", "chromium_path", "ensure", "ensure_npm", "node_path"]

# CHROMIUM names another Chromium or Chrome binary, e.g. on a distribution that calls it differently.
ENV_VAR = "CHROMIUM"
NAMES = ("chromium", "chromium-browser")
PACKAGES = ["chromium", "chromium-driver"]
HOW = (
    "the web page's browser tests need Chromium and its driver - Debian/Ubuntu: "
    "`sudo apt-get install chromium chromium-driver`; elsewhere set CHROMIUM=/path/to/chromium"
)
NODE_HOW = "the decryptor's unit tests need Node.js 18 or newer on PATH (https://nodejs.org)"
NPM_HOW = (
    "the tus interop tests install tus-js-client with npm: put npm (it comes with Node) on PATH"
)

# Folders with a committed package.json and package-lock.json whose packages the tests run.
NPM_FOLDERS = (Path(__file__).resolve().parents[2] / "tests" / "js" / "tus",)
NPM_STAMP = ".installed-lock"  # inside node_modules: the hash of the lock file npm ci installed


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
    for folder in NPM_FOLDERS:
        ensure_npm(folder, out=out)
    return found


def ensure_npm(folder: Path, *, out: IO[str] = sys.stderr) -> None:
    """``npm ci`` in ``folder`` unless its node_modules already holds what its lock file pins."""
    lock_hash = hashlib.sha256((folder / "package-lock.json").read_bytes()).hexdigest()
    stamp = folder / "node_modules" / NPM_STAMP
    if stamp.is_file() and stamp.read_text().strip() == lock_hash:
        return
    npm = shutil.which("npm")
    if npm is None:
        raise MissingTool(NPM_HOW)
    print(f"Installing the pinned npm packages of {folder} (npm ci) ...", file=out)
    # npm ci removes node_modules first and installs exactly the lock file, or fails.
    result = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=folder, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if result.returncode != 0:
        raise MissingTool(f"npm ci failed in {folder}:\n{result.stderr.strip()}")
    stamp.write_text(lock_hash + "\n")


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
