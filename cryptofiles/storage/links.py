"""The ``links`` and ``link_downloads`` collections: share links, and the downloads each one counted.

``links``: ``_id`` (UUIDv4 text, the link's public id, not its token), ``token_hash`` (SHA-256 of
the token, hex: the token itself is never stored), ``file``, ``owner``, ``created_at``,
``expires_at``, ``max_downloads`` (null: no limit).

``link_downloads``: one document per download a link allowed, ``_id`` = ``"<link id>:<n>"`` for the
n-th download, ``link``, ``n``, ``at``. Why not a counter updated with ``$inc`` or a compare-and-set:
FerretDB 1.24 applies every update as read, modify, write back, so concurrent ones lose updates
(``usage.py`` has the measurements). What it does enforce is a unique ``_id``. So a download takes a
numbered slot by inserting it: slots ``1..max_downloads`` exist to be taken once each, the insert of
a taken slot fails with a duplicate key, and the downloader tries the next. Fifty downloaders of a
link allowing ten take slots 1 to 10 between them and the other forty find none: exactly ten
succeed, on MongoDB and FerretDB alike, with no lock to leave behind if a process dies.

Taken slots always form 1..k (a downloader starts at the count it read plus one, which is at most
k + 1, and moves up only past a taken slot), so the count of a link's slots is its downloads, and
a downloader that read a stale count only pays for it with a few refused inserts.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from cryptofiles.storage.errors import _mapped_errors


@dataclasses.dataclass(frozen=True)
class LinkRecord:
    id: str
    file: str
    owner: str
    created_at: datetime
    expires_at: datetime
    max_downloads: int | None

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> LinkRecord:
        return cls(
            id=doc["_id"],
            file=doc["file"],
            owner=doc["owner"],
            created_at=doc["created_at"],
            expires_at=doc["expires_at"],
            max_downloads=doc.get("max_downloads"),
        )


class Links:
    """The share links and their counted downloads: ``storage.links``."""

    def __init__(self, db: Database[dict[str, Any]]) -> None:
        self.collection = db["links"]
        self.downloads = db["link_downloads"]

    def ensure_indexes(self) -> None:
        with _mapped_errors():
            self.collection.create_index("token_hash", name="links_by_token")
            self.collection.create_index("file", name="links_by_file")
            self.collection.create_index("expires_at", name="links_by_expiry")
            self.downloads.create_index("link", name="link_downloads_by_link")

    def insert(self, link: LinkRecord, token_hash: str) -> None:
        doc = {
            "_id": link.id,
            "token_hash": token_hash,
            "file": link.file,
            "owner": link.owner,
            "created_at": link.created_at,
            "expires_at": link.expires_at,
            "max_downloads": link.max_downloads,
        }
        with _mapped_errors():
            self.collection.insert_one(doc)

    def by_token_hash(self, token_hash: str) -> LinkRecord | None:
        with _mapped_errors():
            doc = self.collection.find_one({"token_hash": token_hash})
        return LinkRecord.from_doc(doc) if doc else None

    def of_file(self, file_id: str) -> list[LinkRecord]:
        """The file's links, oldest first (a handful: the service bounds them)."""
        with _mapped_errors():
            docs = self.collection.find({"file": file_id})
            links = [LinkRecord.from_doc(doc) for doc in docs]
        return sorted(links, key=lambda link: (link.created_at, link.id))

    def downloads_of(self, link_id: str) -> int:
        with _mapped_errors():
            return self.downloads.count_documents({"link": link_id})

    def take_download(self, link: LinkRecord, now: datetime) -> int | None:
        """Count one download of ``link``: its number, or None when every one was taken."""
        n = self.downloads_of(link.id) + 1
        while link.max_downloads is None or n <= link.max_downloads:
            doc = {"_id": f"{link.id}:{n}", "link": link.id, "n": n, "at": now}
            with _mapped_errors():
                try:
                    self.downloads.insert_one(doc)
                except DuplicateKeyError:
                    n += 1  # somebody took slot n first: try the next
                    continue
            return n
        return None

    def remove(self, link_id: str) -> bool:
        """Remove a link (the link first: from then on it answers like an unknown one)."""
        with _mapped_errors():
            removed = self.collection.delete_one({"_id": link_id}).deleted_count
            self.downloads.delete_many({"link": link_id})
        return bool(removed)

    def remove_for_file(self, file_id: str) -> int:
        """Remove every link of a file (the file is being deleted); returns how many."""
        removed = 0
        for link in self.of_file(file_id):
            removed += self.remove(link.id)
        return removed

    def expired(self, now: datetime) -> list[str]:
        """The ids of links past their expiry (for the sweep)."""
        with _mapped_errors():
            return [doc["_id"] for doc in self.collection.find({"expires_at": {"$lt": now}}, {})]

    def linked_files(self) -> set[str]:
        """Every file some link names (a full scan: for the sweep)."""
        with _mapped_errors():
            return {str(file_id) for file_id in self.collection.distinct("file")}

    def remove_orphan_downloads(self) -> int:
        """Remove counted downloads whose link is gone (a download that raced the link's removal);
        returns how many links they belonged to. Full scans: for the sweep."""
        with _mapped_errors():
            orphans = set(self.downloads.distinct("link")) - set(self.collection.distinct("_id"))
            for link_id in orphans:
                self.downloads.delete_many({"link": link_id})
        return len(orphans)
