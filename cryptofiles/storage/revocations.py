"""The ``revoked_tokens`` collection: tokens logged out before they expire.

``revoked_tokens``: ``_id`` = the token's ``jti``, ``expires_at``. A TTL index lets MongoDB drop a
row once the token would have expired anyway. FerretDB 1.x has no TTL indexes: there we keep a plain
index and purge expired rows ourselves whenever a token is revoked.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo.database import Database

from cryptofiles.storage.errors import _mapped_errors, create_ttl_index


class Revocations:
    """The revoked tokens: ``storage.revocations``."""

    def __init__(self, db: Database[dict[str, Any]]) -> None:
        self.collection = db["revoked_tokens"]
        self.ttl_supported = True  # until the server says otherwise

    def ensure_indexes(self) -> None:
        with _mapped_errors():
            self.ttl_supported = create_ttl_index(
                self.collection, "expires_at", "expire_revoked_tokens"
            )
            if not self.ttl_supported:  # purged on revoke instead
                self.collection.create_index("expires_at", name="revoked_tokens_expiry")

    def revoke(self, jti: str, expires_at: datetime, now: datetime) -> None:
        with _mapped_errors():
            if not self.ttl_supported:
                self.collection.delete_many({"expires_at": {"$lt": now}})
            # Upsert: revoking twice (a retried logout) is not an error.
            self.collection.update_one(
                {"_id": jti}, {"$set": {"expires_at": expires_at}}, upsert=True
            )

    def is_revoked(self, jti: str) -> bool:
        with _mapped_errors():
            return self.collection.find_one({"_id": jti}, projection={"_id": 1}) is not None
