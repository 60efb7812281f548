"""Write concern: only what can be observed here.

FerretDB (the database of these tests) accepts any write concern and ignores it: a write is
acknowledged once its backend's transaction commits (PostgreSQL's, or SQLite's in the fallback).
What an acknowledged write survives is checked by test_database_crash (files acknowledged before a
kill -9 are intact after the restart). What is left to check is that the app asks for acknowledged
writes at all.
"""

from __future__ import annotations

import pytest

from cryptofiles.config import ConfigError, Settings
from cryptofiles.storage import Storage


def test_the_app_waits_for_acknowledged_writes() -> None:
    storage = Storage("mongodb://127.0.0.1:9/", "cryptofiles", timeout_ms=100)  # never contacted
    try:
        for collection in (
            storage.files.collection,
            storage.chunks.collection,
            storage.chunks.entries,
            storage.users.collection,
        ):
            assert collection.write_concern.acknowledged, collection.name
    finally:
        storage.close()


@pytest.mark.parametrize(("configured", "expected"), [(None, "majority"), ("2", 2)])
def test_majority_and_journaled_writes_by_default(
    settings_values: dict[str, str], configured: str | None, expected: str | int
) -> None:
    """What the app asks for; whether the server honours it is the server's (FerretDB: ignored)."""
    values = dict(settings_values)
    if configured:
        values["MONGODB_WRITE_CONCERN"] = configured
    settings = Settings.from_mapping(values)
    storage = Storage("mongodb://127.0.0.1:9/", "cryptofiles", timeout_ms=100,
                      write_concern=settings.mongodb_write_concern)  # fmt: skip
    try:
        for collection in (
            storage.files.collection,
            storage.chunks.collection,
            storage.chunks.entries,
            storage.users.collection,
        ):
            assert collection.write_concern.document == {"w": expected, "j": True}
    finally:
        storage.close()


def test_bad_write_concern_refused(settings_values: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="MONGODB_WRITE_CONCERN"):
        Settings.from_mapping({**settings_values, "MONGODB_WRITE_CONCERN": "0"})
