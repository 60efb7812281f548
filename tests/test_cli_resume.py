"""`cryptofiles upload --resume` (tus), run as a subprocess against the real server, in
tests/test_cli.py's style and with its fixtures (one server for this module).

The CLI talks to the server through a small TCP relay in this file that counts the bytes going up,
can slow them down, and can cut a connection after so many bytes: so a test sees that an upload
resumed (the bytes sent again are fewer than a segment, not the whole file), not only that it ended.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cryptofiles import cli
from cryptofiles.cli import main as cli_main
from cryptofiles.cli import resumable
from tests import test_cli
from tests.test_cli import Cli, ServerBox

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
box = test_cli.box
client = test_cli.client

MiB = 1 << 20
SEGMENT = 1048560  # plaintext bytes of every segment after the first (1048520)
SIZE = 7 * MiB + 12345  # under the module server's 8 MiB limit
SLACK = 64 << 10  # request lines and headers of the requests around the PATCH


class Relay:
    """A TCP relay in front of the server: counts the bytes sent up, may pace them
    (``rate`` bytes/s), and cuts the next connection that sends more than ``cut_after`` bytes,
    once, or every one of them when ``cut_every`` is set."""

    def __init__(self, port: int) -> None:
        self.target = ("127.0.0.1", port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.sent_up = 0
        self.rate: float | None = None
        self.cut_after: int | None = None
        self.cut_every = False
        self.cuts = 0
        self.busiest = 0  # the most bytes one connection has sent up so far
        self.open = 0  # connections not yet closed
        self.outage: float | None = None  # with the next cut, refuse connections this long
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        with self.lock:
            self.sent_up = self.busiest = 0

    def close(self) -> None:
        self.listener.close()

    def _go_down(self, seconds: float) -> None:
        """Refuse connections for ``seconds`` (as a restarting server does), then relay again on
        the same port."""
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes accept() in the other thread
        self.listener.close()

        def back() -> None:
            time.sleep(seconds)
            self.listener = socket.create_server(("127.0.0.1", self.port))
            self._accept()

        threading.Thread(target=back, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                down, _ = self.listener.accept()
                try:
                    up = socket.create_connection(self.target)
                except OSError:  # the server is away (restarting): the client is cut off
                    reset(down)
                    continue
                with self.lock:
                    self.open += 1
                threading.Thread(target=self._pump_up, args=(down, up), daemon=True).start()
                threading.Thread(target=self._pump_down, args=(up, down), daemon=True).start()

    def _pump_up(self, down: socket.socket, up: socket.socket) -> None:
        sent = 0
        try:
            while data := down.recv(64 << 10):
                with self.lock:
                    limit = self.cut_after
                if limit is not None and sent + len(data) > limit:
                    up.sendall(data[: limit - sent])
                    self._count(limit - sent, limit)
                    with self.lock:
                        self.cuts += 1
                        if not self.cut_every:
                            self.cut_after = None
                        outage, self.outage = self.outage, None
                    if outage:
                        self._go_down(outage)
                    return
                up.sendall(data)
                sent += len(data)
                self._count(len(data), sent)
                if self.rate:
                    time.sleep(len(data) / self.rate)
        except OSError:
            pass
        finally:
            # The client is gone or cut off (an RST: its next read fails); the server reads what
            # reached it, then the end of the stream, as when a client's network drops a
            # connection it had closed. (An RST would make the server's kernel discard what the
            # server had not read yet: a cut that loses bytes the client did send.)
            reset(down)
            with contextlib.suppress(OSError):
                up.shutdown(socket.SHUT_WR)

    def _count(self, n: int, total: int) -> None:
        with self.lock:
            self.sent_up += n
            self.busiest = max(self.busiest, total)

    def _pump_down(self, up: socket.socket, down: socket.socket) -> None:
        try:
            while data := up.recv(64 << 10):
                down.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                down.shutdown(socket.SHUT_WR)
            up.close()
            with self.lock:  # the server has closed: it is done with the connection
                self.open -= 1


def reset(sock: socket.socket) -> None:
    """Close with an RST (linger 0), as a cut looks to the client. The shutdown first wakes
    the other pump if it is blocked in recv() on this socket: until that call returns, the
    kernel would keep the socket open whatever close() does here."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RD)
    sock.close()


@pytest.fixture
def relay(box: ServerBox) -> Iterator[Relay]:
    relay = Relay(box.server.port)
    yield relay
    relay.close()


@pytest.fixture
def user(client: Cli, relay: Relay) -> Cli:
    """A logged-in user whose CLI goes through the relay."""
    through = Cli(relay.url, client.home, client.cwd)
    through.new_user()
    return through


