"""Storage: everything the service keeps, in MongoDB, through pymongo.

Collections, one module (and one attribute of ``Storage``) per family:
- ``users`` (``users.py``, ``storage.users``): ``_id`` (= ``public_id``), ``public_id`` (UUIDv4
  text, the JWT subject), ``name`` (unique), ``name_key`` (the name in lower case, unique: names
  differing only in case are one name), ``password_hash``, ``created_at``, ``token_generation``
  (bumped by a password change), ``deleting`` (true once the account's deletion has begun).
- ``revoked_tokens`` (``revocations.py``, ``storage.revocations``): ``_id`` = the token's ``jti``,
  ``expires_at``. A TTL index lets MongoDB drop a row once the token would have expired anyway.
  FerretDB 1.x has no TTL indexes: there we keep a plain index and purge expired rows ourselves
  whenever a token is revoked.
- ``rate_counters`` (``counters.py``, ``storage.counters``): the rate limiter's fixed windows.
- ``files`` (``records.py``, ``storage.files``): one record per file: ``_id`` (UUIDv4 text, the
  public file id), ``owner`` (user public id), ``name``, ``content_type``, ``size`` (plaintext),
  ``stored_size`` (ciphertext), ``wrapped_key``, ``kek_id``, ``status`` (``pending`` while
  uploading, ``complete`` once stored, ``deleting`` once shredded), ``created_at``,
  ``heartbeat_at`` (refreshed while an upload runs). A record without ``wrapped_key`` is shredded
  whatever its status says, and never served.
- ``usage`` (``usage.py``, ``storage.usage``): each user's running total of stored plaintext bytes,
  the quota's count, as a chain of versions (``_id`` = ``"<owner>/<v>"``, ``owner``, ``v``,
  ``bytes``, ``at``): see ``usage.py`` for why not ``$inc``. An upload adds its size after its owner
  check; a deletion takes it away when it shreds the record; ``admin sweep`` repairs a drift.
- ``grants`` (``grants.py``, ``storage.grants``): ``_id`` = ``"<file>/<grantee>"``, ``file``,
  ``owner``, ``grantee``, ``file_created_at``, ``expires_at``, ``created_at``, ``updated_at``: who
  besides the owner may fetch a file's key. Removed with the file and with either account.
- ``events`` (``events.py``, ``storage.events``): a file's access history (key deliveries, grant
  changes, downloads), with ``expire_at`` for retention. Removed with the file.
- ``links`` and ``link_downloads`` (``links.py``, ``storage.links``): share links (``_id``, the hash
  of the token, ``file``, ``owner``, ``expires_at``, ``max_downloads``) and one document per
  download counted (``_id`` = ``"<link>:<n>"``): see ``links.py`` for why numbered slots.
- resumable uploads (``uploads.py``, ``storage.uploads``): a tus upload's state lives on its file
  record (``status: "resumable"``, ``length``, ``offset``, ``segments``, ``header``,
  ``expires_at``) until it completes; ``upload_locks`` lets one request at a time append to it.
- GridFS bucket ``ciphertext`` (``chunks.py``, ``storage.chunks``; ``ciphertext.files``,
  ``ciphertext.chunks``): the encrypted bytes, in 1 MiB chunks, under the same id as the record.

Write order, because GridFS cannot join a transaction (and FerretDB has none): the record first
(pending), then the chunks and the GridFS entry, then the record is marked complete. Removal goes
the other way: the GridFS entry and the chunks first, the record last. So chunks never exist
without a record that names them, only complete records are served, and a sweep of stale pending
records finishes any removal a crash interrupted.
Deleting an account marks the user first, then removes every record of the owner; an upload that
completes re-checks its owner afterwards (see ``FileService._check_owner``); the sweep removes the files
of owners that no longer exist.

Only this package imports pymongo. It raises its own small exception family (``errors.py``), which
the app maps to HTTP answers in one place.
"""

from cryptofiles.storage.database import POOL_SIZE, CommandListener, Storage
from cryptofiles.storage.errors import (
    ChunkConflict,
    CorruptFile,
    DatabaseUnavailable,
    NameTaken,
    StorageError,
    StorageFull,
    UploadLost,
)
from cryptofiles.storage.links import LinkRecord
from cryptofiles.storage.records import FileRecord
from cryptofiles.storage.uploads import UploadRecord
from cryptofiles.storage.usage import UsageHead, UsageRepair
from cryptofiles.storage.users import User, name_key

__all__ = [
    "POOL_SIZE",
    "ChunkConflict",
    "CommandListener",
    "CorruptFile",
    "DatabaseUnavailable",
    "FileRecord",
    "LinkRecord",
    "NameTaken",
    "Storage",
    "StorageError",
    "StorageFull",
    "UploadLost",
    "UploadRecord",
    "UsageHead",
    "UsageRepair",
    "User",
    "name_key",
]
