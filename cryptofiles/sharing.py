"""Per-file grants and the access history: who besides the owner may fetch a file's key, and the
record of every key delivery, grant change and download. Callable without HTTP.

``Sharing.key_record`` is the one check of the key route: the owner, or a user holding a live grant
(not expired, not revoked); anyone else gets ``files.NoSuchFile``, exactly as for an unknown id.
Grant routes are the owner's only (``FileService.get(id, owner=...)`` before anything else).
``History.record`` is one insert; when it fails, ``RecordingFailed`` stops the action it records
(a key is never delivered unrecorded).
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime, timedelta
from typing import Any

from cryptofiles.accounts import NAME_RE
from cryptofiles.audit import security_event
from cryptofiles.clock import Clock
from cryptofiles.files import FileError, FileService, NoSuchFile, _decode_cursor, _encode_cursor
from cryptofiles.storage import FileRecord, Storage, StorageError, User
from cryptofiles.storage.events import Event
from cryptofiles.storage.grants import Grant

log = logging.getLogger(__name__)

GRANT_CREATE, GRANT_UPDATE, GRANT_REVOKE = "grant.create", "grant.update", "grant.revoke"
KEY, DOWNLOAD, PLAINTEXT = "key", "download", "plaintext"
LINK_DOWNLOAD = "link.download"  # a download through a share link (links.py)


class InvalidGrant(FileError):
    """A grant the owner cannot make (to themselves, to nobody, expiring in the past): a 400."""


class NoSuchGrant(FileError):
    """The owner revoked a grant that is not there, or no longer live: a 404."""


class RecordingFailed(FileError):
    """The access history could not store an event; the action it records did not happen."""


@dataclasses.dataclass(frozen=True)
class Actor:
    """Who acts, from where, in which request: what an event records of the request."""

    public_id: str
    name: str
    client: str
    request_id: str | None


@dataclasses.dataclass(frozen=True)
class NamedGrant:
    grant: Grant
    grantee_name: str


class History:
    """The access history of files (``storage.events``), kept ``retention`` long."""

    def __init__(self, storage: Storage, clock: Clock, retention: timedelta) -> None:
        self.storage = storage
        self.clock = clock
        self.retention = retention

    def record(self, file_id: str, action: str, actor: Actor, **details: Any) -> None:
        """Store one event, or raise RecordingFailed: callers record before they act."""
        now = self.clock()
        event = Event(file_id, now, action, actor.public_id, actor.name, actor.client,
                      actor.request_id, details)  # fmt: skip
        try:
            self.storage.events.record(event, now + self.retention)
        except StorageError as exc:
            log.warning("event %s of file %s not recorded: %s", action, file_id, exc)
            raise RecordingFailed(
                "The access history is unavailable, so nothing was delivered; try again shortly."
            ) from exc

    def of_file(
        self, record: FileRecord, *, limit: int, cursor: str | None = None
    ) -> tuple[list[Event], str | None]:
        """One page of the file's events, newest first, and the next page's cursor (or None)."""
        after = _decode_cursor(cursor) if cursor else None
        events = self.storage.events.of_file(record.id, self.clock(), limit=limit + 1, after=after)
        if len(events) <= limit:
            return events, None
        last = events[limit - 1]
        return events[:limit], _encode_cursor(last.at, last.id)


class Sharing:
    """Grants: made, listed and revoked by a file's owner; checked by the key route."""

    def __init__(self, storage: Storage, files: FileService, history: History) -> None:
        self.storage = storage
        self.files = files
        self.history = history
        self.clock = files.clock

    def key_record(self, file_id: str, user: str) -> FileRecord:
        """The file, if ``user`` may have its key: its owner, or a live grantee. Else NoSuchFile."""
        record = self.files.get(file_id)
        if record.owner == user:
            return record
        if self.storage.grants.get_live(record.id, user, self.clock()) is None:
            security_event("file.not_owner", file=record.id)
            raise NoSuchFile("No such file.")
        return record

    def info_record(self, file_id: str, user: str) -> FileRecord:
        """What ``GET /files/<id>/info`` may show: the same people as the key."""
        return self.key_record(file_id, user)

    def grant(
        self, record: FileRecord, grantee_name: str, expires_at: datetime | None, actor: Actor
    ) -> tuple[NamedGrant, bool]:
        """Grant (or re-grant with a new expiry); ``(the grant, whether it is new)``. Recorded."""
        now = _millis(self.clock())
        grantee = self._user_named(grantee_name)
        if grantee is None or not self.storage.users.may_own_files(grantee.public_id):
            raise InvalidGrant("No such user.")
        if grantee.public_id == record.owner:
            raise InvalidGrant("You own this file: grant it to another user.")
        if expires_at is not None and expires_at <= now:
            raise InvalidGrant("expires_at must be in the future.")
        expires_at = _millis(expires_at) if expires_at is not None else None
        wanted = Grant(record.id, record.owner, grantee.public_id, record.created_at, expires_at,
                       now, now)  # fmt: skip
        was = self.storage.grants.get_live(record.id, grantee.public_id, now)
        action = GRANT_CREATE if was is None else GRANT_UPDATE
        self.history.record(record.id, action, actor, grantee=grantee.public_id,
                            grantee_name=grantee.name, expires_at=expires_at)  # fmt: skip
        # No live grant (none, or an expired one): a new grant, made now.
        stored = self.storage.grants.put(wanted, fresh=was is None)
        return NamedGrant(stored, grantee.name), was is None

    def revoke(self, record: FileRecord, grantee_name: str, actor: Actor) -> None:
        """Remove a live grant (NoSuchGrant when there is none). Recorded before it happens."""
        now = self.clock()
        grantee = self._user_named(grantee_name)
        live = grantee and self.storage.grants.get_live(record.id, grantee.public_id, now)
        if grantee is None or live is None:
            raise NoSuchGrant("No such grant.")
        self.history.record(record.id, GRANT_REVOKE, actor, grantee=grantee.public_id,
                            grantee_name=grantee.name)  # fmt: skip
        self.storage.grants.revoke(record.id, grantee.public_id, now)

    def _user_named(self, name: str) -> User | None:
        return self.storage.users.by_name(name) if NAME_RE.fullmatch(name) else None

    def grants_of(self, record: FileRecord) -> list[NamedGrant]:
        """The file's live grants, oldest first, with the grantees' names."""
        grants = self.storage.grants.of_file(record.id, self.clock())
        named = []
        for grant in grants:
            user = self.storage.users.by_public_id(grant.grantee)
            if user is not None:  # a grantee deleted meanwhile: the grant goes with them
                named.append(NamedGrant(grant, user.name))
        return named

    def shared_with(
        self, user: str, *, limit: int, cursor: str | None = None
    ) -> tuple[list[tuple[FileRecord, str]], str | None]:
        """One page of the files others granted ``user`` (with their owners' names), newest file
        first, and the next page's cursor: the order and cursor of ``FileService.list``."""
        after = _decode_cursor(cursor) if cursor else None
        grants = self.storage.grants.with_grantee(user, self.clock(), limit=limit + 1, after=after)
        next_cursor = None
        if len(grants) > limit:
            grants = grants[:limit]
            next_cursor = _encode_cursor(grants[-1].file_created_at, grants[-1].file)
        shared = []
        for grant in grants:
            record = self.storage.files.complete_by_id(grant.file)
            owner = self.storage.users.by_public_id(grant.owner)
            if record is not None and owner is not None:  # deleted meanwhile: not shown
                shared.append((record, owner.name))
        return shared, next_cursor

    def forget_user(self, public_id: str) -> None:
        """An account's deletion: every grant it gave or was given goes."""
        self.storage.grants.remove_for_user(public_id)


def _millis(moment: datetime) -> datetime:
    """``moment`` as the database keeps it (BSON dates have millisecond precision)."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)
