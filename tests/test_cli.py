"""The `cryptofiles` command, run as a subprocess against the real server (started as `make run` does).

One server per module (uploads limited to 8 MiB, so the 413 case is cheap). Every test gets its own
config folder (XDG_CONFIG_HOME) and working folder, so tokens and downloads never leak between
tests. A few failure modes the real server cannot produce on demand (a download cut off, a stalled
transfer) are played by a tiny fake server. Admin commands run on the launcher's own database, found
through the URI the launcher logs, with its var/secrets.env.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import http.server
import json
import os
import pty
import re
import select
import signal
import stat
import struct
import subprocess
import sys
import termios
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pymongo
import pytest
from bson.binary import Binary

from cryptofiles import cli
from cryptofiles.cli import admin, output, transport
from cryptofiles.cli.client import parse_key
from cryptofiles.config import read_env_file
from cryptofiles.crypto import KeyRing, wrap_aad
from cryptofiles.dev.database import free_port
from tests.support.server import ROOT, Server
from tests.support.settings import TEST_PASSWORD_HASH

pytestmark = pytest.mark.e2e

MiB = 1 << 20
MAX_UPLOAD = 8 * MiB
PASSWORD = "cli-password-1"
# Small uploads make 413 cheap; a cheaper password hash (as in conftest) keeps logins quick.
SERVER_ENV = {"MAX_UPLOAD_BYTES": str(MAX_UPLOAD), "PASSWORD_HASH": TEST_PASSWORD_HASH}


# -- fixtures and helpers ------------------------------------------------------------------------


class ServerBox:
    """The module's server; the rotation test restarts it on the same var dir (same secrets, data)."""

    def __init__(self, var_dir: Path) -> None:
        self.var_dir = var_dir
        self.server = Server(var_dir, SERVER_ENV)

    @property
    def url(self) -> str:
        return self.server.base

    @property
    def secrets_file(self) -> Path:
        return self.var_dir / "secrets.env"

    def database_uri(self) -> str:
        # The log is appended to across restarts, and each start picks a new port: the last one.
        found = re.findall(r"Started a local database at (mongodb://\S+)", self.log())
        assert found, self.log()
        return str(found[-1])

    @contextlib.contextmanager
    def db(self) -> Iterator[Any]:
        client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(self.database_uri())
        try:
            yield client["cryptofiles"]
        finally:
            client.close()

    def log(self) -> str:
        return self.server.log_path.read_text()

    def restart(self) -> None:
        self.server.stop()
        self.server = Server(self.var_dir, SERVER_ENV)


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerBox]:
    box = ServerBox(tmp_path_factory.mktemp("cli-serve"))
    yield box
    box.server.stop()


class Cli:
    """Runs `python -m cryptofiles.cli` as a user would, in its own config and working folders."""

    def __init__(self, url: str, home: Path, cwd: Path) -> None:
        self.url = url
        self.home = home
        self.cwd = cwd

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("CRYPTOFILES_", "MONGODB_")) and k not in admin.SECRET_NAMES
        }
        env.update(
            PYTHONPATH=str(ROOT),
            PYTHONIOENCODING="utf-8",
            CRYPTOFILES_URL=self.url,
            XDG_CONFIG_HOME=str(self.home),
            CRYPTOFILES_PASSWORD=PASSWORD,
        )
        env.update(extra)
        return env

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "cryptofiles.cli", *args]

    def run(
        self, *args: str, code: int = 0, env: dict[str, str] | None = None, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self.command(*args),
            cwd=self.cwd,
            env=env or self.env(),
            input=stdin,
            capture_output=True,
            encoding="utf-8",
            timeout=120,
            start_new_session=True,  # no terminal: a missing password fails instead of prompting
        )
        assert result.returncode == code, (
            f"{args}: exit {result.returncode}, not {code}\n{result.stdout}\n{result.stderr}"
        )
        return result

    def new_user(self) -> str:
        name = f"u{uuid.uuid4().hex[:10]}"
        self.run("register", name)
        self.run("login", name)
        return name

    @property
    def token_file(self) -> Path:
        return self.home / "cryptofiles" / "token"


