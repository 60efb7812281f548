"""Write concern: only what can be observed here.

FerretDB (the database of these tests) accepts any write concern and ignores it: a write is
acknowledged once its SQLite transaction commits. What an acknowledged write survives is checked by
test_database_crash (files acknowledged before a kill -9 are intact after the restart). What is left
to check is that the app asks for acknowledged writes at all.
"""

from __future__ import annotations

import pytest

from cryptofiles.storage import Storage


def test_the_app_waits_for_acknowledged_writes() -> None:
    storage = Storage("mongodb://127.0.0.1:9/", "cryptofiles", timeout_ms=100)  # never contacted
    try:
        for collection in (storage.files, storage.chunks, storage.gridfs_files, storage.users):
            assert collection.write_concern.acknowledged, collection.name
    finally:
        storage.close()


def test_majority_and_journal_write_concern() -> None:
    pytest.skip(
        "FerretDB ignores write concern (w, j, wtimeout), and a single local server has no "
        "replica set to lose a write to: nothing observable to test here; use MongoDB for this"
    )
