"""Share links: the service behind /files/<id>/links and /s/<token>, callable without HTTP.

A link lets anyone who holds it download one file's ciphertext, without an account, until it
expires, is revoked, or its downloads are used up. The link is ``/s/<token>``; the token is 256
random bits and only its SHA-256 is stored. No salt and no slow hash: those protect guessable
secrets (passwords) against a stolen table; a 256-bit random token cannot be guessed, so its plain
hash is already as hard to reverse as the token is to guess, and one hash keeps the lookup a
single indexed query. The file's key is never stored for a link: the owner puts it in the URL's
fragment (``#k=...``), which browsers never send, and the link's page or the CLI decrypts locally.

Every way a link can be dead (unknown, expired, revoked, used up, its file gone) raises the one
``NoSuchLink``, so a holder learns nothing from the answer but "no".
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import secrets
import uuid
from datetime import datetime, timedelta

from cryptofiles.clock import Clock
from cryptofiles.files import FileService, NoSuchFile
from cryptofiles.sharing import LINK_DOWNLOAD, Actor, History
from cryptofiles.storage import FileRecord, LinkRecord, Storage

log = logging.getLogger(__name__)

DEFAULT_LIFETIME = timedelta(days=7)
MAX_LIFETIME = timedelta(days=90)
MAX_DOWNLOADS = 10_000  # the most a link may allow (each download is one small document)
MAX_LINKS_PER_FILE = 100  # live links of one file: keeps the listing one small page
TOKEN_BYTES = 32  # 256 bits; the issue asks for at least 128


class LinkError(Exception):
    """Base of this module's errors; the message is safe to show to the client."""


class InvalidLink(LinkError):
    """A link's settings break a rule (expiry in the past or too far, a bad download count)."""


class TooManyLinks(LinkError):
    pass


class NoSuchLink(LinkError):
    """Unknown, expired, revoked, used up, or its file gone: one answer for all."""


@dataclasses.dataclass(frozen=True)
class NewLink:
    link: LinkRecord
    token: str  # shown once, to the owner who created it; never stored


@dataclasses.dataclass(frozen=True)
class LinkStatus:
    link: LinkRecord
    downloads: int


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class LinkService:
    def __init__(
        self, storage: Storage, files: FileService, history: History, clock: Clock
    ) -> None:
        self.storage = storage
        self.files = files
        self.history = history
        self.clock = clock

    def create(
        self,
        record: FileRecord,
        *,
        expires_at: datetime | None = None,
        max_downloads: int | None = None,
    ) -> NewLink:
        """A new link to ``record`` (the caller checked that it is the caller's own file)."""
        now = self.clock()
        expires_at = self._expiry(now, expires_at)
        if max_downloads is not None and not 1 <= max_downloads <= MAX_DOWNLOADS:
            raise InvalidLink(f"max_downloads must be an integer from 1 to {MAX_DOWNLOADS}.")
        if len(self.live(record)) >= MAX_LINKS_PER_FILE:
            raise TooManyLinks(
                f"This file has {MAX_LINKS_PER_FILE} live links; revoke one before adding another."
            )
        token = secrets.token_urlsafe(TOKEN_BYTES)
        # BSON keeps milliseconds: answer the times as they are stored.
        link = LinkRecord(
            str(uuid.uuid4()), record.id, record.owner, _ms(now), expires_at, max_downloads
        )
        self.storage.links.insert(link, token_hash(token))
        return NewLink(link, token)

    def _expiry(self, now: datetime, expires_at: datetime | None) -> datetime:
        if expires_at is None:
            return _ms(now + DEFAULT_LIFETIME)
        if expires_at.tzinfo is None:
            raise InvalidLink("expires_at must include its time zone (for example a final Z).")
        if expires_at <= now:
            raise InvalidLink("expires_at must be in the future.")
        if expires_at > now + MAX_LIFETIME:
            raise InvalidLink(f"expires_at may be at most {MAX_LIFETIME.days} days from now.")
        return _ms(expires_at)

    def live(self, record: FileRecord) -> list[LinkStatus]:
        """The file's links that still allow a download, oldest first, with their counts."""
        now = self.clock()
        statuses = []
        for link in self.storage.links.of_file(record.id):
            if link.expires_at > now:
                downloads = self.storage.links.downloads_of(link.id)
                if link.max_downloads is None or downloads < link.max_downloads:
                    statuses.append(LinkStatus(link, downloads))
        return statuses

    def revoke(self, record: FileRecord, link_id: str) -> None:
        """Remove the file's link ``link_id``; NoSuchLink if the file has no such link."""
        if not any(link.id == link_id for link in self.storage.links.of_file(record.id)):
            raise NoSuchLink("No such link.")
        self.storage.links.remove(link_id)

    def open(self, token: str) -> tuple[LinkRecord, FileRecord]:
        """The live link ``token`` names and its file, without counting a download."""
        link, record = self._link(token)
        limit = link.max_downloads
        if limit is not None and self.storage.links.downloads_of(link.id) >= limit:
            raise NoSuchLink("No such link.")
        return link, record

    def _link(self, token: str) -> tuple[LinkRecord, FileRecord]:
        """The unexpired link ``token`` names and its servable file, used up or not."""
        link = self.storage.links.by_token_hash(token_hash(token))
        if link is None or link.expires_at <= self.clock():
            raise NoSuchLink("No such link.")
        try:
            record = self.files.get(link.file, owner=link.owner)
        except NoSuchFile:
            raise NoSuchLink("No such link.") from None
        return link, record

    def download(self, token: str, client: str, request_id: str | None) -> FileRecord:
        """Count one download of the link ``token`` (atomically: see ``storage/links.py``), record
        it in the file's history, and answer its file; NoSuchLink when the link is dead or its
        downloads are used up, RecordingFailed (nothing served) when the history cannot take it.

        Counted first, then recorded: recording first would leave an event for every refused
        download of a used-up link. A download that could not be recorded is spent, not served.
        """
        link, record = self._link(token)
        if self.storage.links.take_download(link, self.clock()) is None:
            raise NoSuchLink("No such link.")
        # The link holder has no account: the link stands for them (never its token).
        holder = Actor(link.id, "share link", client, request_id)
        self.history.record(record.id, LINK_DOWNLOAD, holder, link=link.id)
        return record

    def sweep(self) -> int:
        """Remove links past their expiry and links whose file is gone (a crash between a file's
        deletion and its links'), and downloads counted for links gone; returns how many links.
        Full scans: for ``admin sweep``."""
        removed = 0
        for link_id in self.storage.links.expired(self.clock()):
            removed += self.storage.links.remove(link_id)
        for file_id in self.storage.links.linked_files():
            if self.storage.files.complete_by_id(file_id) is None:
                removed += self.storage.links.remove_for_file(file_id)
        # Not counted as links: the downloads counted by a link removed meanwhile.
        self.storage.links.remove_orphan_downloads()
        if removed:
            log.info("swept %d share link(s)", removed)
        return removed


def _ms(when: datetime) -> datetime:
    return when.replace(microsecond=when.microsecond // 1000 * 1000)
