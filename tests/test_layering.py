"""The layering of the package, read from the modules' own imports so that it cannot drift.

Each third-party library with a sharp edge has one home: the database driver in ``storage/``, the
AEAD and key-derivation primitives in ``crypto/``, tokens and password hashing in ``accounts.py``, the
web framework in ``web/``. And the core never reaches up into the web layer or the command line.
Imports inside functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import cryptofiles

PACKAGE = Path(cryptofiles.__file__).parent

# Module prefix -> the only places (package folders or module files, relative to cryptofiles/)
# allowed to import it.
HOMES: dict[str, tuple[str, ...]] = {
    "pymongo": ("storage/",),
    "bson": ("storage/",),
    "gridfs": ("storage/",),
    "cryptography.hazmat.primitives.ciphers": ("crypto/",),
    "cryptography.hazmat.primitives.kdf": ("crypto/",),
    "pyrage": ("crypto/",),
    "jwt": ("accounts.py",),
    "werkzeug.security": ("accounts.py",),
    "flask": ("web/",),
    "flask_limiter": ("web/",),
    "werkzeug": ("web/", "accounts.py"),  # werkzeug.security is checked on its own above
}

# The core: what the web layer and the CLI are built on, and which must not depend on them.
CORE = (
    "accounts.py",
    "audit.py",
    "clock.py",
    "config.py",
    "files.py",
    "keys.py",
    "links.py",
    "services.py",
    "sharing.py",
    "crypto/",
    "storage/",
)
ABOVE_THE_CORE = ("cryptofiles.web", "cryptofiles.cli", "cryptofiles.dev")


def imported_modules(source: str) -> Iterator[str]:
    """Every module a source imports, at any depth (``from x import y`` yields ``x`` and ``x.y``)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def at(relative: str, places: tuple[str, ...]) -> bool:
    return any(relative == p or (p.endswith("/") and relative.startswith(p)) for p in places)


def violations(relative: str, source: str) -> list[str]:
    found = []
    for name in set(imported_modules(source)):
        # The most specific rule decides (werkzeug.security before werkzeug).
        rules = sorted((p for p in HOMES if within(name, p)), key=len, reverse=True)
        if rules and not at(relative, HOMES[rules[0]]):
            found.append(f"{relative} imports {name} (its home: {', '.join(HOMES[rules[0]])})")
        if at(relative, CORE) and any(within(name, upper) for upper in ABOVE_THE_CORE):
            found.append(f"{relative} is core but imports {name}")
    return sorted(found)


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_library_is_imported_only_in_its_home() -> None:
    found = [
        v
        for path in modules()
        for v in violations(path.relative_to(PACKAGE).as_posix(), path.read_text())
    ]
    assert found == []


def test_the_homes_exist() -> None:
    """A rule about a folder that was renamed would pass for nothing."""
    for places in (*HOMES.values(), CORE):
        for place in places:
            assert (PACKAGE / place).exists(), place


@pytest.mark.parametrize(
    ("relative", "source", "expected"),
    [
        ("files.py", "def f():\n    import pymongo\n", "files.py imports pymongo"),
        ("web/app.py", "from bson.binary import Binary\n", "web/app.py imports bson.binary"),
        ("crypto/x.py", "import jwt\n", "crypto/x.py imports jwt"),
        ("files.py", "from cryptography.hazmat.primitives.ciphers.aead import AESGCM\n", "AESGCM"),
        (
            "web/guard.py",
            "from werkzeug.security import check_password_hash\n",
            "werkzeug.security",
        ),
        ("accounts.py", "from flask import g\n", "accounts.py imports flask"),
        ("storage/users.py", "from cryptofiles.web import create_app\n", "is core"),
        ("services.py", "from cryptofiles.cli.admin import x\n", "is core"),
    ],
)
def test_the_checker_sees_a_misplaced_import(relative: str, source: str, expected: str) -> None:
    assert any(expected in v for v in violations(relative, source))


@pytest.mark.parametrize(
    ("relative", "source"),
    [
        ("storage/users.py", "import pymongo\nfrom bson import ObjectId\n"),
        ("accounts.py", "import jwt\nfrom werkzeug.security import generate_password_hash\n"),
        ("web/errors.py", "from werkzeug.exceptions import HTTPException\nfrom flask import g\n"),
        ("crypto/stream.py", "from cryptography.hazmat.primitives.kdf.hkdf import HKDF\n"),
        ("web/app.py", "from cryptofiles.storage import Storage\n"),
    ],
)
def test_the_checker_allows_an_import_at_home(relative: str, source: str) -> None:
    assert violations(relative, source) == []
