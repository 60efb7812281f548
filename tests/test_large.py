"""A large file, end to end over real HTTP: 200 MiB up, down, decrypted by our script and by Tink.

Slow (about a minute on FerretDB/SQLite); still part of `make test`. Deselect with -m "not slow".
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cryptofiles.dev.tink_oracle import tink_streaming_aead
from tests.support.server import ROOT, Server, new_token

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

SIZE = 200 * (1 << 20) + 12345  # not a multiple of anything


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("serve-large"))
    yield server
    server.stop()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def test_200_mib_round_trip(server: Server, tmp_path: Path) -> None:
    plain = tmp_path / "plain.bin"
    with open(plain, "wb") as f:
        for _ in range(SIZE >> 20):
            f.write(os.urandom(1 << 20))
        f.write(os.urandom(SIZE % (1 << 20)))
    token = new_token(server, "large")
    auth = ["-H", f"x-access-tokens: {token}"]

    # -T streams the file from disk (--data-binary would read it all into curl's memory).
    file_id = subprocess.run(
        ["curl", "-sSf", *auth, "-X", "POST", "-T", str(plain), f"{server.base}/upload"],
        capture_output=True, text=True, check=True, timeout=600,
    ).stdout  # fmt: skip
    encrypted = tmp_path / "plain.bin.enc"
    subprocess.run(
        ["curl", "-sSf", *auth, "-o", str(encrypted), f"{server.base}/files/{file_id}"],
        check=True, timeout=600,
    )  # fmt: skip
    key_file = tmp_path / "key"
    subprocess.run(
        ["curl", "-sSf", *auth, "-o", str(key_file), f"{server.base}/files/{file_id}/key"],
        check=True, timeout=60,
    )  # fmt: skip
    expected = sha256_of(plain)

    ours = tmp_path / "ours.bin"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "decrypt_file.py"), str(encrypted),
         "--key-file", str(key_file), "-o", str(ours)],
        check=True, timeout=600,
    )  # fmt: skip
    assert sha256_of(ours) == expected

    aead = tink_streaming_aead(base64.b64decode(key_file.read_text()))
    digest = hashlib.sha256()
    with open(encrypted, "rb") as f, aead.new_decrypting_stream(f, b"") as stream:
        while block := stream.read(1 << 20):
            digest.update(block)
    assert digest.hexdigest() == expected
