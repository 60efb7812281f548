"""The stock ``age`` CLI (the Go module filippo.io/age), for the sealed-key interop tests.

The server seals keys with pyrage (rage, the Rust implementation); the tests open what it sealed
with an implementation we did not write, Filippo Valsorda's Go reference ``age``, and feed our CLI
identities made by its ``age-keygen``. ``python -m cryptofiles.dev.age ensure`` (which ``make test``
runs) installs ``age`` and ``age-keygen`` at ``AGE_VERSION`` with ``go install`` into
``tools/age/bin`` the first time; afterwards it only checks the version, so it is quick. Go's own
settings (GOPROXY, GOFLAGS, GOPATH, GOMODCACHE) are honoured as they are, so a machine whose module
proxy or cache is configured works offline. The service itself never runs age.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from cryptofiles.dev.database import tools_dir

__all__ = ["AGE_VERSION", "MissingAge", "age_bin_dir", "ensure", "find"]

AGE_MODULE = "filippo.io/age"
AGE_VERSION = "v1.3.2"
PROGRAMS = ("age", "age-keygen")
HOW = (
    f"the sealed-key interop tests need the stock age CLI {AGE_VERSION}: install Go "
    "(https://go.dev/doc/install) and run `make age`, which builds it into tools/age/bin"
)


class MissingAge(RuntimeError):
    """``age`` is not installed and cannot be built here; the message says how to get it."""


def age_bin_dir(environ: Mapping[str, str] | None = None) -> Path:
    return tools_dir(environ) / "age" / "bin"


def installed_version(binary: Path) -> str | None:
    if not os.access(binary, os.X_OK):
        return None
    result = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
    return result.stdout.strip() if result.returncode == 0 else None


def find(environ: Mapping[str, str] | None = None) -> dict[str, Path]:
    """``{"age": path, "age-keygen": path}`` of the pinned version in tools/; MissingAge if absent."""
    folder = age_bin_dir(environ)
    programs = {name: folder / name for name in PROGRAMS}
    if not all(os.access(path, os.X_OK) for path in programs.values()):
        raise MissingAge(HOW)
    if installed_version(programs["age"]) != AGE_VERSION:
        raise MissingAge(f"{programs['age']} is not {AGE_VERSION}; " + HOW)
    return programs


def ensure(
    environ: Mapping[str, str] | None = None, *, out: IO[str] = sys.stderr
) -> dict[str, Path]:
    """Install age and age-keygen at ``AGE_VERSION`` into tools/age/bin unless there already."""
    environ = os.environ if environ is None else environ
    try:
        return find(environ)
    except MissingAge:
        pass
    go = shutil.which("go", path=environ.get("PATH", ""))
    if go is None:
        raise MissingAge(HOW)
    folder = age_bin_dir(environ)
    print(f"Installing age {AGE_VERSION} with Go into {folder} ...", file=out, flush=True)
    # GOBIN chooses where the binaries go; everything else of Go's configuration is the user's.
    env = {**environ, "GOBIN": str(folder), "GOTOOLCHAIN": environ.get("GOTOOLCHAIN", "local")}
    targets = [f"{AGE_MODULE}/cmd/{name}@{AGE_VERSION}" for name in PROGRAMS]
    subprocess.run([go, "install", *targets], env=env, check=True)
    return find(environ)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args != ["ensure"]:
        print("usage: python -m cryptofiles.dev.age ensure", file=sys.stderr)
        return 2
    try:
        ensure()
    except MissingAge as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as exc:
        print(f"Installing age failed ({exc}); see the output above.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
