"""Storage: everything the service keeps, in MongoDB, through pymongo.

Collections:
- ``users``: ``_id`` (ObjectId), ``public_id`` (UUIDv4 text, the JWT subject), ``name`` (unique),
  ``password_hash``, ``created_at``.
- ``revoked_tokens``: ``_id`` = the token's ``jti``, ``expires_at``. A TTL index lets MongoDB drop a
  row once the token would have expired anyway. FerretDB 1.x has no TTL indexes: there we keep a plain
  index and purge expired rows ourselves whenever a token is revoked.

Only this module imports pymongo. It raises its own small exception family, which the app maps to HTTP
answers in one place.
"""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pymongo
from pymongo.errors import ConnectionFailure, DuplicateKeyError, OperationFailure, PyMongoError


class StorageError(Exception):
    """Base of this module's errors."""


class DatabaseUnavailable(StorageError):
    """The database could not be reached or failed; the request may be retried later."""


NOT_IMPLEMENTED = 238  # MongoDB's error code for an unsupported feature


class NameTaken(StorageError):
    """A user with this name already exists."""


@dataclasses.dataclass(frozen=True)
class User:
    public_id: str
    name: str
    password_hash: str = dataclasses.field(repr=False)
    created_at: datetime

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> User:
        return cls(doc["public_id"], doc["name"], doc["password_hash"], doc["created_at"])


class Storage:
    """The service's database. One instance per app; pymongo's client is thread-safe and pooled."""

    def __init__(self, uri: str, db_name: str, *, timeout_ms: int = 5000) -> None:
        # Short timeouts: when the database is gone a request should fail fast with 503, not hang a
        # worker thread for pymongo's 30 s default.
        self.client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
            uri,
            serverSelectionTimeoutMS=timeout_ms,
            connectTimeoutMS=timeout_ms,
            tz_aware=True,
            appname="crypto-files-server",
        )
        self.db = self.client[db_name]
        self.users = self.db["users"]
        self.revoked_tokens = self.db["revoked_tokens"]
        self.ttl_supported = True  # until the server says otherwise

    def close(self) -> None:
        self.client.close()

    def ensure_indexes(self) -> None:
        """Create the indexes the rules depend on. Idempotent: safe at every start-up."""
        with _mapped_errors():
            self.users.create_index("name", unique=True, name="unique_name")
            self.users.create_index("public_id", unique=True, name="unique_public_id")
            try:
                self.revoked_tokens.create_index(
                    "expires_at", expireAfterSeconds=0, name="expire_revoked_tokens"
                )
            except OperationFailure as exc:
                if exc.code != NOT_IMPLEMENTED:
                    raise
                self.ttl_supported = False
                self.revoked_tokens.create_index("expires_at", name="revoked_tokens_expiry")

    def ping(self) -> None:
        with _mapped_errors():
            self.client.admin.command("ping")

    # -- users ---------------------------------------------------------------------------------

    def create_user(self, name: str, password_hash: str, now: datetime) -> User:
        doc = {
            "public_id": str(uuid.uuid4()),
            "name": name,
            "password_hash": password_hash,
            "created_at": now,
        }
        with _mapped_errors():
            try:
                self.users.insert_one(doc)
            except DuplicateKeyError:
                raise NameTaken(name) from None
        return User.from_doc(doc)

    def user_by_name(self, name: str) -> User | None:
        with _mapped_errors():
            doc = self.users.find_one({"name": name})
        return User.from_doc(doc) if doc else None

    def user_by_public_id(self, public_id: str) -> User | None:
        with _mapped_errors():
            doc = self.users.find_one({"public_id": public_id})
        return User.from_doc(doc) if doc else None

    def set_password_hash(self, public_id: str, password_hash: str) -> None:
        with _mapped_errors():
            self.users.update_one(
                {"public_id": public_id}, {"$set": {"password_hash": password_hash}}
            )

    # -- revoked tokens ------------------------------------------------------------------------

    def revoke_token(self, jti: str, expires_at: datetime, now: datetime) -> None:
        with _mapped_errors():
            if not self.ttl_supported:
                self.revoked_tokens.delete_many({"expires_at": {"$lt": now}})
            # Upsert: revoking twice (a retried logout) is not an error.
            self.revoked_tokens.update_one(
                {"_id": jti}, {"$set": {"expires_at": expires_at}}, upsert=True
            )

    def is_token_revoked(self, jti: str) -> bool:
        with _mapped_errors():
            return self.revoked_tokens.find_one({"_id": jti}, projection={"_id": 1}) is not None


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
    except PyMongoError as exc:
        # The exception's type name is enough for the log; its text may quote the query.
        raise StorageError(type(exc).__name__) from exc
