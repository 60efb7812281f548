"""The ``grants`` collection: the owner's permission for another user to fetch one file's key.

``grants``: ``_id`` = ``"<file id>/<grantee public id>"`` (so granting twice is one row, and the
key route's check is a lookup by ``_id``, the one lookup FerretDB does without an index of ours),
``file``, ``owner`` and ``grantee`` (public ids), ``file_created_at`` (the file's own time, so that
``shared=with-me`` pages in the order and with the cursor of ``GET /files``), ``expires_at`` (None:
until revoked), ``created_at``, ``updated_at``.

An expired grant stays stored until it is revoked or swept, but no read here returns it as live:
the time is the caller's (the service's clock). Grants are removed with their file
(``remove_for_file``) and with either user's account (``remove_for_user``); the sweep removes the
grants whose file or users are gone (``dangling``).
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from pymongo import ReturnDocument
from pymongo.database import Database

from cryptofiles.storage.errors import _mapped_errors


@dataclasses.dataclass(frozen=True)
class Grant:
    file: str
    owner: str
    grantee: str
    file_created_at: datetime
    expires_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Grant:
        return cls(
            doc["file"],
            doc["owner"],
            doc["grantee"],
            doc["file_created_at"],
            doc.get("expires_at"),
            doc["created_at"],
            doc.get("updated_at", doc["created_at"]),
        )

    def live(self, now: datetime) -> bool:
        return self.expires_at is None or self.expires_at > now


def grant_id(file_id: str, grantee: str) -> str:
    return f"{file_id}/{grantee}"


def _live(now: datetime) -> dict[str, Any]:
    return {"$or": [{"expires_at": None}, {"expires_at": {"$gt": now}}]}


class Grants:
    """The per-file grants: ``storage.grants``."""

    def __init__(self, db: Database[dict[str, Any]]) -> None:
        self.collection = db["grants"]

    def ensure_indexes(self) -> None:
        with _mapped_errors():
            self.collection.create_index("file", name="grants_by_file")
            self.collection.create_index("owner", name="grants_by_owner")
            self.collection.create_index(
                [("grantee", 1), ("file_created_at", -1)], name="grants_by_grantee"
            )

    def put(self, grant: Grant, *, fresh: bool) -> Grant:
        """Store the grant: a ``fresh`` one (none was live) from scratch, ``created_at`` included;
        else only its new expiry, keeping when it was made. The grant as stored; one round trip."""
        made = {"created_at": grant.created_at}
        with _mapped_errors():
            before = self.collection.find_one_and_update(
                {"_id": grant_id(grant.file, grant.grantee)},
                {
                    "$set": {
                        "expires_at": grant.expires_at,
                        "updated_at": grant.updated_at,
                        **(made if fresh else {}),
                    },
                    "$setOnInsert": {
                        "file": grant.file,
                        "owner": grant.owner,
                        "grantee": grant.grantee,
                        "file_created_at": grant.file_created_at,
                        **({} if fresh else made),
                    },
                },
                upsert=True,
                return_document=ReturnDocument.BEFORE,
            )
        if before is None or fresh:
            return grant
        return dataclasses.replace(grant, created_at=before["created_at"])

    def get_live(self, file_id: str, grantee: str, now: datetime) -> Grant | None:
        with _mapped_errors():
            doc = self.collection.find_one({"_id": grant_id(file_id, grantee)})
        grant = Grant.from_doc(doc) if doc else None
        return grant if grant is not None and grant.live(now) else None

    def revoke(self, file_id: str, grantee: str, now: datetime) -> bool:
        """Remove the grant; whether a live one was there (an expired one is removed too, but
        answers like none)."""
        with _mapped_errors():
            doc = self.collection.find_one_and_delete({"_id": grant_id(file_id, grantee)})
        return doc is not None and Grant.from_doc(doc).live(now)

    def of_file(self, file_id: str, now: datetime) -> list[Grant]:
        """The file's live grants, oldest first."""
        with _mapped_errors():
            cursor = self.collection.find(
                {"file": file_id, **_live(now)}, sort=[("created_at", 1), ("_id", 1)]
            )
            return [Grant.from_doc(doc) for doc in cursor]

    def with_grantee(
        self, grantee: str, now: datetime, *, limit: int, after: tuple[datetime, str] | None
    ) -> list[Grant]:
        """The grantee's live grants, newest file first, starting after ``(created_at, file id)``."""
        clauses: list[dict[str, Any]] = [_live(now)]
        if after is not None:
            created_at, file_id = after
            clauses.append({"$or": [
                {"file_created_at": {"$lt": created_at}},
                {"file_created_at": created_at, "file": {"$lt": file_id}},
            ]})  # fmt: skip
        with _mapped_errors():
            cursor = self.collection.find(
                {"grantee": grantee, "$and": clauses},
                sort=[("file_created_at", -1), ("file", -1)],
                limit=limit,
            )
            return [Grant.from_doc(doc) for doc in cursor]

    def remove_for_file(self, file_id: str) -> None:
        with _mapped_errors():
            self.collection.delete_many({"file": file_id})

    def remove_for_user(self, public_id: str) -> None:
        """Every grant the user gave (as owner) or was given (as grantee)."""
        with _mapped_errors():
            self.collection.delete_many({"owner": public_id})
            self.collection.delete_many({"grantee": public_id})

    def referenced(self) -> tuple[set[str], set[str]]:
        """``(file ids, user public ids)`` that grants name: a full scan, for the sweep."""
        with _mapped_errors():
            files = set(self.collection.distinct("file"))
            users = set(self.collection.distinct("owner")) | set(
                self.collection.distinct("grantee")
            )
        return files, users

    def remove_dangling(self, files_gone: set[str], users_gone: set[str]) -> int:
        """Remove the grants of files or users that no longer exist; how many."""
        removed = 0
        with _mapped_errors():
            for file_id in files_gone:
                removed += self.collection.delete_many({"file": file_id}).deleted_count
            for public_id in users_gone:
                removed += self.collection.delete_many({"owner": public_id}).deleted_count
                removed += self.collection.delete_many({"grantee": public_id}).deleted_count
        return removed
