"""The page's uploads over tus, when the connection or the page does not last.

A connection cut mid-upload (tests/support/cutting_proxy.py resets it mid-body): the page asks
the server how much it kept and sends the rest, and the file decrypts to the original. A page reloaded
mid-upload: picking the same file again goes on from the server's offset, and says so. The upload
tests that need no cut (progress, cancel, logout, the 200 MiB file) are in test_page.py.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, Request

from cryptofiles.crypto import layout
from tests.browser.conftest import Watched, register, token_of
from tests.browser.test_page import (
    MiB,
    api,
    download,
    expect_state,
    sha256_of,
    slow_uplink,
    transfer,
    write_file,
)
from tests.support.cutting_proxy import CuttingProxy
from tests.support.server import Server

OpenPage = Callable[..., Watched]
TUS = {"Tus-Resumable": "1.0.0"}


def segment_end(offset: int) -> bool:
    """Whether ``offset`` is where a segment of the stored format ends (what the server reports)."""
    return offset >= layout.FIRST_PLAIN and (offset - layout.FIRST_PLAIN) % layout.PLAIN == 0


def tus_requests(page: Page) -> list[tuple[str, int | None]]:
    """From now on, each request the page sends under /uploads/: (method, its Upload-Offset)."""
    seen: list[tuple[str, int | None]] = []

    def record(request: Request) -> None:
        if "/uploads/" in request.url:
            offset = request.headers.get("upload-offset")
            seen.append((request.method, int(offset) if offset is not None else None))

    page.on("request", record)
    return seen


def server_offset(server: Server, token: str, upload_id: str) -> int:
    """The server's offset once it has settled (the cut request may still be storing a segment)."""
    headers = {**TUS, "x-access-tokens": token}
    last = -1
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        response, _ = server.request("HEAD", f"/uploads/{upload_id}", None, headers)
        assert response.status == 200, response.status
        offset = int(response.getheader("Upload-Offset"))
        if offset == last:
            return offset
        last = offset
        time.sleep(0.5)
    raise AssertionError("the server's offset kept moving")


def stored_file(server: Server, token: str) -> dict[str, Any]:
    files = json.loads(api(server, "GET", "/files", token)[1])["files"]
    assert len(files) == 1, files  # the resumed upload is one file, not a second one
    return dict(files[0])


def remembered_uploads(page: Page) -> list[str]:
    return list(
        page.evaluate(
            """() => Object.entries(localStorage)
                 .filter(([key]) => key.startsWith("cryptofiles.upload:"))
                 .map(([, value]) => JSON.parse(value).id)"""
        )
    )


@pytest.mark.slow
def test_an_upload_cut_mid_way_goes_on_and_decrypts_whole(
    open_page: OpenPage, server: Server, tmp_path: Path
) -> None:
    path = write_file(tmp_path / "cut.bin", 24 * MiB + 123)
    # Both ends reset mid-body, ten segments in: the server may still be storing the cut request
    # when the page comes back, which then meets a 409 and tries again.
    with CuttingProxy(server.port, [10 * MiB], how="reset") as proxy:
        page = open_page(base=proxy.base).page
        register(page, "cutter1")
        token = token_of(page)
        page.set_input_files("#file-input", str(path))
        expect_state(page, "uploads", "cut.bin", "done", timeout=120)
        assert proxy.errors == []

        # One upload, cut once in its first PATCH; then a HEAD, and the rest from the end of a
        # segment the server kept, well past the start and no further than the bytes it got.
        # (Chromium itself may first send the cut request again on a new connection, as it does
        # when a reused connection fails: the server refuses it, 409, and the page sees that.)
        [cut] = proxy.cuts
        requests = [r for r in proxy.requests if "/uploads/" in r.path]
        assert [r.method for r in requests].count("POST") == 1
        assert cut.method == "PATCH" and cut.upload_offset == 0
        after = requests[requests.index(cut) + 1 :]
        methods = [r.method for r in after]
        assert "HEAD" in methods, requests
        resent = after[: methods.index("HEAD")]
        assert all(r.method == "PATCH" and r.upload_offset == 0 for r in resent), requests
        last = after[-1]
        assert last.method == "PATCH" and last.upload_offset is not None, requests
        assert 4 * MiB <= last.upload_offset <= cut.reached and segment_end(last.upload_offset)
        assert last.reached == path.stat().st_size

        stored = stored_file(server, token)
        assert stored["size"] == path.stat().st_size
        detail = transfer(page, "uploads", "cut.bin").locator(".detail").text_content()
        assert detail == f"Stored as {stored['id']}"
        assert remembered_uploads(page) == []
        saved = download(page, "cut.bin")
        assert saved.failure() is None
        assert sha256_of(saved.path()) == sha256_of(path)


@pytest.mark.slow
def test_a_reloaded_page_resumes_the_same_file_from_the_servers_offset(
    open_page: OpenPage, server: Server, tmp_path: Path
) -> None:
    size = 16 * MiB + 5
    path = write_file(tmp_path / "reloaded.bin", size)
    page = open_page().page
    register(page, "reloader1")
    token = token_of(page)
    slow_uplink(page)
    page.set_input_files("#file-input", str(path))
    page.wait_for_function(
        "() => window.__progress.some(([name, value]) => name === 'reloaded.bin' && value > 0.4)"
    )
    [upload_id] = remembered_uploads(page)
    page.reload()
    page.wait_for_selector("#workspace:not([hidden])")
    offset = server_offset(server, token, upload_id)
    assert 0 < offset < size and segment_end(offset), offset

    # The same file, picked again: the page finds the upload and sends only the rest.
    requests = tus_requests(page)
    slow_uplink(page)
    page.set_input_files("#file-input", str(path))
    detail = page.locator("#uploads li .detail").first
    page.wait_for_function(
        """() => /esum(ing|ed) at \\d+ %/.test(
             document.querySelector("#uploads li .detail")?.textContent ?? "")"""
    )
    shown = re.search(r"esum(?:ing|ed) at (\d+) %", str(detail.text_content()))
    assert shown and int(shown.group(1)) == offset * 100 // size
    expect_state(page, "uploads", "reloaded.bin", "done", timeout=120)
    assert requests[0] == ("HEAD", None), requests
    assert next(r for r in requests if r[0] == "PATCH") == ("PATCH", offset), requests
    assert "POST" not in [method for method, _ in requests]

    stored = stored_file(server, token)
    assert stored["id"] == upload_id and stored["size"] == size
    assert detail.text_content() == f"Stored as {upload_id}"
    assert remembered_uploads(page) == []
    saved = download(page, "reloaded.bin")
    assert saved.failure() is None
    assert sha256_of(saved.path()) == sha256_of(path)