@pytest.fixture
def client(box: ServerBox, tmp_path: Path) -> Cli:
    (tmp_path / "home").mkdir()
    (tmp_path / "work").mkdir()
    return Cli(box.url, tmp_path / "home", tmp_path / "work")


def admin_env(client: Cli, box: ServerBox, **extra: str) -> dict[str, str]:
    """The operator's environment: the database URI, secrets only in the launcher's file."""
    values = {
        "MONGODB_URI": box.database_uri(),
        "CRYPTOFILES_VAR_DIR": str(box.var_dir),
        "PASSWORD_HASH": TEST_PASSWORD_HASH,
    }
    return client.env(**(values | extra))


def listed_ids(client: Cli) -> list[str]:
    return [line.split()[0] for line in client.run("ls").stdout.splitlines()]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# -- the whole journey ---------------------------------------------------------------------------


def test_register_upload_list_download_decrypt_remove_logout(client: Cli) -> None:
    name = f"u{uuid.uuid4().hex[:10]}"
    assert client.run("register", name).stdout.strip() == f"Registered {name}"
    client.run("login", name)
    assert client.run("whoami").stdout.strip() == name

    big, small = client.cwd / "big.bin", client.cwd / "résumé ü 日本.txt"
    big.write_bytes(os.urandom(3 * MiB + 12345))
    small.write_text("héllo wörld\n", encoding="utf-8")
    upload = client.run("upload", big.name, small.name)
    big_id, small_id = upload.stdout.split()
    assert upload.stderr == ""  # no progress bar: stderr is not a terminal

    ls = client.run("ls", "--page-size", "1").stdout.splitlines()  # one file per page: cursors
    assert [line.split()[0] for line in ls] == [small_id, big_id]  # newest first
    assert ls[0].endswith(small.name) and f" {big.stat().st_size} " in ls[1]
    info = json.loads(client.run("info", small_id).stdout)
    assert info["name"] == small.name and info["content_type"] == "text/plain"

    # Ciphertext, then offline decryption with the key in a file.
    out = client.cwd / "out"
    out.mkdir()
    client.cwd = out
    assert client.run("download", big_id).stdout.strip() == "big.bin.enc"
    key = client.run("key", big_id).stdout.strip()
    assert re.fullmatch(r"[A-Za-z0-9+/]{43}=", key) and len(base64.b64decode(key)) == 32
    (out / "big.key").write_text(key + "\n")
    client.run("decrypt", "big.bin.enc", "--key-file", "big.key", "-o", "offline.bin")
    assert (out / "offline.bin").read_bytes() == big.read_bytes()

    # Decrypted while downloading, under the original (non-ASCII) name by default.
    assert client.run("download", "--decrypt", small_id).stdout.strip() == small.name
    assert (out / small.name).read_bytes() == small.read_bytes()
    assert stat.S_IMODE((out / small.name).stat().st_mode) == 0o600
    client.run("download", "--decrypt", big_id, "-o", "streamed.bin")
    assert (out / "streamed.bin").read_bytes() == big.read_bytes()
    refused = client.run("download", "--decrypt", small_id, code=cli.EXIT_ERROR)
    assert "already exists (use --force" in refused.stderr
    client.run("download", "--decrypt", small_id, "--force")
    assert not [n for n in leftovers(out) if n.endswith(".part")]

    client.run("rm", big_id)
    assert listed_ids(client) == [small_id]
    client.run("download", big_id, "-o", "gone.enc", code=cli.EXIT_NOT_FOUND)

    client.run("logout")
    whoami = client.run("whoami", code=cli.EXIT_AUTH)
    assert "cryptofiles login NAME" in whoami.stderr


