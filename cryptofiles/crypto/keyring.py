"""The master key ring (envelope encryption): wrapping and unwrapping per-file keys.

File keys are never stored in the clear: they are wrapped with AES-256-GCM under a master
key ("KEK") from ``KeyRing``, with associated data binding the wrap to the file id and owner
(``wrap_aad``), so a wrapped key copied onto another file record does not unwrap. Several
KEKs can be configured so that a new one can be made active (used for all new wraps) while
the old ones still unwrap existing files.
"""

from __future__ import annotations

import base64
import os
import re
import struct
from collections.abc import Mapping
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cryptofiles.crypto.errors import KeyFormatError, KeyRingError
from cryptofiles.crypto.keytext import decode_key
from cryptofiles.crypto.layout import KEY_SIZE, TAG_SIZE, check_key

__all__ = ["KeyRing", "wrap_aad"]

_WRAP_NONCE_SIZE: Final = 12
_WRAPPED_SIZE: Final = _WRAP_NONCE_SIZE + KEY_SIZE + TAG_SIZE
_KEK_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_WRAP_AAD_LABEL: Final = b"cryptofiles/file-key-wrap/v1"


def wrap_aad(file_id: str, owner: str) -> bytes:
    """Associated data for wrapping a file key: binds the wrap to this file and owner.

    Each field is length-prefixed (4-byte big-endian) so that no two (file_id, owner)
    pairs encode alike (("ab", "c") vs ("a", "bc")); the versioned label keeps these
    bytes from ever colliding with associated data used for any other purpose.
    """
    parts = [_WRAP_AAD_LABEL, file_id.encode("utf-8"), owner.encode("utf-8")]
    return b"".join(struct.pack(">I", len(p)) + p for p in parts)


def _describe_entry(position: int, kek_id: str | None) -> str:
    # Ids are not secret, but a malformed "id" may really be a key pasted in the wrong
    # place (e.g. "KEY:id").  A 32-byte key in base64 is at least 43 characters, so
    # only ids that are valid *and* shorter than that are echoed back.
    if kek_id is not None and len(kek_id) < 43 and _KEK_ID.fullmatch(kek_id):
        return f"key ring entry {position} (id {kek_id!r})"
    return f"key ring entry {position}"


