"""The ``usage`` collection: each user's running total of stored plaintext bytes (the quota's count).

Why not one document per user updated with ``$inc``: FerretDB 1.24 applies every update as read,
modify, write back, on both of its backends, so concurrent ``$inc`` lose updates (measured: 200
increments by 20 threads ended at 22 on one backend and 16 on the other). What it does enforce
is a unique ``_id``: one insert of a given ``_id`` wins, every other fails. So a total is a chain of
versions, each a new document: ``_id`` = ``"<owner>/<v>"``, ``owner``, ``v``, ``bytes`` (the total
after change ``v``), ``at`` (when it was written). A change reads the head (the highest ``v``) and
inserts version ``v + 1`` with the new total; two changes that read the same head race for the same
``_id``, one wins and the other reads again and retries. No change is lost and none counted twice,
on MongoDB and on FerretDB alike, without a lock to leave behind if a process dies.

Old versions are retired so that reading the head stays one query on a handful of documents
whatever the user did: every ``RETIRE_EVERY`` changes, versions more than ``RETIRE_EVERY`` below
the head lose their ``owner`` (renamed ``retired``), which takes them out of the head query. They
are not deleted at once: a deleted ``_id`` could be inserted again by a writer whose head is older,
and its change would land below the head and be lost; a retired ``_id`` still refuses it, and the
writer reads the head again. Retired versions are deleted once older than ``DELETE_AFTER``, while
a head is used for a change only while younger than ``HEAD_FRESH`` (else it is read again): the
window left is a process that stalls for ``DELETE_AFTER`` between checking its head's age and its
insert, and ``admin sweep`` repairs the total.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from cryptofiles.storage.errors import DatabaseUnavailable, _mapped_errors

HEAD_FRESH = 10.0  # seconds a head may be used for a change
# Far longer than HEAD_FRESH: the margin covers clocks of several instances that disagree.
DELETE_AFTER = timedelta(days=1)
# The head query sees at most about twice this many versions of a user.
RETIRE_EVERY = 16
# Writers of one user at once each retry until they win; 50 racing writers need up to 50 rounds.
MAX_ATTEMPTS = 500
# A repair sets a total only if it disagreed with the stored files twice, this long apart, with no
# change in between: an upload between its completion and its count must not be "repaired".
SETTLE_SECONDS = 1.0


@dataclasses.dataclass(frozen=True)
class UsageRepair:
    owner: str
    recorded: int  # the total before the repair
    stored: int  # the plaintext bytes of the owner's complete files, the total after it


@dataclasses.dataclass(frozen=True)
class UsageHead:
    """A user's total as of version ``v`` (0: nothing stored yet), read at ``read_at`` (monotonic)."""

    owner: str
    v: int
    bytes: int
    read_at: float

    def fresh(self) -> bool:
        return time.monotonic() - self.read_at < HEAD_FRESH


class Usage:
    """The per-user totals: ``storage.usage``."""

    def __init__(self, db: Database[dict[str, Any]]) -> None:
        self.collection = db["usage"]

    def ensure_indexes(self) -> None:
        with _mapped_errors():
            self.collection.create_index([("owner", 1), ("v", -1)], name="usage_by_owner")
            self.collection.create_index([("retired", 1), ("at", 1)], name="usage_retired")

    def head(self, owner: str) -> UsageHead:
        """The owner's current total: one query, on the versions not yet retired."""
        with _mapped_errors():
            top = self.collection.find_one({"owner": owner}, {"v": 1, "bytes": 1}, sort=[("v", -1)])
        if top is None:
            return UsageHead(owner, 0, 0, time.monotonic())
        return UsageHead(owner, int(top["v"]), int(top["bytes"]), time.monotonic())

    def add(self, owner: str, delta: int, now: datetime, head: UsageHead | None = None) -> None:
        """Add ``delta`` bytes to the owner's total; ``head``, if fresh, saves reading it again."""
        for _ in range(MAX_ATTEMPTS):
            if head is None or not head.fresh():
                head = self.head(owner)
            if self._write(head, head.bytes + delta, now):
                return
            head = None
            # Jitter to spread the racers, not a secret.
            time.sleep(random.uniform(0, 0.002))  # noqa: S311
        raise DatabaseUnavailable("usage total contention")

    def set_total(self, head: UsageHead, total: int, now: datetime) -> bool:
        """Replace the total, only if ``head`` is still the head (a repair by the sweep)."""
        return self._write(head, total, now)

    def _write(self, head: UsageHead, total: int, now: datetime) -> bool:
        v = head.v + 1
        doc = {"_id": f"{head.owner}/{v}", "owner": head.owner, "v": v, "bytes": total, "at": now}
        with _mapped_errors():
            try:
                self.collection.insert_one(doc)
            except DuplicateKeyError:
                return False  # another change took version v first
            if v % RETIRE_EVERY == 0:
                self._retire(head.owner, v, now)
        return True

    def _retire(self, owner: str, v: int, now: datetime) -> None:
        """Take old versions out of the head query; delete those retired long ago (see above).

        Versions never change once written, so this rewrite of them races with nothing.
        """
        self.collection.update_many(
            {"owner": owner, "v": {"$lt": v - RETIRE_EVERY}},
            {"$rename": {"owner": "retired"}},
        )
        if v % (RETIRE_EVERY * RETIRE_EVERY) == 0:  # rarely: these are few, and only take room
            self.collection.delete_many({"retired": owner, "at": {"$lt": now - DELETE_AFTER}})

    def repair(
        self, owner: str, stored: Callable[[], int], now: datetime, settle: float = SETTLE_SECONDS
    ) -> UsageRepair | None:
        """Set the owner's total to ``stored()`` (the sum of their complete files) if it drifted.

        Both are read twice, ``settle`` apart, and the total is set only if neither moved in
        between, by a change at the same version (so a change racing the repair wins, and the
        repair looks again). The window left: an upload that completed but stalls for longer than
        ``settle`` before counting itself, during the repair, is then counted twice.
        """
        for _ in range(5):
            head, actual = self.head(owner), stored()
            if actual == head.bytes:
                return None
            time.sleep(settle)
            again = self.head(owner)
            if again.v == head.v and stored() == actual and self._write(again, actual, now):
                return UsageRepair(owner, head.bytes, actual)
        return None

    def owners(self) -> set[str]:
        """Every user with a total (a full scan: for the sweep)."""
        with _mapped_errors():
            return {str(owner) for owner in self.collection.distinct("owner")}

    def remove(self, owner: str) -> None:
        """Forget a user's total (their account is gone)."""
        with _mapped_errors():
            self.collection.delete_many({"owner": owner})
            self.collection.delete_many({"retired": owner})