def test_token_file_is_private_never_printed_and_per_server(client: Cli) -> None:
    name = client.new_user()
    outputs = [client.run("login", name), client.run("whoami")]
    tokens = json.loads(client.token_file.read_text())
    assert list(tokens) == [client.url]
    token = tokens[client.url]
    for result in outputs:
        assert token not in result.stdout + result.stderr
    assert stat.S_IMODE(client.token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(client.token_file.parent.stat().st_mode) == 0o700
    # Another server has no token of its own, and using it does not disturb this one's.
    other = f"http://127.0.0.1:{free_port()}"
    result = client.run("--server", other, "whoami", code=cli.EXIT_AUTH)
    assert f"not logged in to {other}" in result.stderr
    assert client.run("whoami").stdout.strip() == name


def test_password_from_stdin_not_env(client: Cli) -> None:
    env = client.env()
    del env["CRYPTOFILES_PASSWORD"]
    name = f"u{uuid.uuid4().hex[:10]}"
    client.run("register", name, "--password-stdin", env=env, stdin="stdin-password\n")
    client.run("login", name, "--password-stdin", env=env, stdin="stdin-password\n")
    wrong = client.run(
        "login", name, "--password-stdin", env=env, stdin="nope-nope\n", code=cli.EXIT_AUTH
    )
    assert "Wrong user name or password" in wrong.stderr


def test_no_password_and_no_terminal_is_a_clear_error(client: Cli) -> None:
    env = client.env()
    del env["CRYPTOFILES_PASSWORD"]
    result = client.run("login", "someone", env=env, code=cli.EXIT_USAGE)
    assert "--password-stdin" in result.stderr


def test_revoked_token_asks_to_log_in_again(client: Cli) -> None:
    client.new_user()
    saved = client.token_file.read_bytes()
    client.run("logout")
    client.token_file.write_bytes(saved)  # the revoked token is back in the store
    result = client.run("whoami", code=cli.EXIT_AUTH)
    assert "Log in again: cryptofiles login NAME" in result.stderr


# -- errors --------------------------------------------------------------------------------------


def test_unreachable_server_is_exit_3_naming_the_url(client: Cli) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = client.run("--server", url, "register", "someone", code=cli.EXIT_UNREACHABLE)
    assert f"cannot reach the server at {url}" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_id_is_exit_5(client: Cli) -> None:
    client.new_user()
    unknown = str(uuid.uuid4())
    commands = [
        ["download", unknown],
        ["download", "--decrypt", unknown],
        ["key", unknown],
        ["info", unknown],
        ["rm", unknown],
        ["download", "../upload"],  # quoted into one path segment: never another route
    ]
    for command in commands:
        result = client.run(*command, code=cli.EXIT_NOT_FOUND)
        assert "No such file" in result.stderr or "not found" in result.stderr
    assert leftovers(client.cwd) == []


def test_over_limit_upload_is_exit_6_and_stores_nothing(client: Cli) -> None:
    client.new_user()
    (client.cwd / "huge").write_bytes(os.urandom(MAX_UPLOAD + MiB))
    result = client.run("upload", "huge", code=cli.EXIT_TOO_LARGE)
    assert "larger than the limit" in result.stderr
    assert listed_ids(client) == []


def test_wrong_key_is_exit_8_and_leaves_no_output(client: Cli) -> None:
    client.new_user()
    (client.cwd / "plain").write_bytes(os.urandom(2 * MiB))
    file_id = client.run("upload", "plain").stdout.strip()
    client.run("download", file_id, "-o", "cipher.enc")
    wrong = base64.b64encode(os.urandom(32)).decode()
    result = client.run("decrypt", "cipher.enc", "--key", wrong, "-o", "out", code=cli.EXIT_DECRYPT)
    assert "decryption failed" in result.stderr and wrong not in result.stderr
    assert leftovers(client.cwd) == ["cipher.enc", "plain"]


def test_someone_elses_file_cannot_be_decrypted(client: Cli) -> None:
    client.new_user()
    (client.cwd / "mine").write_bytes(b"owner's secret")
    file_id = client.run("upload", "mine").stdout.strip()
    client.new_user()  # now logged in as somebody else
    result = client.run("download", "--decrypt", file_id, "-o", "stolen", code=cli.EXIT_NOT_FOUND)
    assert "No such file" in result.stderr
    client.run("key", file_id, code=cli.EXIT_NOT_FOUND)
    assert leftovers(client.cwd) == ["mine"]
    client.run("download", file_id)  # the ciphertext is anyone's who knows the id, by design
    assert leftovers(client.cwd) == ["mine", "mine.enc"]


def test_events_prints_the_files_history_to_its_owner_only(client: Cli) -> None:
    owner = client.new_user()
    (client.cwd / "watched").write_bytes(b"who looked at this?")
    file_id = client.run("upload", "watched").stdout.strip()
    client.run("download", file_id, "-o", "copy.enc")
    key = client.run("key", file_id).stdout.strip()
    lines = client.run("events", file_id, "--page-size", "1").stdout.splitlines()
    assert [line.split()[2] for line in lines] == ["key", "download"]  # newest first, all pages
    assert all(f"  {owner}  127.0.0.1  " in line for line in lines)
    assert lines[0].endswith("  plain") and re.search(r"  [0-9a-f]{32}  ", lines[0])
    assert key not in "".join(lines)
    events = json.loads(client.run("events", file_id, "--json").stdout)
    assert [(e["action"], e["user"]["name"]) for e in events] == [("key", owner),
                                                                  ("download", owner)]  # fmt: skip
    client.new_user()  # somebody else: the history is not theirs to see
    result = client.run("events", file_id, code=cli.EXIT_NOT_FOUND)
    assert "No such file" in result.stderr


def test_tampered_ciphertext_leaves_no_output(client: Cli, box: ServerBox) -> None:
    client.new_user()
    (client.cwd / "data").write_bytes(os.urandom(3 * MiB))
    file_id = client.run("upload", "data").stdout.strip()
    with box.db() as db:  # flip one bit of the last segment, after two good ones were written
        chunk = db["ciphertext.chunks"].find_one({"files_id": file_id, "n": 2})
        data = bytearray(chunk["data"])
        data[100] ^= 1
        db["ciphertext.chunks"].update_one({"_id": chunk["_id"]}, {"$set": {"data": Binary(data)}})
    result = client.run("download", "--decrypt", file_id, "-o", "x", code=cli.EXIT_DECRYPT)
    assert "segment 2 failed authentication" in result.stderr
    assert leftovers(client.cwd) == ["data"]


def test_usage_errors_are_exit_2(client: Cli) -> None:
    client.run("decrypt", "f", "--key", "not base64!", code=cli.EXIT_USAGE)
    client.run("--server", "ftp://example.org", "whoami", code=cli.EXIT_USAGE)
    client.run("upload", code=cli.EXIT_USAGE)  # argparse: FILE is required


# -- transfers the real server cannot break on demand: a fake one --------------------------------


class FakeServer(http.server.ThreadingHTTPServer):
    """Logs anyone in, describes any file and gives a key for it; then cuts its download off (or
    stalls it), and hangs up on uploads."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), FakeHandler)
        self.release = threading.Event()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that go away are the point of this server


class FakeHandler(http.server.BaseHTTPRequestHandler):
    server: FakeServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/login":
            self._answer({"token": "fake", "expires_at": "2099-01-01T00:00:00"})
        elif self.path.endswith("/info"):
            self._answer({"name": "cut.bin", "size": 4 * MiB})
        elif self.path.endswith("/key"):
            self._answer({"key": base64.b64encode(os.urandom(32)).decode()})
        else:
            self._cut_off_download()

    def _cut_off_download(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(4 * MiB))
        self.end_headers()
        # A valid header byte, then exactly one segment: nothing fails to decrypt before the end.
        self.wfile.write(b"\x28" + os.urandom(MiB - 1))
        self.wfile.flush()
        if self.path.endswith("stall"):
            self.server.release.wait(30)
        self.close_connection = True  # the rest of the body never comes

    def do_POST(self) -> None:
        self.rfile.read(MiB)
        self.close_connection = True  # no answer at all

    def _answer(self, doc: dict[str, Any]) -> None:
        body = json.dumps(doc).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[Cli]:
    server = FakeServer()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    (tmp_path / "home").mkdir()
    (tmp_path / "work").mkdir()
    client = Cli(
        f"http://127.0.0.1:{server.server_address[1]}", tmp_path / "home", tmp_path / "work"
    )
    client.run("login", "someone")
    try:
        yield client
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_download_cut_off_is_exit_7_without_output(fake: Cli) -> None:
    for decrypt in ([], ["--decrypt"]):
        result = fake.run("download", "cut", *decrypt, "-o", "out", code=cli.EXIT_INTERRUPTED)
        assert "broke off after 1048576 of 4194304 bytes" in result.stderr
    assert leftovers(fake.cwd) == []


def test_upload_hung_up_on_is_exit_7(fake: Cli) -> None:
    (fake.cwd / "f").write_bytes(os.urandom(3 * MiB))
    result = fake.run("upload", "f", code=cli.EXIT_INTERRUPTED)
    assert "broke off" in result.stderr


def test_ctrl_c_is_exit_130_without_traceback_or_output(fake: Cli) -> None:
    process = subprocess.Popen(
        fake.command("download", "stall", "-o", "out"),
        cwd=fake.cwd,
        env=fake.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # A suite started in the background (`make test &`) inherits SIGINT ignored, and Python
        # keeps an ignored SIGINT ignored: give the CLI the default a terminal would.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 30
    while not any(p.stat().st_size for p in fake.cwd.glob(".cryptofiles-*.part")):
        assert process.poll() is None and time.monotonic() < deadline, "the transfer never started"
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == cli.EXIT_SIGINT
    assert b"Traceback" not in stderr and b"interrupted" in stderr
    assert leftovers(fake.cwd) == []


def test_progress_bar_on_a_terminal(client: Cli) -> None:
    client.new_user()
    (client.cwd / "two").write_bytes(os.urandom(2 * MiB))
    master, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    with subprocess.Popen(
        client.command("upload", "two"), cwd=client.cwd, env=client.env(),
        stdout=subprocess.PIPE, stderr=terminal,
    ) as process:  # fmt: skip
        os.close(terminal)
        drawn = read_terminal(master, process)
        assert process.stdout is not None
        file_id = process.stdout.read().decode().strip()
    os.close(master)
    assert process.returncode == 0
    assert "100%" in drawn and "2.00M/2.00M" in drawn
    assert file_id in listed_ids(client)


def read_terminal(master: int, process: subprocess.Popen[bytes]) -> str:
    output = b""
    while True:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: every writer has closed the terminal
                data = b""
            if not data:
                break
            output += data
        elif process.poll() is not None:
            break
    process.wait(30)
    return output.decode(errors="replace")


# -- admin ---------------------------------------------------------------------------------------


def test_admin_without_database_uri_says_what_to_set(client: Cli, box: ServerBox) -> None:
    env = client.env(CRYPTOFILES_VAR_DIR=str(box.var_dir))
    result = client.run("admin", "sweep", env=env, code=cli.EXIT_USAGE)
    assert "MONGODB_URI is not set" in result.stderr and "make run" in result.stderr


def test_admin_init_db(client: Cli, box: ServerBox) -> None:
    result = client.run("admin", "init-db", env=admin_env(client, box))
    assert "indexes ensured" in result.stdout and "unique_name" in result.stdout


def test_admin_sweep_removes_leftovers(client: Cli, box: ServerBox) -> None:
    stale, orphan = str(uuid.uuid4()), str(uuid.uuid4())
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    with box.db() as db:
        db.files.insert_one({
            "_id": stale, "owner": "nobody", "name": None, "content_type": None,
            "wrapped_key": Binary(bytes(60)), "kek_id": "local1", "created_at": long_ago,
            "size": 0, "stored_size": 0, "status": "pending", "heartbeat_at": long_ago,
        })  # fmt: skip
        for file_id in (stale, orphan):
            db["ciphertext.chunks"].insert_one({"files_id": file_id, "n": 0, "data": Binary(b"x")})
    # --secrets-file rather than CRYPTOFILES_VAR_DIR this time: both ways find the secrets.
    env = admin_env(client, box, CRYPTOFILES_VAR_DIR="/nonexistent")
    result = client.run("admin", "sweep", "--secrets-file", str(box.secrets_file), env=env)
    assert "unfinished=1 orphans=1" in result.stdout
    with box.db() as db:
        assert db.files.count_documents({"_id": stale}) == 0
        assert db["ciphertext.chunks"].count_documents({"files_id": {"$in": [stale, orphan]}}) == 0


def test_admin_sweep_repairs_a_drifted_usage_total(client: Cli, box: ServerBox) -> None:
    name = client.new_user()
    (client.cwd / "f").write_bytes(b"counted" * 100)
    client.run("upload", "f")
    with box.db() as db:
        owner = db.users.find_one({"name": name})["_id"]
        head = db.usage.find_one({"owner": owner}, sort=[("v", -1)])
        assert head["bytes"] == 700
        db.usage.update_one({"_id": head["_id"]}, {"$set": {"bytes": 5}})  # a hand edit
    result = client.run("admin", "sweep", env=admin_env(client, box))
    assert "usage_repaired=1" in result.stdout
    assert f"usage of user {owner}: 5 -> 700 bytes" in result.stdout
    with box.db() as db:
        assert db.usage.find_one({"owner": owner}, sort=[("v", -1)])["bytes"] == 700
    assert "usage_repaired=0" in client.run("admin", "sweep", env=admin_env(client, box)).stdout


def test_admin_create_user_then_login(client: Cli, box: ServerBox) -> None:
    name = f"admin{uuid.uuid4().hex[:8]}"
    result = client.run("admin", "create-user", name, env=admin_env(client, box))
    assert result.stdout.startswith(f"Created user {name}")
    client.run("admin", "create-user", name, env=admin_env(client, box), code=cli.EXIT_ERROR)
    client.run("login", name)
    assert client.run("whoami").stdout.strip() == name


def test_admin_rotate_with_ring_from_environment_edits_nothing(client: Cli, box: ServerBox) -> None:
    client.new_user()
    (client.cwd / "f").write_bytes(b"rotate me")
    client.run("upload", "f")
    ring_in_file = read_env_file(box.secrets_file)["MASTER_KEYS"]
    before = box.secrets_file.read_text()
    new_entry = KeyRing.generate_entry("envkey")
    env = admin_env(client, box, MASTER_KEYS=f"{new_entry},{ring_in_file}")
    result = client.run("admin", "rotate-master-key", env=env)
    assert "put a new entry first in MASTER_KEYS" in result.stdout
    with box.db() as db:
        total = db.files.count_documents({"wrapped_key": {"$exists": True}})
        assert db.files.count_documents({"kek_id": "envkey"}) == total
    assert f"rewrapped={total} skipped=0 failed=0" in result.stdout
    assert box.secrets_file.read_text() == before
    # Back under the file's ring, which the running server has.
    env = admin_env(client, box, MASTER_KEYS=f"{ring_in_file},{new_entry}")
    assert f"rewrapped={total} " in client.run("admin", "rotate-master-key", env=env).stdout


def test_admin_rotate_master_key_in_secrets_file(client: Cli, box: ServerBox) -> None:
    user = client.new_user()
    originals = {}
    for name, size in (("one", 2 * MiB), ("two", 10)):
        (client.cwd / name).write_bytes(os.urandom(size))
        file_id = client.run("upload", name).stdout.strip()
        originals[file_id] = (name, client.run("key", file_id).stdout.strip())
    old_ring = read_env_file(box.secrets_file)["MASTER_KEYS"]
    secret_key_line = next(
        line for line in box.secrets_file.read_text().splitlines() if line.startswith("SECRET_KEY=")
    )

    result = client.run("admin", "rotate-master-key", env=admin_env(client, box))
    added = re.search(r"Added master key (\S+) first", result.stdout)
    assert added, result.stdout
    new_id = added.group(1)
    assert "Restart the server" in result.stdout and "failed=0" in result.stdout

    # The file: two entries, the new one first, the rest of it as it was, still private.
    ring_text = read_env_file(box.secrets_file)["MASTER_KEYS"]
    entries = ring_text.split(",")
    assert len(entries) == 2 and entries[0].startswith(f"{new_id}:") and entries[1] == old_ring
    assert secret_key_line in box.secrets_file.read_text().splitlines()
    assert stat.S_IMODE(box.secrets_file.stat().st_mode) == 0o600
    # The database: every key under the new master key, and each still the same file key.
    ring = KeyRing.parse(ring_text)
    with box.db() as db:
        records = list(db.files.find({"wrapped_key": {"$exists": True}}))
    assert records and {r["kek_id"] for r in records} == {new_id}
    for record in records:
        file_key = ring.unwrap(
            new_id, bytes(record["wrapped_key"]), wrap_aad(record["_id"], record["owner"])
        )
        if record["_id"] in originals:
            assert base64.b64encode(file_key).decode() == originals[record["_id"]][1]

    rerun = client.run("admin", "rotate-master-key", env=admin_env(client, box))
    assert "rewrapped=0 skipped=0 failed=0" in rerun.stdout
    assert read_env_file(box.secrets_file)["MASTER_KEYS"] == ring_text

    # A restarted server reads the new ring and still opens the old files.
    box.restart()
    client.url = box.url
    client.run("login", user)
    for file_id, (name, key) in originals.items():
        assert client.run("key", file_id).stdout.strip() == key
        client.run("download", "--decrypt", file_id, "-o", f"{name}.back")
        assert (client.cwd / f"{name}.back").read_bytes() == (client.cwd / name).read_bytes()


# -- small pieces, in process --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://127.0.0.1:5000/", "http://127.0.0.1:5000"),
        ("HTTPS://Example.org:443/api/", "https://example.org/api"),
        ("http://[::1]:8080", "http://[::1]:8080"),
    ],
)
def test_server_url_is_canonical(text: str, expected: str) -> None:
    assert str(transport.ServerUrl.parse(text)) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [("../../.bashrc", ".bashrc"), ("a\\b\\c.txt", "c.txt"), ("..", None), ("x\ny", "x_y"),
     ("", None), (None, None), ("résumé.pdf", "résumé.pdf")],
)  # fmt: skip
def test_safe_filename_keeps_the_last_component(name: str | None, expected: str | None) -> None:
    assert output.safe_filename(name) == expected


def test_disposition_filename_prefers_the_utf8_name() -> None:
    header = "attachment; filename=\"r_sum_.txt.enc\"; filename*=UTF-8''r%C3%A9sum%C3%A9.txt.enc"
    assert output.disposition_filename(header) == "résumé.txt.enc"
    assert output.disposition_filename('attachment; filename="plain.enc"') == "plain.enc"
    assert output.disposition_filename(None) is None


def test_parse_key_accepts_base64_forms_and_rejects_others() -> None:
    key = os.urandom(32)
    for text in (
        base64.b64encode(key).decode(),
        base64.urlsafe_b64encode(key).decode().rstrip("="),
    ):
        assert parse_key(f" {text}\n") == key
    for bad in ("!!!", base64.b64encode(bytes(16)).decode()):
        with pytest.raises(cli.CliError) as caught:
            parse_key(bad)
        assert caught.value.exit_code == cli.EXIT_USAGE


def test_prepend_master_key_rewrites_only_that_line(tmp_path: Path) -> None:
    secrets_file = tmp_path / "secrets.env"
    secrets_file.write_text("SECRET_KEY=abc\nMASTER_KEYS=old:AAA=\nOTHER=1\n")
    secrets_file.chmod(0o600)
    admin.prepend_master_key(secrets_file, "new:BBB=", "old:AAA=")
    assert secrets_file.read_text() == "SECRET_KEY=abc\nMASTER_KEYS=new:BBB=,old:AAA=\nOTHER=1\n"
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    assert leftovers(tmp_path) == ["secrets.env"]
