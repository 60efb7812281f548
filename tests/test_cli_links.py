"""`cryptofiles link` and `cryptofiles download LINK`, run as a subprocess against the real server,
in tests/test_cli.py's style and with its fixtures (one server for this module)."""

from __future__ import annotations

import base64
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cryptofiles import cli
from tests import test_cli
from tests.test_cli import Cli, ServerBox

pytestmark = pytest.mark.e2e
# The fixtures of tests/test_cli.py: a server for this module, a user's folders for each test.
box = test_cli.box
client = test_cli.client

LINK_RE = re.compile(r"(http://[^/]+/s/([A-Za-z0-9_-]{43,}))#k=([A-Za-z0-9_-]{43})")


def shared_file(client: Cli, size: int = 2 * (1 << 20) + 77) -> tuple[str, Path]:
    client.new_user()
    path = client.cwd / "shared report.bin"
    path.write_bytes(os.urandom(size))
    return client.run("upload", path.name).stdout.strip(), path


def stranger(client: Cli, tmp_path: Path) -> Cli:
    """Someone with no account and no stored token, in a folder of their own."""
    (tmp_path / "stranger-home").mkdir()
    (tmp_path / "stranger-work").mkdir()
    return Cli(client.url, tmp_path / "stranger-home", tmp_path / "stranger-work")


def test_a_link_carries_the_key_and_downloads_decrypted_without_login(
    client: Cli, box: ServerBox, tmp_path: Path
) -> None:
    file_id, path = shared_file(client)
    created = client.run("link", file_id, "--max-downloads", "2")
    link = created.stdout.strip()
    match = LINK_RE.fullmatch(link)
    assert match, link
    assert match[1].startswith(client.url + "/s/")
    key = client.run("key", file_id).stdout.strip()
    assert base64.urlsafe_b64decode(match[3] + "=") == base64.b64decode(key)
    assert "downloads: 2" in created.stderr

    other = stranger(client, tmp_path)
    assert other.run("download", link).stdout.strip() == "shared report.bin"
    assert (other.cwd / "shared report.bin").read_bytes() == path.read_bytes()
    other.run("download", link, "-o", "again.bin")
    assert (other.cwd / "again.bin").read_bytes() == path.read_bytes()
    refused = other.run("download", link, "-o", "third.bin", code=cli.EXIT_NOT_FOUND)
    assert "no such link" in refused.stderr
    assert match[2] not in refused.stderr  # the token is not repeated
    assert not (other.cwd / "third.bin").exists()
    # The key travelled in the fragment only: the server never saw it, in any form.
    log = box.log()
    for form in (match[3], key, key.rstrip("=")):
        assert form not in log


def test_a_link_without_its_key_saves_the_ciphertext_and_says_so(
    client: Cli, tmp_path: Path
) -> None:
    file_id, path = shared_file(client, 1000)
    link = client.run("link", file_id).stdout.strip().partition("#")[0]
    other = stranger(client, tmp_path)
    result = other.run("download", link)
    assert result.stdout.strip() == "shared report.bin.enc"
    assert "the link has no key" in result.stderr
    (other.cwd / "k").write_text(client.run("key", file_id).stdout)
    other.run("decrypt", "shared report.bin.enc", "--key-file", "k", "-o", "plain.bin")
    assert (other.cwd / "plain.bin").read_bytes() == path.read_bytes()


def test_a_wrong_or_malformed_key_leaves_no_output(client: Cli, tmp_path: Path) -> None:
    file_id, _ = shared_file(client, 5000)
    link = client.run("link", file_id, "--max-downloads", "1").stdout.strip()
    base = link.partition("#")[0]
    other = stranger(client, tmp_path)
    # A key that is not one is refused before the download, which is not counted then.
    other.run("download", f"{base}#k=short", code=cli.EXIT_USAGE)
    wrong = base64.urlsafe_b64encode(bytes(32)).decode().rstrip("=")
    other.run("download", f"{base}#k={wrong}", "-o", "out.bin", code=cli.EXIT_DECRYPT)
    assert sorted(p.name for p in other.cwd.iterdir()) == []
    # The one download was spent on the wrong key.
    other.run("download", link, code=cli.EXIT_NOT_FOUND)


def test_link_options(client: Cli) -> None:
    file_id, _ = shared_file(client, 10)
    created = client.run("link", file_id, "--expires", "2h").stderr
    when = datetime.fromisoformat(re.search(r"expires (\S+),", created)[1])  # type: ignore[index]
    assert abs(when - (datetime.now(UTC) + timedelta(hours=2))) < timedelta(minutes=1)
    assert "downloads: unlimited" in created
    later = (datetime.now(UTC) + timedelta(days=3)).isoformat(timespec="seconds")
    client.run("link", file_id, "--expires", later)
    for bad in (
        ["--expires", "soon"],
        ["--expires", "2030-01-01T00:00:00"],
        ["--max-downloads", "0"],
    ):
        client.run("link", file_id, *bad, code=cli.EXIT_USAGE)
    client.run("link", file_id, "--expires", "100d", code=cli.EXIT_ERROR)  # the server's 90 days
    client.run("link", "no-such-file", code=cli.EXIT_NOT_FOUND)
    client.run("download", "http://127.0.0.1:1/s/", code=cli.EXIT_USAGE)