def big_file(user: Cli, name: str = "big.bin") -> tuple[Path, bytes]:
    data = os.urandom(SIZE)
    path = user.cwd / name
    path.write_bytes(data)
    return path, data


def state_file(user: Cli) -> Path:
    return user.home / "cryptofiles" / "uploads"


def pending(user: Cli) -> list[dict[str, object]]:
    path = state_file(user)
    return json.loads(path.read_text())["uploads"] if path.exists() else []


def token_of(user: Cli) -> str:
    return str(json.loads(user.token_file.read_text())[user.url])


def server_offset(box: ServerBox, user: Cli, file_id: str) -> int:
    response, _ = box.server.request(
        "HEAD", f"/uploads/{file_id}", None,
        {"Tus-Resumable": "1.0.0", "Authorization": f"Bearer {token_of(user)}"},
    )  # fmt: skip
    assert response.status == 200, response.status
    assert response.getheader("Upload-Length") == str(SIZE)
    return int(response.getheader("Upload-Offset"))


def wait_closed(relay: Relay) -> None:
    deadline = time.monotonic() + 30
    while relay.open and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not relay.open


def settled_offset(box: ServerBox, user: Cli, relay: Relay, file_id: str) -> int:
    """The server's offset once the cut has reached it: what the killed process had left in its
    socket has gone through the relay, and the offset stays put."""
    deadline = time.monotonic() + 30
    wait_closed(relay)
    last, offset = -1, server_offset(box, user, file_id)
    while offset != last and time.monotonic() < deadline:
        time.sleep(1)
        last, offset = offset, server_offset(box, user, file_id)
    return offset


def assert_stored(user: Cli, file_id: str, data: bytes) -> None:
    """The file is an ordinary file now: it decrypts here to the original, and is listed."""
    user.run("download", file_id, "--decrypt", "-o", "copy.bin", "--force")
    assert (user.cwd / "copy.bin").read_bytes() == data
    info = json.loads(user.run("info", file_id).stdout)
    assert (info["name"], info["size"]) == ("big.bin", SIZE)


def test_a_cut_patch_is_resumed_in_the_same_run(user: Cli, relay: Relay) -> None:
    path, data = big_file(user)
    relay.reset()
    relay.cut_after = 3 * MiB + 100_000  # the PATCH's connection, inside the fourth segment
    result = user.run("upload", "--resume", path.name)
    file_id = result.stdout.strip()
    assert relay.cuts == 1
    assert "retrying" in result.stderr, result.stderr
    # Resumed from the server's offset: what went up twice is the cut segment (two, if the server
    # had not stored the third yet), not the 3 MiB before it.
    assert relay.sent_up < SIZE + 2 * SEGMENT + SLACK, relay.sent_up
    assert pending(user) == []  # the entry is gone once the upload is complete
    assert_stored(user, file_id, data)


def test_a_server_away_for_a_moment_is_waited_for(user: Cli, relay: Relay) -> None:
    """As during a restart: the PATCH is cut and connections are refused for a while; the CLI
    retries until the server answers again, and goes on from the offset it stored."""
    path, data = big_file(user)
    relay.reset()
    relay.cut_after, relay.outage = 3 * MiB + 100_000, 2.0
    result = user.run("upload", "--resume", path.name)
    assert "cannot reach the server" in result.stderr, result.stderr
    assert relay.sent_up < SIZE + 2 * SEGMENT + SLACK, relay.sent_up
    assert pending(user) == []
    assert_stored(user, result.stdout.strip(), data)


def test_a_server_restart_mid_upload_is_waited_for(user: Cli, relay: Relay, box: ServerBox) -> None:
    """The server stops while a PATCH runs (cut) and comes back on the same database a while
    later: the running command retries until it answers and finishes from the stored offset."""
    path, data = big_file(user)
    relay.rate = 2 * MiB
    process = subprocess.Popen(
        user.command("upload", "--resume", path.name), cwd=user.cwd, env=user.env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while relay.busiest < 3 * MiB:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, relay.busiest
            time.sleep(0.05)
        relay.rate, relay.cut_after = None, 0
        box.restart()  # a new port: the relay follows it, as a proxy in front would
        relay.target = ("127.0.0.1", box.server.port)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr
    assert "retrying" in stderr, stderr
    assert relay.sent_up < SIZE + 2 * SEGMENT + SLACK, relay.sent_up
    assert pending(user) == []
    assert_stored(user, stdout.strip(), data)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "Ctrl-C"])
