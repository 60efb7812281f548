"""The ``users`` collection: accounts, their password hashes, and the mark of a deletion begun.

``users``: ``_id`` (= ``public_id``), ``public_id`` (UUIDv4 text, the JWT subject), ``name``
(unique), ``name_key`` (the name in lower case, unique: names differing only in case are one name),
``password_hash``, ``created_at``, ``token_generation`` (bumped by a password change), ``deleting``
(true once the account's deletion has begun), ``recipients`` (the user's age recipients, ``age1...``;
absent: none) and ``require_sealed`` (true: keys are never delivered to this user in plain).

Deleting an account marks the user first (``mark_deleting``), then removes every record of the
owner, then the user (``delete``); an upload that completes re-checks ``may_own_files`` afterwards.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime
from typing import Any

from pymongo import ReturnDocument
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from cryptofiles.storage.errors import NameTaken, _mapped_errors


def name_key(name: str) -> str:
    """What makes two user names the same name: letter case does not count (names are ASCII)."""
    return name.lower()


@dataclasses.dataclass(frozen=True)
class User:
    public_id: str
    name: str
    password_hash: str = dataclasses.field(repr=False)
    created_at: datetime
    # Bumped when the password changes: tokens carry the generation they were issued in.
    token_generation: int = 0
    # The age recipients file keys are sealed to (keys.py); users made before them have none.
    recipients: tuple[str, ...] = ()
    require_sealed: bool = False

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> User:
        return cls(
            doc["public_id"],
            doc["name"],
            doc["password_hash"],
            doc["created_at"],
            doc.get("token_generation", 0),
            tuple(doc.get("recipients", ())),
            bool(doc.get("require_sealed", False)),
        )


class Users:
    """The accounts: ``storage.users``."""

    def __init__(self, db: Database[dict[str, Any]]) -> None:
        self.collection = db["users"]

    def ensure_indexes(self) -> None:
        with _mapped_errors():
            self.collection.create_index("name", unique=True, name="unique_name")
            self.collection.create_index("public_id", unique=True, name="unique_public_id")
            _backfill_name_keys(self.collection)
            self.collection.create_index("name_key", unique=True, name="unique_name_key")

    def create(self, name: str, password_hash: str, now: datetime) -> User:
        public_id = str(uuid.uuid4())
        doc = {
            # The public id is the _id too: FerretDB's SQLite backend looks documents up directly
            # only by _id (any other filter reads the whole collection), and every request with a
            # token looks its user up by this id.
            "_id": public_id,
            "public_id": public_id,
            "name": name,
            # Unique, so that "ADMIN" cannot be registered beside "admin" (a lookalike), even by
            # two registrations at once; the database decides, as for the exact name.
            "name_key": name_key(name),
            "password_hash": password_hash,
            "created_at": now,
        }
        with _mapped_errors():
            try:
                self.collection.insert_one(doc)
            except DuplicateKeyError:
                raise NameTaken(name) from None
        return User.from_doc(doc)

    def by_name(self, name: str) -> User | None:
        with _mapped_errors():
            doc = self.collection.find_one({"name": name})
        return User.from_doc(doc) if doc else None

    def by_public_id(self, public_id: str) -> User | None:
        with _mapped_errors():
            doc = self.collection.find_one({"_id": public_id})
        return User.from_doc(doc) if doc else None

    def mark_deleting(self, public_id: str) -> None:
        """The first step of deleting an account: uploads completing from now on undo themselves."""
        with _mapped_errors():
            self.collection.update_one({"_id": public_id}, {"$set": {"deleting": True}})

    def may_own_files(self, public_id: str) -> bool:
        """Whether the user exists and is not being deleted (what a completed upload re-checks)."""
        with _mapped_errors():
            doc = self.collection.find_one({"_id": public_id}, {"deleting": 1})
        return doc is not None and not doc.get("deleting", False)

    def password_hash_methods(self) -> set[str]:
        """The methods of the stored password hashes ("scrypt:16384:8:1"): a full scan, for start-up."""
        with _mapped_errors():
            cursor = self.collection.find({}, {"password_hash": 1}, batch_size=1000)
            return {doc["password_hash"].split("$", 1)[0] for doc in cursor}

    def set_password_hash(self, public_id: str, verified_hash: str, password_hash: str) -> bool:
        """Replace the hash of the same password (a cost upgrade): tokens stay valid.

        Only if the stored hash is still ``verified_hash`` (compare-and-set): a password change
        that landed since the login verified the old one must not be overwritten by it.
        """
        with _mapped_errors():
            result = self.collection.update_one(
                {"_id": public_id, "password_hash": verified_hash},
                {"$set": {"password_hash": password_hash}},
            )
        return result.modified_count == 1

    def change_password(self, public_id: str, password_hash: str) -> None:
        """Store a new password hash and invalidate every token issued before it."""
        with _mapped_errors():
            self.collection.update_one(
                {"_id": public_id},
                {"$set": {"password_hash": password_hash}, "$inc": {"token_generation": 1}},
            )

    def set_recipients(
        self, public_id: str, recipients: tuple[str, ...], require_sealed: bool
    ) -> User | None:
        """Replace the user's age recipients and sealing rule; the user as now stored (None: gone)."""
        with _mapped_errors():
            doc = self.collection.find_one_and_update(
                {"_id": public_id},
                {"$set": {"recipients": list(recipients), "require_sealed": require_sealed}},
                return_document=ReturnDocument.AFTER,
            )
        return User.from_doc(doc) if doc else None

    def delete(self, public_id: str) -> None:
        with _mapped_errors():
            self.collection.delete_one({"_id": public_id})


def _backfill_name_keys(users: Collection[dict[str, Any]]) -> None:
    """Give users made before ``name_key`` theirs. Idempotent; a scan only while some lack it.

    Names that already differ only in case (made before the rule) keep their accounts: one
    takes the folded name, the others ``<folded>#<id>``, which no name folds to ('#' is not a
    name character), so that every further variant stays refused.
    """
    missing = list(users.find({"name_key": {"$exists": False}}, {"name": 1}))
    if not missing:
        return
    taken = {d["name_key"] for d in users.find({"name_key": {"$exists": True}})}
    for doc in missing:
        folded = name_key(doc["name"])
        for key in (folded, f"{folded}#{doc['_id']}"):
            if key in taken:
                continue
            try:
                users.update_one(
                    {"_id": doc["_id"], "name_key": {"$exists": False}},
                    {"$set": {"name_key": key}},
                )
            except DuplicateKeyError:  # the index exists and a registration took it meanwhile
                continue
            taken.add(key)
            break
