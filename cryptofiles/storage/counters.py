"""The ``rate_counters`` collection: the rate limiter's fixed windows (see ``ratelimit``).

``rate_counters``: ``_id`` (the limiter's key), ``count``, ``expire_at`` (the window's end). A TTL
index drops ended windows where the server has TTL indexes; elsewhere (FerretDB) an ended window is
replaced on its key's next hit.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from pymongo import ReturnDocument, UpdateOne
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from cryptofiles.storage.errors import DatabaseUnavailable, _mapped_errors, create_ttl_index


class Counters:
    """The rate-limit counters: ``storage.counters``."""

    def __init__(self, db: Database[dict[str, Any]]) -> None:
        self.collection = db["rate_counters"]

    def ensure_indexes(self) -> None:
        with _mapped_errors():
            # Without TTL (FerretDB), ended windows are replaced on their next hit (see incr).
            create_ttl_index(self.collection, "expire_at", "expire_rate_counters")

    def incr(self, key: str, expiry_seconds: int, amount: int, now: datetime) -> int:
        """Add ``amount`` to a fixed-window counter, starting a new window if the last one ended.

        Plain update operators, and filters on ``_id``, since that is the only lookup FerretDB
        does without reading the whole collection. One round trip for a live window and for a
        new key alike (an upsert); racing requests that both create a key: the loser's insert
        fails on the unique ``_id`` and it retries, counting in the winner's window.
        """
        window = {"count": amount, "expire_at": now + timedelta(seconds=expiry_seconds)}
        with _mapped_errors():
            for _ in range(3):
                try:
                    doc = self.collection.find_one_and_update(
                        {"_id": key},
                        {"$inc": {"count": amount},
                         "$setOnInsert": {"expire_at": window["expire_at"]}},
                        upsert=True,
                        return_document=ReturnDocument.AFTER,
                    )  # fmt: skip
                except DuplicateKeyError:
                    continue
                if doc is None:  # not with an upsert; for the type checker
                    continue
                if doc["expire_at"] > now:
                    return int(doc["count"])
                # The window had ended: replace it, unless another request already did.
                replaced = self.collection.replace_one(
                    {"_id": key, "expire_at": doc["expire_at"]}, window
                )
                if replaced.modified_count == 1:
                    return amount
        raise DatabaseUnavailable("rate counter contention")

    def give_back(self, keys: Sequence[str], now: datetime) -> None:
        """Take one back from each live window (a request that did not use what it counted).

        One round trip for all of them: one ``update`` command carrying a statement per key.
        """
        if not keys:
            return
        updates = [
            UpdateOne(
                {"_id": key, "expire_at": {"$gt": now}, "count": {"$gt": 0}},
                {"$inc": {"count": -1}},
            )
            for key in keys
        ]
        with _mapped_errors():
            self.collection.bulk_write(updates, ordered=False)

    def get(self, key: str, now: datetime) -> tuple[int, datetime | None]:
        """``(count, window end)`` of a live window, ``(0, None)`` when there is none."""
        with _mapped_errors():
            doc = self.collection.find_one({"_id": key})
        live = doc is not None and doc["expire_at"] > now
        return (int(doc["count"]), doc["expire_at"]) if doc and live else (0, None)

    def clear(self, key: str | None = None) -> int:
        with _mapped_errors():
            result = self.collection.delete_many({} if key is None else {"_id": key})
        return result.deleted_count