def test_an_interrupted_upload_resumes_on_the_next_run(
    user: Cli, relay: Relay, box: ServerBox, sig: signal.Signals
) -> None:
    path, data = big_file(user)
    relay.rate = 2 * MiB  # slow enough to stop it midway
    process = subprocess.Popen(
        user.command("upload", "--resume", path.name), cwd=user.cwd, env=user.env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while relay.busiest < 4 * MiB:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, relay.busiest
            time.sleep(0.05)
        process.send_signal(sig)
        # The network goes with it: what a killed process leaves in its socket buffers (a few
        # MiB on loopback) would otherwise still arrive, and could finish a file this small.
        relay.cut_after = 0
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    if sig == signal.SIGINT:
        assert process.returncode == cli.EXIT_SIGINT
        assert "--resume" in stderr, stderr

    [entry] = pending(user)
    assert stat.S_IMODE(state_file(user).stat().st_mode) == 0o600
    assert token_of(user) not in state_file(user).read_text()
    assert (entry["path"], entry["size"]) == (str(path.resolve()), SIZE)
    file_id = str(entry["url"]).rsplit("/", 1)[1]
    offset = settled_offset(box, user, relay, file_id)
    assert 0 < offset < SIZE

    relay.rate = relay.cut_after = None
    relay.reset()
    result = user.run("upload", "--resume", path.name)
    assert result.stdout.strip() == file_id  # the upload's id is the file's id
    assert f"resuming big.bin at byte {offset} of {SIZE}" in result.stderr
    assert relay.sent_up < SIZE - offset + SLACK, (relay.sent_up, offset)
    assert pending(user) == []
    assert_stored(user, file_id, data)


Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def in_process(
    user: Cli, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Run:
    """``main()`` in this process as ``user`` (so that the waits between retries can be short):
    (exit status, stdout, stderr)."""
    monkeypatch.setattr(resumable, "RETRY_DELAYS", (0.01, 0.01))
    for name, value in user.env().items():
        if name.startswith(("CRYPTOFILES_", "XDG_")):
            monkeypatch.setenv(name, value)
    monkeypatch.chdir(user.cwd)

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = cli_main.main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def failed_upload(user: Cli, relay: Relay, in_process: Run, path: Path) -> dict[str, object]:
    """Upload ``path`` through a relay that cuts every PATCH inside the first segment: the
    command gives up, and the upload stays recorded for a re-run."""
    relay.cut_after, relay.cut_every = 500_000, True
    code, out, err = in_process("upload", "--resume", path.name)
    assert (code, out) == (cli.EXIT_INTERRUPTED, "")
    relay.cut_after = None
    wait_closed(relay)
    [entry] = pending(user)
    return {**entry, "stderr": err}


def test_giving_up_says_to_resume_and_the_next_run_does(
    user: Cli, relay: Relay, in_process: Run
) -> None:
    path, data = big_file(user)
    entry = failed_upload(user, relay, in_process, path)
    err = str(entry["stderr"])
    assert "2 retries failed" in err and "run the same command again with --resume" in err, err
    assert 1 <= relay.cuts <= 3  # the first PATCH and two retries (or the server's 409s)

    result = user.run("upload", "--resume", path.name)
    file_id = result.stdout.strip()
    assert str(entry["url"]).endswith("/uploads/" + file_id)
    assert "resuming big.bin at byte 0 of" in result.stderr
    assert pending(user) == []
    assert_stored(user, file_id, data)


def test_an_upload_the_server_forgot_starts_again(
    user: Cli, relay: Relay, box: ServerBox, in_process: Run
) -> None:
    path, data = big_file(user)
    old_id = str(failed_upload(user, relay, in_process, path)["url"]).rsplit("/", 1)[1]
    response, _ = box.server.request(
        "DELETE", f"/uploads/{old_id}", None,
        {"Tus-Resumable": "1.0.0", "Authorization": f"Bearer {token_of(user)}"},
    )  # fmt: skip
    assert response.status == 204

    result = user.run("upload", "--resume", path.name)
    assert "is gone (expired or removed); starting again" in result.stderr
    file_id = result.stdout.strip()
    assert file_id != old_id
    assert pending(user) == []
    assert_stored(user, file_id, data)


def test_a_changed_file_is_not_resumed_onto_its_old_bytes(
    user: Cli, relay: Relay, in_process: Run
) -> None:
    path, _ = big_file(user)
    old = failed_upload(user, relay, in_process, path)
    data = os.urandom(SIZE)
    path.write_bytes(data)  # same size, new content and a later time
    os.utime(path, ns=(time.time_ns(), int(str(old["mtime_ns"])) + 10**9))
    result = user.run("upload", "--resume", path.name)
    assert "resuming" not in result.stderr
    assert_stored(user, result.stdout.strip(), data)
    assert [e["url"] for e in pending(user)] == [old["url"]]  # the other file's, left to expire
