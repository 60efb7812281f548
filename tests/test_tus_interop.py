"""Resumable uploads with tus clients we did not write, end to end against the real server.

tuspy (PyPI) and tus-js-client (npm, under Node; installed into tests/js/tus by ``make test``'s
set-up) upload through ``CuttingProxy`` (tests/support/cutting_proxy.py), which logs every request
and kills chosen PATCH requests mid-body. Each stored file is fetched as ciphertext with its key
and decrypted by ``scripts/decrypt_file.py`` and by Tink, and must equal what was sent.

What the server promises clients (``cryptofiles/uploads.py``): offsets move by whole segments of
the file format, so every offset a client is told is 0, the end of segment 0 (1048520 plaintext
bytes), the end of a later segment (1048560 more each) or the upload's length; after a cut the
server keeps every complete segment it received and the client resumes from there, never from
zero.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import hashlib
import http.client
import io
import json
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import pytest
from tusclient.client import TusClient
from tusclient.exceptions import TusUploadFailed
from tusclient.storage.filestorage import FileStorage
from tusclient.uploader import Uploader

from cryptofiles.dev import browser
from cryptofiles.dev.tink_oracle import tink_streaming_aead
from tests.support.cutting_proxy import CuttingProxy, Request
from tests.support.server import ROOT, Server, new_token

pytestmark = pytest.mark.e2e

MiB = 1 << 20
# Written out rather than taken from cryptofiles.crypto: the layout of Tink's AES256_GCM_HKDF_1MB,
# which a client's view of the offsets is checked against independently of the server's code.
FIRST_SEGMENT = 1048520  # plaintext bytes in segment 0 (the header takes the rest of 1 MiB)
SEGMENT = 1048560  # plaintext bytes in every later segment
TUS = {"Tus-Resumable": "1.0.0"}
JS_FOLDER = ROOT / "tests" / "js" / "tus"
FILETYPE = "application/x-interop"  # what both clients send as the filetype metadata


class Sha256Uploader(Uploader):
    """tuspy sends sha1 checksums (which the server takes too); these tests use sha256."""

    CHECKSUM_ALGORITHM_PAIR = ("sha256", hashlib.sha256)


def boundary_at_or_below(reached: int, length: int) -> int:
    """The offset a server that keeps only whole segments reports once it got ``reached`` bytes."""
    if reached >= length:
        return length
    if reached < FIRST_SEGMENT:
        return 0
    return FIRST_SEGMENT + (reached - FIRST_SEGMENT) // SEGMENT * SEGMENT


def is_offset(offset: int, length: int) -> bool:
    return boundary_at_or_below(offset, length) == offset


# --- fixtures and the fetch-and-decrypt steps shared by both clients ------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("tus-interop"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def token(server: Server) -> str:
    return new_token(server, "tus-interop")


@pytest.fixture
def proxy(server: Server) -> Iterator[CuttingProxy]:
    with CuttingProxy(server.port) as proxy:
        yield proxy
    assert not proxy.errors


def write_data(path: Path, size: int, seed: int) -> str:
    """A file of ``size`` bytes from a seeded generator, written a block at a time; its sha256."""
    generator, digest = random.Random(seed), hashlib.sha256()
    with open(path, "wb") as f:
        for start in range(0, size, MiB):
            block = generator.randbytes(min(MiB, size - start))
            digest.update(block)
            f.write(block)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(MiB):
            digest.update(block)
    return digest.hexdigest()


def call(server: Server, method: str, path: str, token: str, **headers: str) -> Any:
    return server.request(method, path, None, {"x-access-tokens": token, **headers})


def download(server: Server, token: str, file_id: str, dest: Path) -> None:
    """The ciphertext into ``dest``, streamed (the big upload does not fit a test's memory well)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    try:
        conn.request("GET", f"/files/{file_id}", headers={"x-access-tokens": token})
        response = conn.getresponse()
        assert response.status == 200, response.read()
        with open(dest, "wb") as f:
            shutil.copyfileobj(response, f, MiB)
    finally:
        conn.close()


def check_stored(
    server: Server, token: str, file_id: str, expected_sha256: str, folder: Path, *, tink: bool
) -> None:
    """The stored file decrypts to the original with our script and (if ``tink``) with Tink."""
    response, key_text = call(server, "GET", f"/files/{file_id}/key", token)
    assert response.status == 200, key_text
    key_file, encrypted, plain = folder / "key", folder / "file.enc", folder / "file.out"
    key_file.write_bytes(key_text)
    download(server, token, file_id, encrypted)
    subprocess.run(
        [sys.executable, ROOT / "scripts" / "decrypt_file.py", encrypted,
         "--key-file", key_file, "-o", plain],
        check=True, timeout=600,
    )  # fmt: skip
    assert sha256_of(plain) == expected_sha256
    plain.unlink()
    if tink:
        aead = tink_streaming_aead(base64.b64decode(key_text))
        digest = hashlib.sha256()
        with open(encrypted, "rb") as f, aead.new_decrypting_stream(f, b"") as stream:
            while block := stream.read(MiB):
                digest.update(block)
        assert digest.hexdigest() == expected_sha256
    encrypted.unlink()


def check_finished(server: Server, token: str, file_id: str, size: int, name: str) -> None:
    """The finished upload answers HEAD as complete and is an ordinary file with its metadata."""
    response, _ = call(server, "HEAD", f"/uploads/{file_id}", token, **TUS)
    assert response.status == 200
    assert response.getheader("Upload-Offset") == response.getheader("Upload-Length") == str(size)
    response, body = call(server, "GET", f"/files/{file_id}/info", token)
    assert response.status == 200, body
    info = json.loads(body)
    assert (info["name"], info["content_type"], info["size"]) == (name, FILETYPE, size)


def file_id_of(upload_url: str, proxy: CuttingProxy) -> str:
    """The upload URL goes through the proxy, under /uploads/; its last part is the file id."""
    assert upload_url.startswith(f"{proxy.base}/uploads/"), upload_url
    return urlsplit(upload_url).path.rsplit("/", 1)[-1]


def resumed_after(cut: Request, proxy: CuttingProxy) -> Request:
    """The first PATCH the client sent after ``cut``."""
    later = proxy.requests[proxy.requests.index(cut) + 1 :]
    return next(r for r in later if r.method == "PATCH")


# --- tuspy ----------------------------------------------------------------------------------------


class KeptOpen(io.BufferedReader):
    """A file tuspy cannot close: with store_url it closes the stream it fingerprints."""

    def __init__(self, path: Path) -> None:
        super().__init__(io.FileIO(path, "rb"))

    def close(self) -> None:
        pass

    def release(self) -> None:
        super().close()


def tuspy_uploader(
    proxy: CuttingProxy, token: str, stream: IO[bytes], name: str, **options: Any
) -> Uploader:
    client = TusClient(f"{proxy.base}/uploads/", headers={"x-access-tokens": token})
    # A stream of our own rather than file_path: tuspy opens a file per request and never closes it.
    uploader_class = Sha256Uploader if options.get("upload_checksum") else Uploader
    return uploader_class(
        file_stream=stream,
        client=client,
        metadata={"filename": name, "filetype": FILETYPE},
        **options,
    )


def tuspy_upload(
    proxy: CuttingProxy, token: str, stream: IO[bytes], name: str, **options: Any
) -> Uploader:
    uploader = tuspy_uploader(proxy, token, stream, name, **options)
    uploader.upload()
    return uploader


@pytest.mark.parametrize(
    ("size", "checksum"),
    [
        (1, False),
        (FIRST_SEGMENT - 1, True),
        (FIRST_SEGMENT, False),
        (FIRST_SEGMENT + 1, True),
        (FIRST_SEGMENT + 2 * SEGMENT + 17, True),  # several PATCHes, each accepted in part
    ],
)
def test_tuspy_uploads_each_size_class(
    server: Server, token: str, proxy: CuttingProxy, tmp_path: Path, size: int, checksum: bool
) -> None:
    expected = write_data(tmp_path / "data", size, seed=size)
    name = f"tuspy-{size}.bin"
    with open(tmp_path / "data", "rb") as stream:
        uploader = tuspy_upload(
            proxy, token, stream, name, chunk_size=MiB, upload_checksum=checksum
        )
    file_id = file_id_of(uploader.url, proxy)

    # tuspy sends 1 MiB from each offset it is told; the server keeps whole segments of each.
    offsets, offset = [], 0
    while offset < size:
        offsets.append(offset)
        offset = boundary_at_or_below(offset + min(MiB, size - offset), size)
    assert [r.upload_offset for r in proxy.patches()] == offsets
    assert [r.method for r in proxy.requests if r.method != "PATCH"] == ["POST"]

    check_finished(server, token, file_id, size, name)
    check_stored(server, token, file_id, expected, tmp_path, tink=True)


def test_tuspy_default_sha1_checksum_works_or_is_refused_as_advertised(
    server: Server, token: str, proxy: CuttingProxy, tmp_path: Path
) -> None:
    """tuspy's own checksum algorithm is sha1, which tus 1.0 requires a server with the checksum
    extension to support. A server that advertises it must take tuspy's checksummed upload; one
    that does not must refuse it with 400 and keep nothing."""
    response, _ = server.request("OPTIONS", "/uploads/")
    algorithms = response.getheader("Tus-Checksum-Algorithm", "").replace(" ", "").split(",")
    expected = write_data(tmp_path / "data", FIRST_SEGMENT + 1, seed=1)
    client = TusClient(f"{proxy.base}/uploads/", headers={"x-access-tokens": token})
    with open(tmp_path / "data", "rb") as stream:
        uploader = Uploader(file_stream=stream, client=client, upload_checksum=True)
        if "sha1" in algorithms:
            uploader.upload()
        else:
            with pytest.raises(TusUploadFailed) as failed:
                uploader.upload()
            assert failed.value.status_code == 400
    path = urlsplit(uploader.url).path
    response, _ = call(server, "HEAD", path, token, **TUS)
    assert response.status == 200
    if "sha1" in algorithms:
        check_stored(server, token, file_id_of(uploader.url, proxy), expected, tmp_path, tink=False)
    else:
        assert response.getheader("Upload-Offset") == "0"


def test_tuspy_async_uploader_resumes_after_a_reset(
    server: Server, token: str, tmp_path: Path
) -> None:
    """tuspy's other uploader (aiohttp); the cut resets both ends in the second PATCH."""
    size = FIRST_SEGMENT + 2 * SEGMENT + 17
    expected = write_data(tmp_path / "data", size, seed=7)
    with (
        CuttingProxy(server.port, [MiB + 600_000], how="reset") as proxy,
        open(tmp_path / "data", "rb") as stream,
    ):
        client = TusClient(f"{proxy.base}/uploads/", headers={"x-access-tokens": token})
        uploader = client.async_uploader(
            file_stream=stream, chunk_size=MiB, retries=3, retry_delay=1,
            metadata={"filename": "async.bin", "filetype": FILETYPE},
        )  # fmt: skip
        # In a thread of its own: the browser tests' Playwright keeps an event loop running in
        # this one when the suite runs whole.
        with concurrent.futures.ThreadPoolExecutor(1) as thread:
            thread.submit(asyncio.run, uploader.upload()).result()
    assert not proxy.errors
    file_id = file_id_of(uploader.url, proxy)
    (cut,) = proxy.cuts
    assert cut.upload_offset == FIRST_SEGMENT
    resumed = resumed_after(cut, proxy).upload_offset
    assert resumed is not None and is_offset(resumed, size)
    assert FIRST_SEGMENT <= resumed <= boundary_at_or_below(cut.reached, size)

    check_finished(server, token, file_id, size, "async.bin")
    check_stored(server, token, file_id, expected, tmp_path, tink=True)


def test_tuspy_checksummed_patch_cut_resumes_from_its_start(
    server: Server, token: str, tmp_path: Path
) -> None:
    """A PATCH with Upload-Checksum keeps nothing unless its whole body matched: cut, it counts for
    nothing and the client sends it again from its start; the segments the cut request stored
    unrecorded are met again with the same bytes, so the upload completes."""
    size = FIRST_SEGMENT + 4 * SEGMENT + 99
    expected = write_data(tmp_path / "data", size, seed=11)
    with (
        CuttingProxy(server.port, [3 * MiB + 5000], how="settle") as proxy,
        open(tmp_path / "data", "rb") as stream,
    ):
        uploader = tuspy_upload(
            proxy, token, stream, "sums.bin",
            chunk_size=2 * MiB, upload_checksum=True, retries=3, retry_delay=1,
        )  # fmt: skip
    assert not proxy.errors
    (cut,) = proxy.cuts
    assert cut.settled and cut.upload_offset is not None
    assert cut.reached > boundary_at_or_below(cut.reached, size) > cut.upload_offset
    assert resumed_after(cut, proxy).upload_offset == cut.upload_offset

    file_id = file_id_of(uploader.url, proxy)
    check_finished(server, token, file_id, size, "sums.bin")
    check_stored(server, token, file_id, expected, tmp_path, tink=False)


@pytest.mark.slow  # two server starts
def test_tuspy_resumes_from_its_url_storage_after_both_ends_restart(tmp_path: Path) -> None:
    """tuspy's own resumption: it keeps the upload URL under the file's fingerprint, and a new
    client finds it and resumes from the offset HEAD gives, here from a server restarted in
    between (same data, another process and port behind the same proxy)."""
    size = FIRST_SEGMENT + 3 * SEGMENT + 5
    expected = write_data(tmp_path / "data", size, seed=13)
    urls, stream = FileStorage(str(tmp_path / "urls.json")), KeptOpen(tmp_path / "data")
    server = Server(tmp_path / "var")
    try:
        token = new_token(server, "tus-restart")
        with CuttingProxy(server.port) as proxy:
            options = {"chunk_size": MiB, "store_url": True, "url_storage": urls}
            first = tuspy_uploader(proxy, token, stream, "restart.bin", **options)
            first.upload(stop_at=FIRST_SEGMENT + SEGMENT)  # two PATCHes, whole segments
            server.stop()
            server = Server(tmp_path / "var")
            proxy.target_port = server.port
            second = tuspy_uploader(proxy, token, stream, "restart.bin", **options)
            assert (second.url, second.offset) == (first.url, FIRST_SEGMENT + SEGMENT)
            second.upload()
        assert not proxy.errors
        assert [r.method for r in proxy.requests].count("POST") == 1
        offsets = [r.upload_offset for r in proxy.patches()]
        assert offsets == [0, FIRST_SEGMENT, FIRST_SEGMENT + SEGMENT, FIRST_SEGMENT + 2 * SEGMENT]

        file_id = file_id_of(second.url, proxy)
        check_finished(server, token, file_id, size, "restart.bin")
        check_stored(server, token, file_id, expected, tmp_path, tink=True)
    finally:
        stream.release()
        urls.close()
        server.stop()


@pytest.mark.slow
def test_tuspy_300_mib_cut_three_times_resumes_where_the_server_stopped(
    server: Server, token: str, tmp_path: Path
) -> None:
    size = 300 * MiB + 4321
    expected = write_data(tmp_path / "data", size, seed=300)
    # Cut the PATCH under way once 70, 140 and 210 MiB (and a bit) of PATCH bodies went through;
    # with settle the server has finished with a cut request before the client comes back.
    cut_points = [70 * MiB + 12345, 140 * MiB + 543210, 210 * MiB + 777]
    with (
        CuttingProxy(server.port, cut_points, how="settle") as proxy,
        open(tmp_path / "data", "rb") as stream,
    ):
        uploader = tuspy_upload(
            proxy, token, stream, "big.bin", chunk_size=16 * MiB, retries=3, retry_delay=1
        )
    assert not proxy.errors
    file_id = file_id_of(uploader.url, proxy)

    assert len(proxy.cuts) == len(cut_points)
    for cut in proxy.cuts:
        assert cut.settled, f"the server kept the cut connection open: {cut}"
        resumed = resumed_after(cut, proxy).upload_offset
        assert resumed is not None and cut.upload_offset is not None
        # Every complete segment the server received was kept, and nothing beyond it.
        assert resumed == boundary_at_or_below(cut.reached, size), (cut, resumed)
        assert cut.upload_offset <= resumed < cut.reached
    assert all(is_offset(r.upload_offset or 0, size) for r in proxy.patches())
    # One upload, never restarted: each cut cost less than a segment sent again.
    assert [r.method for r in proxy.requests].count("POST") == 1
    assert size <= proxy.patch_bytes < size + len(cut_points) * SEGMENT

    check_finished(server, token, file_id, size, "big.bin")
    check_stored(server, token, file_id, expected, tmp_path, tink=True)


# --- tus-js-client under Node ---------------------------------------------------------------------


def run_node(
    proxy: CuttingProxy, token: str, path: Path, chunk_size: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    if node is None or not (JS_FOLDER / "node_modules" / "tus-js-client").is_dir():
        pytest.fail(
            "tus-js-client is not installed: `make test` installs it "
            "(python -m cryptofiles.dev.browser ensure runs npm ci in tests/js/tus)"
        )
    result = subprocess.run(
        [node, JS_FOLDER / "upload.mjs", f"{proxy.base}/uploads/", path, chunk_size, *extra],
        env={**os.environ, "CRYPTOFILES_TOKEN": token},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert token not in result.stdout + result.stderr
    return result


def node_upload(
    proxy: CuttingProxy, token: str, path: Path, chunk_size: str, *extra: str
) -> dict[str, Any]:
    result = run_node(proxy, token, path, chunk_size, *extra)
    assert result.returncode == 0, result.stderr
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


# One size class (5 MiB + 17 bytes), one cut each: in the middle of a PATCH, once ``cut`` bytes of
# PATCH bodies went through.
@pytest.mark.parametrize(
    ("chunk_size", "cut_at", "how", "extra"),
    [
        # 2 MiB PATCHes, each accepted in part; the cut resets both ends in the second one.
        ("2097152", 3 * MiB + 4321, "reset", ()),
        # One PATCH for the whole rest; the server is done with it before the client retries.
        ("Infinity", 3 * MiB + 4321, "settle", ()),
        # The first 2 MiB in the creation request (creation-with-upload), the cut in the next.
        ("2097152", MiB + 300_000, "settle", ("--with-upload",)),
    ],
    ids=["2MiB-chunks-reset", "whole-rest-settled", "creation-with-upload-settled"],
)
def test_tus_js_client_resumes_after_a_cut(
    server: Server,
    token: str,
    tmp_path: Path,
    chunk_size: str,
    cut_at: int,
    how: str,
    extra: tuple[str],
) -> None:
    size = 5 * MiB + 17
    path = tmp_path / f"js-{chunk_size}.bin"
    expected = write_data(path, size, seed=5)
    with CuttingProxy(server.port, [cut_at], how=how) as proxy:
        answer = node_upload(proxy, token, path, chunk_size, *extra)
    assert not proxy.errors
    file_id = file_id_of(answer["url"], proxy)

    (cut,) = proxy.cuts
    assert cut.upload_offset is not None
    resumed = resumed_after(cut, proxy).upload_offset
    assert resumed is not None and is_offset(resumed, size)
    assert cut.upload_offset <= resumed <= boundary_at_or_below(cut.reached, size)
    if how == "settle":
        assert resumed == boundary_at_or_below(cut.reached, size)
    assert [r.method for r in proxy.requests].count("POST") == 1
    if extra:
        (creation,) = (r for r in proxy.requests if r.method == "POST")
        assert creation.body_forwarded == 2 * MiB
        assert answer["answers"][0] == {
            "method": "POST",
            "status": 201,
            "offset": boundary_at_or_below(2 * MiB, size),
        }
    # Every offset the client was told is a segment boundary, and the last one is the end.
    told = [a for a in answer["answers"] if a["offset"] is not None]
    assert all(is_offset(a["offset"], size) for a in told), told
    assert answer["answers"][-1] == {"method": "PATCH", "status": 204, "offset": size}

    check_finished(server, token, file_id, size, path.name)
    check_stored(server, token, file_id, expected, tmp_path, tink=True)


def test_npm_set_up_is_quick_and_needs_no_npm_once_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """make test runs the set-up every time: with node_modules matching the lock file it runs
    nothing (no npm on PATH needed); a changed lock file means npm ci again."""
    browser.ensure_npm(JS_FOLDER)  # installs if needed, so the folder is now current
    monkeypatch.setenv("PATH", "")
    browser.ensure_npm(JS_FOLDER)
    stale = tmp_path / "stale"
    (stale / "node_modules").mkdir(parents=True)
    (stale / "package-lock.json").write_text("{}")
    (stale / "node_modules" / browser.NPM_STAMP).write_text("an older lock file's hash\n")
    with pytest.raises(browser.MissingTool, match="npm"):
        browser.ensure_npm(stale)


def test_tus_js_client_parallel_uploads_are_refused_and_store_nothing(
    server: Server, proxy: CuttingProxy, tmp_path: Path
) -> None:
    """parallelUploads needs the concatenation extension, which the server does not advertise;
    tus-js-client does not check Tus-Extension. The server must refuse a partial upload at its
    creation (400, like Upload-Defer-Length) rather than store each part as a file of its own
    and then refuse the final concatenation, leaving the parts behind in the user's quota."""
    token = new_token(server, "tus-parallel")
    write_data(tmp_path / "parts.bin", 3 * MiB + 5, seed=4)
    result = run_node(proxy, token, tmp_path / "parts.bin", "Infinity", "--parallel-uploads")
    assert result.returncode == 1 and "response code: 400" in result.stderr, result.stderr
    response, body = call(server, "GET", "/files", token, Accept="application/json")
    assert response.status == 200 and json.loads(body)["files"] == []
    assert proxy.patches() == []


# --- a network drop neither end hears of ----------------------------------------------------------


def test_tus_js_client_outlasts_a_silent_drop_with_its_own_retry_schedule(
    server: Server, tmp_path: Path
) -> None:
    """The client's connection dies mid-PATCH, the server's stays open and silent (its idle limit,
    30 s, is far off). That request holds the upload until no byte came for 8 s; meanwhile the
    client's retries get 409, then one takes the upload over and resumes. tus-js-client's default
    schedule (retries after 0, 1, 3 and 5 s) gets through."""
    size = 5 * MiB + 17
    token = new_token(server, "tus-idle")
    path = tmp_path / "idle.bin"
    expected = write_data(path, size, seed=9)
    with CuttingProxy(server.port, [3 * MiB + 4321], how="stall") as proxy:
        answer = node_upload(proxy, token, path, "2097152", "--default-retries")
    assert not proxy.errors
    (cut,) = proxy.cuts
    assert cut.upload_offset is not None
    later = proxy.patches()[proxy.patches().index(cut) + 1 :]
    assert all(cut.upload_offset <= (r.upload_offset or 0) for r in later)  # never from zero
    # The stalled request held the upload for a while: the client was told so, and waited.
    assert {"method": "PATCH", "status": 409, "offset": None} in answer["answers"]
    assert answer["answers"][-1] == {"method": "PATCH", "status": 204, "offset": size}

    file_id = file_id_of(answer["url"], proxy)
    check_finished(server, token, file_id, size, path.name)
    check_stored(server, token, file_id, expected, tmp_path, tink=True)