class KeyRing:
    """Master keys: {kek_id: 32-byte key}; one active for wrapping, all accepted for unwrapping.

    Only AESGCM objects are kept, never the raw key bytes as attributes, so neither
    repr(), logging, nor a debugger's object view can show them.

    Random 96-bit wrap nonces are safe for about 2**32 wraps per KEK (NIST SP 800-38D);
    one wrap per uploaded file keeps us far below that, and rotation resets the count.
    """

    __slots__ = ("_aeads", "active_id")

    active_id: str

    def __init__(self, keys: Mapping[str, bytes], active_id: str) -> None:
        if not keys:
            raise KeyRingError("key ring is empty")
        aeads: dict[str, AESGCM] = {}
        for position, (kek_id, key) in enumerate(keys.items(), start=1):
            where = _describe_entry(position, kek_id if isinstance(kek_id, str) else None)
            if not isinstance(kek_id, str) or not _KEK_ID.fullmatch(kek_id):
                raise KeyRingError(
                    f"{where}: invalid id (use 1-64 characters from A-Z a-z 0-9 _ . -)"
                )
            if not isinstance(key, bytes | bytearray) or len(key) != KEY_SIZE:
                raise KeyRingError(f"{where}: key must be exactly {KEY_SIZE} bytes")
            if not any(key):
                raise KeyRingError(f"{where}: key is all zero bytes")
            aeads[kek_id] = AESGCM(bytes(key))
        if active_id not in aeads:
            raise KeyRingError("active key id is not in the key ring")
        self._aeads = aeads
        self.active_id = active_id

    @classmethod
    def parse(cls, text: str) -> KeyRing:
        """Parse "id1:BASE64KEY,id0:BASE64KEY"; the FIRST entry is the active one.

        Whitespace around entries, ids and keys is ignored.  Errors name the entry
        (position, and id when safe to show) and the problem, never the key text.
        """
        entries = text.split(",")
        if not text.strip():
            raise KeyRingError("key ring is empty (expected 'id:base64key[,id:base64key...]')")
        keys: dict[str, bytes] = {}
        for position, raw in enumerate(entries, start=1):
            entry = raw.strip()
            if not entry:
                raise KeyRingError(f"key ring entry {position} is empty (stray comma?)")
            kek_id, sep, encoded = entry.partition(":")
            kek_id, encoded = kek_id.strip(), encoded.strip()
            where = _describe_entry(position, kek_id if sep else None)
            if not sep:
                raise KeyRingError(f"{where}: expected 'id:base64key' (no ':' found)")
            if not _KEK_ID.fullmatch(kek_id):
                raise KeyRingError(
                    f"{where}: invalid id (use 1-64 characters from A-Z a-z 0-9 _ . -)"
                )
            if kek_id in keys:
                raise KeyRingError(f"{where}: duplicate id")
            try:
                keys[kek_id] = decode_key(encoded)
            except KeyFormatError as exc:
                raise KeyRingError(f"{where}: {exc}") from None
        return cls(keys, next(iter(keys)))

    @staticmethod
    def generate_entry(kek_id: str) -> str:
        """A new "id:base64" entry holding a fresh random key (for the launcher / setup)."""
        if not _KEK_ID.fullmatch(kek_id):
            raise KeyRingError("invalid id (use 1-64 characters from A-Z a-z 0-9 _ . -)")
        return f"{kek_id}:{base64.b64encode(os.urandom(KEY_SIZE)).decode('ascii')}"

    def ids(self) -> list[str]:
        """KEK ids, active first when built by parse() (configuration order)."""
        return list(self._aeads)

    def wrap(self, file_key: bytes, associated_data: bytes) -> tuple[str, bytes]:
        """Encrypt a file key under the active KEK: (kek_id, nonce(12) || ciphertext || tag)."""
        file_key = check_key(file_key, "file key")
        nonce = os.urandom(_WRAP_NONCE_SIZE)
        sealed = self._aeads[self.active_id].encrypt(nonce, file_key, associated_data)
        return self.active_id, nonce + sealed

    def unwrap(self, kek_id: str, wrapped: bytes, associated_data: bytes) -> bytes:
        """Recover a file key; KeyRingError on unknown kek id or failed authentication."""
        aead = self._aeads.get(kek_id)
        if aead is None:
            # The id is echoed only if it is well-formed (it comes from the database).
            shown = (
                repr(kek_id)
                if isinstance(kek_id, str) and _KEK_ID.fullmatch(kek_id)
                else "(malformed)"
            )
            raise KeyRingError(f"unknown key id {shown}: is the master key ring complete?")
        if len(wrapped) != _WRAPPED_SIZE:
            raise KeyRingError("wrapped key has the wrong length")
        try:
            return aead.decrypt(
                wrapped[:_WRAP_NONCE_SIZE], wrapped[_WRAP_NONCE_SIZE:], associated_data
            )
        except InvalidTag:
            raise KeyRingError(
                f"wrapped key failed to unwrap under {kek_id!r} "
                "(tampered with, or bound to another file/owner)"
            ) from None

    def __repr__(self) -> str:
        return f"KeyRing(active_id={self.active_id!r}, ids={self.ids()!r})"

    # AESGCM objects cannot be pickled or copied (so the raw keys never get serialised);
    # the ring is immutable in practice, so copies can share it.  This keeps
    # copy.deepcopy / dataclasses.asdict of a config holding a KeyRing working.
    def __copy__(self) -> KeyRing:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> KeyRing:
        return self
