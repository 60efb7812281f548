#!/usr/bin/env python3
"""Decrypt one file stored by crypto-files-server, without the server.

    python scripts/decrypt_file.py ENCRYPTED_FILE KEY_BASE64 [-o OUT]
    python scripts/decrypt_file.py ENCRYPTED_FILE --key-file KEYFILE [-o OUT]

ENCRYPTED_FILE is the raw ciphertext (e.g. the concatenated GridFS chunks; '-' for
stdin) and the key is the file's unwrapped 32-byte key, in base64.  The format is
Tink's AES-GCM-HKDF streaming format with the AES256_GCM_HKDF_1MB parameters and
empty associated data, so Tink itself can also decrypt these files.

Deliberately standalone (only the standard library and ``cryptography``), so it
keeps working for disaster recovery even if the service code does not.  It streams:
one 1 MiB segment is read, authenticated and written at a time.

With ``-o OUT`` the plaintext goes to a private temporary file next to OUT that is
renamed over OUT only after the whole file has been authenticated, so a tampered or
truncated ciphertext never leaves partial plaintext at OUT.  With ``-o -`` (the
default) plaintext is written to stdout as it is verified; on failure what was
already written is authentic but incomplete, and the exit status is 1.

Prefer --key-file: a key given on the command line is visible to other local users
(e.g. in ``ps``) and lands in shell history.

Exit status: 0 success, 1 decryption failed (wrong key, tampered, truncated) or
I/O error, 2 usage error.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import os
import struct
import sys
import tempfile
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SEGMENT_SIZE = 1 << 20
KEY_SIZE = 32
TAG_SIZE = 16
HEADER_SIZE = 1 + KEY_SIZE + 7  # length byte || salt || nonce prefix


class DecryptFailed(Exception):
    """The ciphertext was rejected. Messages never include key material."""


def read_full(stream: BinaryIO, size: int) -> bytes:
    """Read exactly ``size`` bytes unless EOF comes first (pipes may return short reads)."""
    parts: list[bytes] = []
    remaining = size
    while remaining:
        part = stream.read(remaining)
        if not part:
            break
        parts.append(part)
        remaining -= len(part)
    return b"".join(parts)


def decrypt(key: bytes, source: BinaryIO, sink: BinaryIO) -> int:
    """Decrypt ``source`` into ``sink`` segment by segment; returns the plaintext size."""
    header = read_full(source, HEADER_SIZE)
    if len(header) < HEADER_SIZE or header[0] != HEADER_SIZE:
        raise DecryptFailed("not a crypto-files ciphertext (missing or bad header)")
    salt, prefix = header[1 : 1 + KEY_SIZE], header[1 + KEY_SIZE :]
    derived = HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=salt, info=b"").derive(key)
    aead = AESGCM(derived)

    # Whether a segment is the last one is part of its nonce, so always read one
    # segment ahead: the current segment is the last exactly when the next read is empty.
    current = read_full(source, SEGMENT_SIZE - HEADER_SIZE)
    index = 0
    written = 0
    while True:
        following = read_full(source, SEGMENT_SIZE) if len(current) == len_full(index) else b""
        last = not following
        if len(current) < TAG_SIZE:
            raise DecryptFailed(f"ciphertext is truncated (segment {index})")
        if index >= 1 << 32:
            raise DecryptFailed("too many segments")
        nonce = prefix + struct.pack(">IB", index, last)
        try:
            plaintext = aead.decrypt(nonce, current, None)
        except InvalidTag:
            raise DecryptFailed(
                f"segment {index} failed authentication: wrong key, or the file was "
                "tampered with, truncated or extended"
            ) from None
        sink.write(plaintext)
        written += len(plaintext)
        if last:
            return written
        current = following
        index += 1


def len_full(index: int) -> int:
    """Length of a full ciphertext segment ``index`` (segment 0 shares its MiB with the header)."""
    return SEGMENT_SIZE - HEADER_SIZE if index == 0 else SEGMENT_SIZE


def parse_key(text: str) -> bytes:
    cleaned = "".join(text.split())
    cleaned = cleaned.rstrip("=").replace("-", "+").replace("_", "/")  # accept URL-safe too
    try:
        key = base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise DecryptFailed("key is not valid base64") from None
    if len(key) != KEY_SIZE:
        raise DecryptFailed(f"key must decode to {KEY_SIZE} bytes, got {len(key)}")
    return key


def load_key(args: argparse.Namespace) -> bytes:
    if args.key_file is not None:
        with open(args.key_file, "rb") as handle:
            raw = handle.read(4096)
        try:
            return parse_key(raw.decode("ascii"))
        except (UnicodeDecodeError, DecryptFailed):
            if len(raw) == KEY_SIZE:  # a raw 32-byte key file; 32 chars of base64 would be 24 bytes
                return raw
            raise DecryptFailed("key file must hold the key in base64 (or 32 raw bytes)") from None
    return parse_key(args.key)


def run(args: argparse.Namespace) -> None:
    key = load_key(args)
    source: BinaryIO
    with sys.stdin.buffer if args.encrypted == "-" else open(args.encrypted, "rb") as source:
        if args.output == "-":
            decrypt(key, source, sys.stdout.buffer)
            sys.stdout.buffer.flush()
            return
        target = os.path.abspath(args.output)
        # mkstemp creates the file 0600 in the target directory, so the rename is
        # atomic (same filesystem) and partial plaintext is never readable by others.
        fd, temp_path = tempfile.mkstemp(
            prefix=".decrypt-", suffix=".part", dir=os.path.dirname(target)
        )
        try:
            with os.fdopen(fd, "wb") as sink:
                decrypt(key, source, sink)
                sink.flush()
                os.fsync(sink.fileno())
            os.replace(temp_path, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp_path)
            raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Decrypt a crypto-files-server file (Tink AES256_GCM_HKDF_1MB streaming)."
    )
    parser.add_argument(
        "encrypted", metavar="ENCRYPTED_FILE", help="ciphertext file, or - for stdin"
    )
    parser.add_argument(
        "key", metavar="KEY_BASE64", nargs="?", help="the file key in base64 (prefer --key-file)"
    )
    parser.add_argument("--key-file", help="file containing the key in base64")
    parser.add_argument(
        "-o", "--output", default="-", help="plaintext output path, or - for stdout (default)"
    )
    args = parser.parse_args(argv)
    if (args.key is None) == (args.key_file is None):
        parser.error("give exactly one of KEY_BASE64 or --key-file")
    try:
        run(args)
    except DecryptFailed as exc:
        print(f"decrypt_file: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"decrypt_file: error: {exc.strerror or exc} ({exc.filename or ''})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
