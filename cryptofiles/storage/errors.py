"""The storage package's exception family, and the one place that turns pymongo's errors into it.

The web layer maps these to HTTP answers in one table; nothing outside this package sees pymongo's
own exceptions.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from pymongo.collection import Collection
from pymongo.errors import ConnectionFailure, DuplicateKeyError, OperationFailure, PyMongoError

# MongoDB's error codes: an unsupported feature (FerretDB's answer to a TTL index), a full disk.
NOT_IMPLEMENTED = 238
OUT_OF_DISK_SPACE = 14031


class StorageError(Exception):
    """Base of this package's errors."""


class DatabaseUnavailable(StorageError):
    """The database could not be reached or failed; the request may be retried later."""


class NameTaken(StorageError):
    """A user with this name already exists."""


class StorageFull(StorageError):
    """The database has run out of disk space."""


class UploadLost(StorageError):
    """An upload's pending record was swept before the upload completed."""


class ChunkConflict(StorageError):
    """A chunk written again with other bytes than the ones stored (a resumable upload's client
    sent different content for a part already stored)."""


class CorruptFile(StorageError):
    """A stored file's chunks are missing or of the wrong size."""


DISK_FULL_SIGNS = ("disk is full", "SQLSTATE 53100", "No space left on device")


@contextlib.contextmanager
def _mapped_errors() -> Iterator[None]:
    """Turn pymongo failures into our own errors; callers catch DuplicateKeyError themselves."""
    try:
        yield
    except DuplicateKeyError:
        raise
    except (ConnectionFailure, TimeoutError) as exc:
        # Network errors and timeouts: the database is away; a retry later may succeed.
        raise DatabaseUnavailable(type(exc).__name__) from exc
    except OperationFailure as exc:
        # MongoDB's code; what FerretDB passes through from its backend: the SQLite error, the
        # SQL standard's disk_full state (53100), the OS's ENOSPC text.
        text = str(exc)
        if exc.code == OUT_OF_DISK_SPACE or any(sign in text for sign in DISK_FULL_SIGNS):
            raise StorageFull(type(exc).__name__) from exc
        raise StorageError(type(exc).__name__) from exc
    except PyMongoError as exc:
        # The exception's type name is enough for the log; its text may quote the query.
        raise StorageError(type(exc).__name__) from exc


def create_ttl_index(collection: Collection[dict[str, Any]], field: str, name: str) -> bool:
    """A TTL index on ``field`` (rows go once that time passes); False where the server has none
    (FerretDB 1.x), and the caller removes its expired rows itself."""
    try:
        collection.create_index(field, expireAfterSeconds=0, name=name)
    except OperationFailure as exc:
        if exc.code != NOT_IMPLEMENTED:
            raise
        return False
    return True
