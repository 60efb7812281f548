"""``Storage``: the client of the service's database, and one object per collection family."""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pymongo
from pymongo.monitoring import CommandListener as CommandListener

from cryptofiles.storage.chunks import Chunks
from cryptofiles.storage.counters import Counters
from cryptofiles.storage.errors import _mapped_errors
from cryptofiles.storage.events import Events
from cryptofiles.storage.grants import Grants
from cryptofiles.storage.links import Links
from cryptofiles.storage.records import FileRecords
from cryptofiles.storage.revocations import Revocations
from cryptofiles.storage.uploads import Uploads
from cryptofiles.storage.usage import Usage, UsageRepair
from cryptofiles.storage.users import Users

log = logging.getLogger(__name__)

# Database connections per app (per gunicorn worker): the most operations it runs at once.
POOL_SIZE = 16


class Storage:
    """The service's database. One instance per app; pymongo's client is thread-safe and pooled.

    Each collection family is an attribute: ``users``, ``revocations``, ``files`` (the records),
    ``chunks`` (the ciphertext), ``counters`` (the rate limits), ``usage`` (the quota's totals),
    ``grants`` (who else may fetch a file's key), ``events`` (the files' access history),
    ``links`` (share links) and ``uploads`` (resumable uploads' state and locks).
    """

    def __init__(
        self,
        uri: str,
        db_name: str,
        *,
        timeout_ms: int = 5000,
        chunk_size: int = 1 << 20,
        write_concern: str | int = "majority",
        event_listeners: Sequence[CommandListener] = (),
    ) -> None:
        # Short timeouts: when the database is gone a request should fail fast with 503, not hang a
        # worker thread for pymongo's 30 s default.
        self.client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
            uri,
            serverSelectionTimeoutMS=timeout_ms,
            connectTimeoutMS=timeout_ms,
            # A server that stops answering (paused, hung) on an open connection is only noticed
            # by the monitor's heartbeat, which then fails the waiting operations. pymongo's 10 s
            # default would hold every worker thread that long; check as often as we time out.
            heartbeatFrequencyMS=max(500, timeout_ms),
            # An acknowledged upload must survive a primary's crash: majority and journaled, where
            # the server honours it (a replica set; FerretDB accepts and ignores write concern).
            w=write_concern,
            journal=True,
            tz_aware=True,
            appname="crypto-files-server",
            # gevent workers run any number of requests at once; the database should not see them
            # all at once (FerretDB on SQLite answered hundreds of simultaneous writes with lock
            # errors). Requests beyond the pool wait in pymongo's queue, as they waited for a
            # worker thread before.
            maxPoolSize=POOL_SIZE,
            # pymongo's command monitoring: the tests count the round trips of each request.
            event_listeners=list(event_listeners),
        )
        self.db = self.client[db_name]
        self.users = Users(self.db)
        self.revocations = Revocations(self.db)
        self.counters = Counters(self.db)
        self.chunks = Chunks(self.db, chunk_size, records=self.db["files"])
        self.grants = Grants(self.db)
        self.events = Events(self.db)
        self.uploads = Uploads(self.db)
        self.files = FileRecords(
            self.db,
            self.chunks,
            users=self.users.collection,
            dependents=(self.grants.collection, self.events.collection, self.uploads.locks),
        )
        self.usage = Usage(self.db)
        self.links = Links(self.db)

    @property
    def ttl_supported(self) -> bool:
        """Whether the server has TTL indexes (known once ``ensure_indexes`` ran)."""
        return self.revocations.ttl_supported

    def close(self) -> None:
        self.client.close()

    def ensure_indexes(self) -> None:
        """Create the indexes the rules depend on. Idempotent: safe at every start-up."""
        self.users.ensure_indexes()
        self.revocations.ensure_indexes()
        self.counters.ensure_indexes()
        self.files.ensure_indexes()
        self.chunks.ensure_indexes()
        self.usage.ensure_indexes()
        self.grants.ensure_indexes()
        self.events.ensure_indexes()
        self.links.ensure_indexes()
        self.uploads.ensure_indexes()

    def ping(self) -> None:
        with _mapped_errors():
            self.client.admin.command("ping")

    def remove_dangling_sharing(self, now: datetime) -> int:
        """Remove grants and events whose file or users are gone (a crash between a deletion's
        steps, a grant racing one), and events past retention where no TTL index drops them.
        Full scans: for the sweep. How many rows went."""
        files, users = self.grants.referenced()
        event_files = self.events.files()
        with _mapped_errors():
            known_files = {
                doc["_id"]
                for doc in self.files.collection.find(
                    {"_id": {"$in": list(files | event_files)}}, {"_id": 1}
                )
            }
            known_users = {
                doc["_id"]
                for doc in self.users.collection.find({"_id": {"$in": list(users)}}, {"_id": 1})
            }
        removed = self.grants.remove_dangling(files - known_files, users - known_users)
        for file_id in event_files - known_files:
            self.events.remove_for_file(file_id)
            removed += 1
        return removed + self.events.purge_expired(now)

    def repair_usage(self, now: datetime) -> list[UsageRepair]:
        """Set each owner's usage total to the sum of their complete files where it drifted (a
        crash between a change and its count, a hand edit); forget the totals of users gone.
        Full scans: for ``admin sweep``."""
        stored = self.files.sizes_by_owner()
        repairs = []
        for owner in sorted(set(stored) | self.usage.owners()):
            if self.users.by_public_id(owner) is None:
                self.usage.remove(owner)
                continue
            repair = self.usage.repair(owner, functools.partial(self.files.bytes_used, owner), now)
            if repair is not None:
                log.warning(
                    "usage of %s repaired: %d -> %d bytes", owner, repair.recorded, repair.stored
                )
                repairs.append(repair)
        return repairs
