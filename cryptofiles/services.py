"""The one wiring: ``build_services(settings)`` makes the storage, accounts, files, keys, sharing,
history, links and resumable uploads services.

The web app, the CLI's admin commands, the tests and the benchmarks all build the services here,
so that a setting (the write concern, the quota, the password cost) reaches every one of them
instead of whichever copy of the wiring remembered it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from cryptofiles.accounts import Authenticator, PasswordHasher, TokenService
from cryptofiles.clock import Clock, utcnow
from cryptofiles.config import Settings
from cryptofiles.files import FileService
from cryptofiles.keys import KeyCustody
from cryptofiles.links import LinkService
from cryptofiles.sharing import History, Sharing
from cryptofiles.storage import CommandListener, Storage
from cryptofiles.uploads import ResumableUploads


@dataclass(frozen=True)
class Services:
    settings: Settings
    storage: Storage
    accounts: Authenticator
    files: FileService
    keys: KeyCustody
    history: History
    sharing: Sharing
    links: LinkService
    uploads: ResumableUploads

    def close(self) -> None:
        self.storage.close()


def open_storage(settings: Settings, event_listeners: Sequence[CommandListener] = ()) -> Storage:
    """A client for the configured database; nothing is sent to it yet. ``event_listeners``:
    pymongo command listeners (the tests count each request's database commands with one)."""
    return Storage(
        settings.mongodb_uri,
        settings.mongodb_db,
        timeout_ms=settings.mongodb_timeout_ms,
        write_concern=settings.mongodb_write_concern,
        event_listeners=event_listeners,
    )


def build_services(
    settings: Settings, *, clock: Clock = utcnow, storage: Storage | None = None
) -> Services:
    """Everything the API does, on ``storage`` (opened from the settings when not given).

    Talks to the database: the indexes are ensured, and the password methods in use are read so
    that every check costs the same (see ``PasswordHasher.verify``).
    """
    storage = storage or open_storage(settings)
    storage.ensure_indexes()
    accounts = Authenticator(
        storage,
        PasswordHasher(
            settings.password_hash,
            settings.password_hash_concurrency,
            settings.password_hash_queue,
            methods_in_use=storage.users.password_hash_methods(),
        ),
        TokenService(settings.secret_key, timedelta(minutes=settings.token_life_minutes), clock),
        clock,
    )
    files = FileService(
        storage, settings.master_keys, clock, settings.max_upload_bytes, settings.quota_bytes
    )
    history = History(storage, clock, timedelta(days=settings.events_retention_days))
    sharing = Sharing(storage, files, history)
    links = LinkService(storage, files, history, clock)
    uploads = ResumableUploads(storage, files, expiry=timedelta(hours=settings.upload_expiry_hours))
    return Services(
        settings, storage, accounts, files, KeyCustody(storage), history, sharing, links, uploads
    )
