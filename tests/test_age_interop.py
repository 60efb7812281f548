"""Sealed keys with implementations we did not write, end to end over HTTP against the real server.

The stock ``age`` CLI (Go, filippo.io/age, installed by ``make age`` into tools/age/bin) makes the
identity, and opens what the server sealed (with pyrage, Rust); the key it yields decrypts the file
with ``scripts/decrypt_file.py`` and with Tink. Our CLI's ``keygen`` identity opens with stock
``age``, and ``cryptofiles key`` / ``download --decrypt`` unseal transparently. README's "Sealed
keys" curl block runs verbatim.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cryptofiles import cli
from cryptofiles.dev import age as age_tools
from cryptofiles.dev.tink_oracle import tink_decrypt
from tests.support.server import ROOT, Server, new_token
from tests.test_e2e import readme_block, run_bash

pytestmark = pytest.mark.e2e

PASSWORD = "password1"  # new_token's
PAYLOAD = os.urandom((1 << 20) + 4321)  # two segments


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("age-serve"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def age() -> dict[str, Path]:
    try:
        return age_tools.find()
    except age_tools.MissingAge as exc:
        pytest.fail(f"{exc} (make test installs it)")


def run(*command: Any, stdin: bytes | None = None) -> bytes:
    result = subprocess.run([str(c) for c in command], input=stdin, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout


def stock_identity(age: dict[str, Path], folder: Path) -> tuple[Path, str]:
    """An identity file made by the stock age-keygen, and its recipient."""
    path = folder / f"stock-{uuid.uuid4().hex[:6]}.txt"
    run(age["age-keygen"], "-o", path)
    return path, run(age["age-keygen"], "-y", path).decode().strip()


def request(server: Server, method: str, path: str, token: str, **kwargs: Any) -> Any:
    headers = {"x-access-tokens": token, **kwargs.pop("headers", {})}
    response, data = server.request(method, path, kwargs.pop("body", None), headers)
    return response, data


def register_recipients(server: Server, token: str, recipients: list[str], **extra: Any) -> None:
    body = json.dumps({"recipients": recipients, **extra})
    response, data = request(
        server, "PUT", "/account/recipients", token,
        body=body, headers={"Content-Type": "application/json"},
    )  # fmt: skip
    assert response.status == 200, data


def upload(server: Server, token: str) -> tuple[str, bytes]:
    response, file_id = request(server, "POST", "/upload", token, body=PAYLOAD)
    assert response.status == 201
    response, ciphertext = request(server, "GET", f"/files/{file_id.decode()}", token)
    assert response.status == 200
    return file_id.decode(), ciphertext


def test_stock_age_opens_the_sealed_key_and_it_decrypts_the_file(
    server: Server, age: dict[str, Path], tmp_path: Path
) -> None:
    token = new_token(server, "age-interop")
    file_id, ciphertext = upload(server, token)
    identity, recipient = stock_identity(age, tmp_path)
    other_identity, other_recipient = stock_identity(age, tmp_path)
    register_recipients(server, token, [recipient, other_recipient], require_sealed=True)

    armored_answer, armored = request(server, "GET", f"/files/{file_id}/key", token)
    binary_answer, binary = request(
        server, "GET", f"/files/{file_id}/key", token,
        headers={"Accept": "application/octet-stream"},
    )  # fmt: skip
    assert armored_answer.status == binary_answer.status == 200
    assert armored_answer.getheader("Content-Type").startswith("text/plain")
    assert binary_answer.getheader("Content-Type") == "application/octet-stream"
    assert armored.startswith(b"-----BEGIN AGE ENCRYPTED FILE-----")
    assert binary.startswith(b"age-encryption.org/v1\n")
    for answer in (armored_answer, binary_answer):
        assert answer.getheader("Cache-Control") == "no-store"

    keys = {run(age["age"], "-d", "-i", who, stdin=sealed) for sealed in (armored, binary)
            for who in (identity, other_identity)}  # fmt: skip
    assert len(keys) == 1
    key = keys.pop()
    assert len(key) == 32
    for answer_body in (armored, binary):  # the plain key never crossed HTTP
        assert key not in answer_body and base64.b64encode(key) not in answer_body

    assert tink_decrypt(key, ciphertext) == PAYLOAD
    (tmp_path / "file.enc").write_bytes(ciphertext)
    (tmp_path / "file.key").write_text(base64.b64encode(key).decode() + "\n")
    run(sys.executable, ROOT / "scripts" / "decrypt_file.py", tmp_path / "file.enc",
        "--key-file", tmp_path / "file.key", "-o", tmp_path / "file.out")  # fmt: skip
    assert (tmp_path / "file.out").read_bytes() == PAYLOAD

    # A third identity opens nothing.
    stranger, _ = stock_identity(age, tmp_path)
    refused = subprocess.run([age["age"], "-d", "-i", stranger], input=armored, capture_output=True)
    assert refused.returncode != 0 and refused.stdout == b""


def test_readme_sealed_keys_curl_block_verbatim(server: Server, age: dict[str, Path]) -> None:
    env_path = f"{age['age'].parent}:{os.environ['PATH']}"
    script = f'export PATH="{env_path}"\n' + readme_block("sealed")
    result = run_bash(script, server.port)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "sealed round trip OK" in lines
    assert lines[-1].startswith("This account requires sealed key delivery")
    assert '"require_sealed":true' in result.stdout.replace(" ", "")


# -- the CLI --------------------------------------------------------------------------------------


class Cli:
    def __init__(self, server: Server, home: Path, cwd: Path) -> None:
        self.home, self.cwd = home, cwd
        self.environ = {
            k: v for k, v in os.environ.items() if not k.startswith(("CRYPTOFILES_", "MONGODB_"))
        }
        self.environ.update(
            PYTHONPATH=str(ROOT),
            CRYPTOFILES_URL=server.base,
            XDG_CONFIG_HOME=str(home),
            CRYPTOFILES_PASSWORD=PASSWORD,
        )

    def run(self, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "cryptofiles.cli", *args],
            cwd=self.cwd, env=self.environ, capture_output=True, text=True, timeout=120,
            start_new_session=True,
        )  # fmt: skip
        assert result.returncode == code, (args, result.stdout, result.stderr)
        return result


@pytest.fixture
def client(server: Server, tmp_path: Path) -> Cli:
    (tmp_path / "home").mkdir()
    (tmp_path / "work").mkdir()
    return Cli(server, tmp_path / "home", tmp_path / "work")


def test_cli_keygen_identity_opens_with_stock_age_and_cli_unseals(
    server: Server, client: Cli, age: dict[str, Path]
) -> None:
    name = f"k{uuid.uuid4().hex[:8]}"
    client.run("register", name)
    client.run("login", name)
    (client.cwd / "doc.bin").write_bytes(PAYLOAD)
    file_id = client.run("upload", "doc.bin").stdout.strip()
    plain = client.run("key", file_id).stdout.strip()  # no recipients yet: the plain answer

    made = client.run("keygen", "--require-sealed")
    identity = client.home / "cryptofiles" / "identity.txt"
    recipient = made.stdout.strip()
    assert stat.S_IMODE(identity.stat().st_mode) == 0o600
    lines = identity.read_text().splitlines()
    assert lines[0].startswith("# created: ") and lines[1] == f"# public key: {recipient}"
    assert lines[2].startswith("AGE-SECRET-KEY-1") and lines[2] not in made.stdout + made.stderr
    assert run(age["age-keygen"], "-y", identity).decode().strip() == recipient
    again = client.run("keygen", code=cli.EXIT_ERROR)  # never over an existing identity
    assert "already exists" in again.stderr

    token = json.loads((client.home / "cryptofiles" / "token").read_text())[server.base]
    response, sealed = request(server, "GET", f"/files/{file_id}/key", token)
    assert response.status == 200 and plain.encode() not in sealed
    assert base64.b64encode(run(age["age"], "-d", "-i", identity, stdin=sealed)).decode() == plain

    # The CLI unseals transparently: key, and download --decrypt.
    assert client.run("key", file_id).stdout.strip() == plain
    client.run("download", file_id, "--decrypt", "-o", "copy.bin")
    assert (client.cwd / "copy.bin").read_bytes() == PAYLOAD


def test_cli_unseals_with_a_stock_identity_and_says_when_it_cannot(
    server: Server, client: Cli, age: dict[str, Path], tmp_path: Path
) -> None:
    name = f"s{uuid.uuid4().hex[:8]}"
    client.run("register", name)
    client.run("login", name)
    (client.cwd / "doc.bin").write_bytes(b"sealed to a stock identity")
    file_id = client.run("upload", "doc.bin").stdout.strip()
    identity, recipient = stock_identity(age, tmp_path)
    token = json.loads((client.home / "cryptofiles" / "token").read_text())[server.base]
    register_recipients(server, token, [recipient])

    missing = client.run("key", file_id, code=cli.EXIT_USAGE)
    assert "sealed to your age recipients" in missing.stderr and "--identity" in missing.stderr
    client.run("download", file_id, "--decrypt", "-o", "x.bin", code=cli.EXIT_USAGE)
    assert not (client.cwd / "x.bin").exists()
    wrong, _ = stock_identity(age, tmp_path)
    failed = client.run("key", file_id, "--identity", str(wrong), code=cli.EXIT_DECRYPT)
    assert "cannot open the sealed key" in failed.stderr
    (tmp_path / "junk.txt").write_text("not an identity\n")
    client.run("key", file_id, "--identity", str(tmp_path / "junk.txt"), code=cli.EXIT_USAGE)

    key = client.run("key", file_id, "--identity", str(identity)).stdout.strip()
    assert base64.b64encode(run(age["age"], "-d", "-i", identity, stdin=request(
        server, "GET", f"/files/{file_id}/key", token)[1])).decode() == key  # fmt: skip
    client.run("download", file_id, "--decrypt", "--identity", str(identity), "-o", "y.bin")
    assert (client.cwd / "y.bin").read_bytes() == b"sealed to a stock identity"


def test_age_ensure_is_quick_and_needs_no_go_once_installed(age: dict[str, Path]) -> None:
    """make test runs `python -m cryptofiles.dev.age ensure` every time: once installed, it only
    checks the pinned version (no Go on PATH needed), and reports a wrong or missing install."""
    environ = {"PATH": "", "CRYPTOFILES_TOOLS_DIR": str(age["age"].parent.parent.parent)}
    assert age_tools.ensure(environ) == age
    assert run(age["age"], "--version").decode().strip() == age_tools.AGE_VERSION
    with pytest.raises(age_tools.MissingAge, match="make age"):
        age_tools.ensure({"PATH": "", "CRYPTOFILES_TOOLS_DIR": "/nonexistent-tools"})
