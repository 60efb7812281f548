"""All cryptography of the service: per-file streaming encryption and the master key ring.

This package is the only part of the service that imports AEAD or KDF primitives; everything
else calls the names re-exported here (``from cryptofiles import crypto``; ``crypto.X``). The
standalone recovery tool ``scripts/decrypt_file.py`` deliberately re-implements decryption so
that it works without this package.

- ``stream``: the file format (Tink's AES-GCM-HKDF streaming), encryption and decryption, whole
  or by segment range.
- ``layout``: the format's constants and size arithmetic (which segment holds which byte).
- ``segmenter``: cutting a stream of pieces into segments without copying big pieces.
- ``keyring``: the master keys that wrap each file key, bound to its file and owner.
- ``keytext``: ``decode_key``, the one reader of a key written in base64 (file keys and master keys).
- ``sealing``: file keys sealed to a user's own age recipients (``pyrage``), and opened again.
- ``errors``: ``CryptoError`` and its subclasses.
"""

from cryptofiles.crypto.errors import (
    CryptoError,
    DecryptionError,
    IdentityError,
    KeyFormatError,
    KeyRingError,
    RecipientError,
)
from cryptofiles.crypto.keyring import KeyRing, wrap_aad
from cryptofiles.crypto.keytext import decode_key
from cryptofiles.crypto.layout import (
    ALGORITHM,
    FORMAT,
    HEADER_SIZE,
    KEY_SIZE,
    SEGMENT_SIZE,
    TAG_SIZE,
    Buffer,
    ciphertext_size,
    plaintext_offset_of_segment,
    plaintext_segment_range,
    plaintext_segment_size,
    plaintext_size,
    segment_count,
)
from cryptofiles.crypto.sealing import NewIdentity, new_identity, parse_recipient, seal, unseal
from cryptofiles.crypto.segmenter import Segmenter
from cryptofiles.crypto.stream import (
    Encryptor,
    ReadPieces,
    SegmentSealer,
    decrypt_range,
    decrypt_segments,
    decrypt_stream,
    encrypt_stream,
    new_file_key,
)

__all__ = [
    "ALGORITHM",
    "FORMAT",
    "HEADER_SIZE",
    "KEY_SIZE",
    "SEGMENT_SIZE",
    "TAG_SIZE",
    "Buffer",
    "CryptoError",
    "DecryptionError",
    "Encryptor",
    "IdentityError",
    "KeyFormatError",
    "KeyRing",
    "KeyRingError",
    "NewIdentity",
    "ReadPieces",
    "RecipientError",
    "SegmentSealer",
    "Segmenter",
    "ciphertext_size",
    "decode_key",
    "decrypt_range",
    "decrypt_segments",
    "decrypt_stream",
    "encrypt_stream",
    "new_file_key",
    "new_identity",
    "parse_recipient",
    "plaintext_offset_of_segment",
    "plaintext_segment_range",
    "plaintext_segment_size",
    "plaintext_size",
    "seal",
    "segment_count",
    "unseal",
    "wrap_aad",
]
