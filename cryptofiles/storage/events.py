"""The ``events`` collection: a file's access history (key deliveries, grant changes, downloads).

``events``: ``_id`` (UUIDv4 text), ``file`` (file id), ``at`` (the time), ``action`` (``key``,
``grant.create``, ``grant.update``, ``grant.revoke``, ``download``, ``plaintext``), ``user`` and
``user_name`` (who acted), ``client`` (the client address), ``request_id``, ``details`` (small
facts of the action: ``sealed`` for a key, ``grantee``/``grantee_name``/``expires_at`` for a grant),
``expire_at`` (``at`` plus the retention). Never a key, a token or file content.

Retention: a TTL index on ``expire_at`` where the server has TTL indexes; elsewhere (FerretDB 1.x)
the sweep purges (``purge_expired``) and reads leave out what is past its time, so that an event
past retention is never shown either way. Recording is one insert; a file's deletion removes its
events (``remove_for_file``).
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime
from typing import Any

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from cryptofiles.storage.errors import StorageError, _mapped_errors, create_ttl_index


@dataclasses.dataclass(frozen=True)
class Event:
    file: str
    at: datetime
    action: str
    user: str
    user_name: str
    client: str
    request_id: str | None
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    id: str = dataclasses.field(default_factory=lambda: str(uuid.uuid4()))

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Event:
        return cls(
            doc["file"],
            doc["at"],
            doc["action"],
            doc["user"],
            doc["user_name"],
            doc["client"],
            doc.get("request_id"),
            dict(doc.get("details") or {}),
            doc["_id"],
        )


class Events:
    """The access history: ``storage.events``."""

    def __init__(self, db: Database[dict[str, Any]]) -> None:
        self.collection = db["events"]
        self.ttl_supported = True  # until the server says otherwise

    def ensure_indexes(self) -> None:
        with _mapped_errors():
            self.collection.create_index([("file", 1), ("at", -1)], name="events_by_file")
            self.ttl_supported = create_ttl_index(self.collection, "expire_at", "expire_events")

    def record(self, event: Event, expire_at: datetime) -> None:
        """One insert. Raises (DatabaseUnavailable, StorageError) when it was not stored."""
        doc = dataclasses.asdict(event)
        doc["_id"] = doc.pop("id")
        doc["expire_at"] = expire_at
        with _mapped_errors():
            try:
                self.collection.insert_one(doc)
            except DuplicateKeyError:  # ids are random: only an index someone added clashes
                raise StorageError("event refused by a unique index") from None

    def of_file(
        self, file_id: str, now: datetime, *, limit: int, after: tuple[datetime, str] | None
    ) -> list[Event]:
        """The file's events not past retention, newest first, after ``(at, id)``."""
        clauses: list[dict[str, Any]] = [{"expire_at": {"$gt": now}}]
        if after is not None:
            at, event_id = after
            clauses.append({"$or": [{"at": {"$lt": at}}, {"at": at, "_id": {"$lt": event_id}}]})
        with _mapped_errors():
            cursor = self.collection.find(
                {"file": file_id, "$and": clauses}, sort=[("at", -1), ("_id", -1)], limit=limit
            )
            return [Event.from_doc(doc) for doc in cursor]

    def remove_for_file(self, file_id: str) -> None:
        with _mapped_errors():
            self.collection.delete_many({"file": file_id})

    def purge_expired(self, now: datetime) -> int:
        """Remove events past retention (where no TTL index does it); how many. A scan: sweep."""
        if self.ttl_supported:
            return 0
        with _mapped_errors():
            return self.collection.delete_many({"expire_at": {"$lt": now}}).deleted_count

    def files(self) -> set[str]:
        """The file ids events name (a full scan: for the sweep)."""
        with _mapped_errors():
            return set(self.collection.distinct("file"))
