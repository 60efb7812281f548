"""The web page end to end, in headless Chromium, against the server as ``make run`` starts it.

What a person does: register, log in, upload files (one of 200 MiB) watching progress, see them
listed, download each decrypted in the browser (the SHA-256 of the saved file is the original's),
copy a key, download ciphertext; and what must not happen: another user seeing or decrypting the
files, an old token working after logout, a cancelled upload leaving anything, a tampered file
saved as if it were whole.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Download, Page

from cryptofiles.dev.harness import descendants
from cryptofiles.dev.tink_oracle import tink_decrypt
from tests.browser.conftest import (
    ARTIFACTS,
    Watched,
    log_in,
    register,
    screenshot,
    token_of,
)
from tests.support.server import Server, new_token

MiB = 1 << 20
# What the browser may grow by while it uploads 200 MiB: far less than the file, which it streams.
UPLOAD_GROWTH = 120 * MiB
OpenPage = Callable[..., Watched]


def write_file(path: Path, size: int) -> Path:
    """``size`` random-looking bytes, written a block at a time."""
    block = os.urandom(MiB)
    with path.open("wb") as out:
        for offset in range(0, size, MiB):
            out.write(block[: min(MiB, size - offset)])
            block = hashlib.sha512(block[:64]).digest() + block[64:]  # no two blocks alike
    return path


def sha256_of(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(MiB):
            digest.update(block)
    return digest.hexdigest()


def api(server: Server, method: str, path: str, token: str, body: bytes | None = None) -> Any:
    response, data = server.request(method, path, body, {"x-access-tokens": token})
    return response.status, data


def upload(server: Server, token: str, data: bytes, name: str | None = None) -> str:
    """Upload through the API, as curl would: the new file's id."""
    headers = {"x-access-tokens": token, **({"X-File-Name": name} if name else {})}
    response, body = server.request("POST", "/upload", data, headers)
    assert response.status == 201, body
    return str(body.decode())


@contextmanager
def chunks_of(server: Server) -> Iterator[Any]:
    """The launcher's ciphertext.chunks collection, to damage a stored file as storage might."""
    client = server.database()
    try:
        yield client["cryptofiles"]["ciphertext.chunks"]
    finally:
        client.close()


def failed_download(page: Page, file_id: str) -> str:
    """Start decrypting ``file_id`` and expect it to fail: the message the page shows for it."""
    with page.expect_download() as started:
        row(page, file_id).locator("button[data-action=decrypt]").click()
    expect_state(page, "downloads", file_id, "failed")
    assert started.value.failure() is not None  # the browser keeps no file under the name
    return str(transfer(page, "downloads", file_id).locator(".detail").text_content())


def row(page: Page, name: str) -> Any:
    return page.locator("#files tbody tr", has_text=name)


def transfer(page: Page, where: str, name: str) -> Any:
    return page.locator(f"#{where} li", has=page.locator(".name", has_text=name)).first


def download(page: Page, name: str, action: str = "decrypt") -> Download:
    with page.expect_download(timeout=120_000) as started:
        row(page, name).locator(f"button[data-action={action}]").click()
    return started.value


class BrowserMemory:
    """Samples the proportional set size of every Chromium process this test process started."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def now() -> int:
        total = 0
        for pid in descendants(os.getpid()):
            try:
                if b"chrom" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                    continue
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
            except OSError:  # the process ended meanwhile
                continue
        return total

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.peak = max(self.peak, self.now())

    @contextmanager
    def watching(self) -> Iterator[BrowserMemory]:
        self.peak = self.now()
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join()


# -- the whole job ------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_whole_job_from_the_page(
    open_page: OpenPage, server: Server, tmp_path: Path, browser_memory_report: dict[str, Any]
) -> None:
    (tmp_path / "notes.txt").write_bytes(b"hello, browser\n")
    write_file(tmp_path / "one-segment-plus.bin", 1_048_521)  # the first segment holds 1_048_520
    write_file(tmp_path / "big.bin", 200 * MiB)
    paths = {name: tmp_path / name for name in ("notes.txt", "one-segment-plus.bin", "big.bin")}
    watched = open_page()
    page = watched.page
    screenshot(page, "signin")
    register(page, "alice")
    assert page.text_content("#user-name") == "alice"
    page.click("#logout")  # and back in through the login form
    page.wait_for_selector("#signin:not([hidden])")
    log_in(page, "alice")
    assert page.text_content("#user-name") == "alice"

    # Three files at once; the page uploads them one after another (over tus), each with its
    # progress, streamed from disk: the browser's memory does not grow with the 200 MiB file.
    with BrowserMemory().watching() as memory:
        baseline = memory.peak
        page.set_input_files("#file-input", [str(p) for p in paths.values()])
        for name in paths:
            expect_state(page, "uploads", name, "done", timeout=180)
    browser_memory_report.update(
        upload_baseline_mib=baseline / MiB, upload_peak_mib=memory.peak / MiB
    )
    assert memory.peak - baseline < UPLOAD_GROWTH, browser_memory_report
    progress = [value for name, value in page.evaluate("window.__progress") if name == "big.bin"]
    partial = [v for v in progress if 0 < v < 1]
    assert len(partial) >= 3 and partial == sorted(partial), progress  # real, rising progress
    screenshot(page, "uploaded")

    # The list shows them, and the ids the page showed are the ones the API lists.
    token = token_of(page)
    status, body = api(server, "GET", "/files", token)
    listed = {f["name"]: f for f in json.loads(body)["files"]}
    assert set(listed) == set(paths)
    for name, path in paths.items():
        detail = transfer(page, "uploads", name).locator(".detail").text_content()
        assert detail == f"Stored as {listed[name]['id']}"
        assert row(page, name).count() == 1
        assert listed[name]["size"] == path.stat().st_size

    # Each downloads decrypted in the browser, byte for byte the original.
    for name, path in paths.items():
        if name == "big.bin":
            with BrowserMemory().watching() as memory:
                baseline = memory.peak
                saved = download(page, name)
                saved_path = saved.path()
            browser_memory_report.update(
                file_mib=200, baseline_mib=baseline / MiB, peak_mib=memory.peak / MiB
            )
        else:
            saved = download(page, name)
            saved_path = saved.path()
        assert saved.failure() is None
        assert saved.suggested_filename == name
        assert sha256_of(saved_path) == sha256_of(path), name
        expect_state(page, "downloads", name, "done")
    screenshot(page, "downloaded")

    # The key, shown and copied; the ciphertext, saved; Tink decrypts the one with the other.
    row(page, "notes.txt").locator("button[data-action=key]").click()
    page.wait_for_selector("#key-panel:not([hidden])")
    key = page.input_value("#key-value")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.click("#key-copy")
    page.wait_for_function("() => document.getElementById('notice').textContent.includes('copied')")
    assert page.evaluate("navigator.clipboard.readText()") == key
    screenshot(page, "key")
    ciphertext = download(page, "notes.txt", "ciphertext")
    assert ciphertext.suggested_filename == "notes.txt.enc"
    data = Path(ciphertext.path()).read_bytes()
    assert tink_decrypt(base64.b64decode(key), data) == paths["notes.txt"].read_bytes()

    # Delete, after a confirmation the person accepts.
    page.once("dialog", lambda dialog: dialog.accept())
    row(page, "notes.txt").locator("button[data-action=delete]").click()
    row(page, "notes.txt").wait_for(state="detached")
    status, _ = api(server, "GET", f"/files/{listed['notes.txt']['id']}/info", token)
    assert status == 404


@pytest.fixture(scope="module")
def browser_memory_report() -> Iterator[dict[str, Any]]:
    """The browser's memory during the 200 MiB decrypt, kept as an artefact for the notes."""
    report: dict[str, Any] = {}
    yield report
    if report:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "browser-memory.json").write_text(json.dumps(report, indent=2) + "\n")


def expect_state(page: Page, where: str, name: str, state: str, timeout: float = 60) -> None:
    item = transfer(page, where, name)
    deadline = time.monotonic() + timeout
    while item.get_attribute("data-state") != state:
        current = item.get_attribute("data-state")
        assert current in (None, "running") or current == state, item.text_content()
        assert time.monotonic() < deadline, f"{name} not {state}: {item.text_content()}"
        page.wait_for_timeout(100)


def test_the_list_pages_with_the_cursor_and_dropped_files_upload(
    open_page: OpenPage, server: Server
) -> None:
    token = new_token(server, "pager1")
    for n in range(21):  # one more than the page's page of 20
        upload(server, token, b"x" * (n + 1), f"f{n:02}.txt")
    page = open_page().page
    log_in(page, "pager1", "password1")
    page.wait_for_selector("#more:not([hidden])")
    assert page.locator("#files tbody tr").count() == 20
    assert row(page, "f00.txt").count() == 0  # newest first: the oldest is on the next page
    page.click("#more")
    row(page, "f00.txt").wait_for()
    assert page.locator("#files tbody tr").count() == 21
    assert page.is_hidden("#more")

    # Files dropped on the drop zone upload like picked ones.
    page.evaluate(
        """() => {
          const data = new DataTransfer();
          data.items.add(new File(["dropped one"], "dropped.txt", { type: "text/plain" }));
          const zone = document.getElementById("drop-zone");
          zone.dispatchEvent(new DragEvent("drop", { dataTransfer: data, bubbles: true }));
        }"""
    )
    expect_state(page, "uploads", "dropped.txt", "done")
    row(page, "dropped.txt").wait_for()
    listed = json.loads(api(server, "GET", "/files?limit=1", token)[1])["files"][0]
    assert (listed["name"], listed["size"], listed["content_type"]) == (
        "dropped.txt",
        11,
        "text/plain",
    )


# -- what must not happen -----------------------------------------------------------------------


def test_another_user_sees_nothing_and_cannot_decrypt(open_page: OpenPage, server: Server) -> None:
    file_id = upload(server, new_token(server, "owner1"), b"the owner's secret")

    page = open_page().page
    register(page, "intruder1")
    page.wait_for_selector("#files-empty:not([hidden])")
    assert page.locator("#files tbody tr").count() == 0

    # The id typed in changes nothing: the page answers as for an unknown id.
    page.fill("#open-id", file_id)
    page.click("#open-form button[type=submit]")
    page.wait_for_selector("#alert:not([hidden])")
    assert page.text_content("#alert") == "No such file in your account."
    assert page.locator("#files tbody tr").count() == 0
    screenshot(page, "not-yours")
    # Nor can the page's own code get the key: the API answers 404, as for an unknown id.
    statuses = page.evaluate(
        """async (id) => {
          const headers = {"x-access-tokens": sessionStorage.getItem("cryptofiles.token")};
          const key = await fetch(`/files/${id}/key`, {headers});
          const info = await fetch(`/files/${id}/info`, {headers});
          const unknown = await fetch(`/files/${crypto.randomUUID()}/key`, {headers});
          return [key.status, info.status, unknown.status, await key.text() === await unknown.text()];
        }""",
        file_id,
    )
    assert statuses == [404, 404, 404, True]


def test_logout_revokes_the_token_and_stops_uploads(
    open_page: OpenPage, server: Server, tmp_path: Path
) -> None:
    page = open_page().page
    register(page, "leaver1")
    token = token_of(page)
    assert api(server, "GET", "/test_login", token)[0] == 200
    before = stored_counts(server)
    slow_uplink(page)
    page.set_input_files("#file-input", str(write_file(tmp_path / "going.bin", 32 * MiB)))
    page.wait_for_function(
        "() => window.__progress.some(([name, value]) => name === 'going.bin' && value > 0)"
    )
    page.click("#logout")
    page.wait_for_selector("#signin:not([hidden])")
    assert "revoked" in page.text_content("#notice")
    assert page.evaluate("sessionStorage.length") == 0
    assert api(server, "GET", "/test_login", token)[0] == 401
    assert transfer(page, "uploads", "going.bin").get_attribute("data-state") == "cancelled"
    wait_for_counts(server, before)


def slow_uplink(page: Page) -> None:
    """A 4 MiB/s uplink, so that an upload is surely under way when the test acts on it."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 4 * MiB},
    )


def wait_for_counts(server: Server, expected: tuple[int, int]) -> None:
    """The server sees the connection end and discards what it had; wait until it has."""
    deadline = time.monotonic() + 30
    while stored_counts(server) != expected:
        assert time.monotonic() < deadline, (expected, stored_counts(server))
        time.sleep(0.2)


def test_a_revoked_token_returns_to_the_login_form(open_page: OpenPage, server: Server) -> None:
    page = open_page().page
    register(page, "expiring1")
    api(server, "POST", "/logout", token_of(page))  # as if it had expired: the API answers 401
    page.click("#refresh")
    page.wait_for_selector("#signin:not([hidden])")
    assert page.text_content("#alert") == "Your session has ended: please log in again."
    assert page.evaluate("sessionStorage.length") == 0
    log_in(page, "expiring1")  # and logging in again works
    assert page.text_content("#user-name") == "expiring1"


def test_a_cancelled_upload_stores_nothing(
    open_page: OpenPage, server: Server, tmp_path: Path
) -> None:
    path = write_file(tmp_path / "cancelled.bin", 64 * MiB)
    page = open_page().page
    register(page, "canceller1")
    token = token_of(page)
    before = stored_counts(server)
    slow_uplink(page)
    page.set_input_files("#file-input", str(path))
    page.wait_for_function(
        "() => window.__progress.some(([name, value]) => name === 'cancelled.bin' && value > 0.05)"
    )
    # Progress shows how much, of how much, and how fast.
    detail = transfer(page, "uploads", "cancelled.bin").locator(".detail").text_content()
    assert re.fullmatch(r"[\d.]+ (KiB|MiB) of 64\.0 MiB · [\d.]+ (bytes|KiB|MiB)/s", detail), detail
    transfer(page, "uploads", "cancelled.bin").locator(".cancel").click()
    expect_state(page, "uploads", "cancelled.bin", "cancelled")
    detail = transfer(page, "uploads", "cancelled.bin").locator(".detail").text_content()
    assert detail == "Cancelled: nothing was stored."
    wait_for_counts(server, before)
    assert json.loads(api(server, "GET", "/files", token)[1])["files"] == []


def stored_counts(server: Server) -> tuple[int, int]:
    client = server.database()
    try:
        db = client["cryptofiles"]
        return db.files.count_documents({}), db["ciphertext.chunks"].count_documents({})
    finally:
        client.close()


def test_a_tampered_file_fails_clearly_and_saves_nothing(
    open_page: OpenPage, server: Server
) -> None:
    token = new_token(server, "tampered1")
    file_id = upload(server, token, os.urandom(3 * MiB))
    with chunks_of(server) as chunks:  # one flipped bit in segment 1, as corruption or an attacker
        chunk = chunks.find_one({"files_id": file_id, "n": 1})
        data = bytearray(chunk["data"])
        data[len(data) // 2] ^= 1
        chunks.update_one({"_id": chunk["_id"]}, {"$set": {"data": bytes(data)}})

    page = open_page().page
    log_in(page, "tampered1", "password1")
    message = failed_download(page, file_id)
    assert "failed its integrity check (segment 1)" in message
    assert "integrity check" in page.text_content("#alert")
    screenshot(page, "tampered")


def test_refusals_read_as_sentences(open_page: OpenPage, server: Server, tmp_path: Path) -> None:
    token = new_token(server, "greedy1")
    file_id = upload(server, token, b"x")
    for _ in range(20):  # RATE_LIMIT_KEYS, spent through the API
        api(server, "GET", f"/files/{file_id}/key", token)
    page = open_page().page
    log_in(page, "greedy1", "password1")
    row(page, file_id).locator("button[data-action=key]").click()
    page.wait_for_selector("#alert:not([hidden])")
    assert re.fullmatch(
        r"Too many attempts\. Try again in [1-9]\d* s\.", page.text_content("#alert")
    )
    assert page.is_hidden("#key-panel")

    # A file over MAX_UPLOAD_BYTES: refused before it is sent, and said so.
    too_big = tmp_path / "too-big.iso"
    with too_big.open("wb") as sparse:
        sparse.truncate((210 << 20) + 1)
    page.set_input_files("#file-input", str(too_big))
    expect_state(page, "uploads", "too-big.iso", "failed")
    detail = transfer(page, "uploads", "too-big.iso").locator(".detail").text_content()
    assert detail == f"The file is larger than the limit of {210 << 20} bytes."
    assert json.loads(api(server, "GET", "/files", token)[1])["files"][0]["id"] == file_id


def test_a_download_cut_short_fails_clearly_and_saves_nothing(
    open_page: OpenPage, server: Server
) -> None:
    token = new_token(server, "truncated1")
    file_id = upload(server, token, os.urandom(3 * MiB))
    with chunks_of(server) as chunks:  # the last segment lost: the answer ends early, as a cut does
        assert chunks.delete_one({"files_id": file_id, "n": 3}).deleted_count == 1

    page = open_page().page
    log_in(page, "truncated1", "password1")
    message = failed_download(page, file_id)
    assert message == "The connection was cut during the download; nothing was saved. Try again."


# -- where the service worker cannot help -------------------------------------------------------


def test_without_a_service_worker_small_files_decrypt_through_memory(
    open_page: OpenPage, server: Server
) -> None:
    token = new_token(server, "noworker1")
    payload = os.urandom(2 * MiB + 5)
    file_id = upload(server, token, payload)
    page = open_page(service_workers="block").page
    log_in(page, "noworker1", "password1")
    saved = download(page, file_id)
    assert saved.failure() is None
    assert Path(saved.path()).read_bytes() == payload
    expect_state(page, "downloads", file_id, "done")


# -- the policy, the keyboard and a phone's width -----------------------------------------------


def test_the_policy_is_enforced_and_the_page_keeps_to_it(open_page: OpenPage) -> None:
    watched = open_page()
    page = watched.page
    # Inline script injected into the page does not run, and the browser reports it: proof that
    # the policy is enforced and that the watch (which fails every test on a violation) works.
    page.evaluate(
        """() => {
          const script = document.createElement("script");
          script.textContent = "window.__inlineRan = true";
          document.body.append(script);
        }"""
    )
    page.wait_for_function("() => window.__cspViolations.length > 0")
    assert page.evaluate("window.__inlineRan") is None
    assert any("script-src" in v for v in watched.violations())
    page.evaluate("window.__cspViolations.length = 0")
    watched.console.clear()


def test_keyboard_only_at_a_phone_width(open_page: OpenPage, server: Server) -> None:
    token = new_token(server, "keyboard1")
    name = "a-rather-long-file-name-that-a-phone-must-wrap-somewhere.pdf"
    upload(server, token, b"%PDF", name)
    page = open_page(viewport={"width": 360, "height": 740}).page
    assert_fits(page)
    assert page.evaluate("document.activeElement.id") == "login-name"
    # Every control has a label.
    unlabelled = page.evaluate(
        """[...document.querySelectorAll("input")].filter((i) => i.labels.length === 0)
             .map((i) => i.id)"""
    )
    assert unlabelled == []
    # A wrong password, then the right one, from the keyboard alone.
    page.keyboard.type("keyboard1")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "login-password"
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"  # the focus is visible
    page.keyboard.type("not the password")
    page.keyboard.press("Enter")
    page.wait_for_selector("#alert:not([hidden])")
    assert page.text_content("#alert")
    page.fill("#login-password", "password1")
    page.keyboard.press("Enter")
    page.wait_for_selector("#workspace:not([hidden])")
    row(page, name).wait_for()
    assert_fits(page)
    screenshot(page, "phone")


def assert_fits(page: Page) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 360, f"the page is {width} px wide at 360 px"


def test_a_browser_key_receives_sealed_keys_and_opens_them(
    open_page: OpenPage, server: Server
) -> None:
    token = new_token(server, "sealer1")
    payload = os.urandom(MiB + 3)
    file_id = upload(server, token, payload, "sealed.bin")
    page = open_page().page
    log_in(page, "sealer1", "password1")
    page.wait_for_selector("#identity-create:not([hidden])")
    assert "plain" in page.text_content("#sealing-state")
    page.click("#identity-create")
    page.wait_for_selector("#identity-remove:not([hidden])")
    assert "sealed to this browser's own key" in page.text_content("#sealing-state")
    screenshot(page, "sealed-keys")

    # The account lists the browser's recipient; the key route now answers sealed age text...
    account = json.loads(api(server, "GET", "/account", token)[1])
    assert len(account["recipients"]) == 1
    assert account["recipients"][0] in page.text_content("#sealing-state")
    status, sealed = api(server, "GET", f"/files/{file_id}/key", token)
    assert status == 200 and sealed.startswith(b"-----BEGIN AGE ENCRYPTED FILE-----")
    # ...whose identity the page's own scripts cannot export.
    extractable = page.evaluate(
        """async () => {
          const { loadIdentity } = await import("./identity.js");
          return (await loadIdentity("sealer1")).privateKey.extractable;
        }"""
    )
    assert extractable is False

    # The page unseals: the download decrypts, and the key shown is the file's key.
    saved = download(page, "sealed.bin")
    assert saved.failure() is None
    assert Path(saved.path()).read_bytes() == payload
    row(page, "sealed.bin").locator("button[data-action=key]").click()
    page.wait_for_selector("#key-panel:not([hidden])")
    plain = api(server, "GET", f"/files/{file_id}/key?plain=1", token)[1].decode()
    assert page.input_value("#key-value") == plain

    # Another browser of the same account holds no identity: a clear refusal, no file.
    other = open_page().page
    log_in(other, "sealer1", "password1")
    row(other, "sealed.bin").locator("button[data-action=key]").click()
    other.wait_for_selector("#alert:not([hidden])")
    assert "this browser holds none of their identities" in other.text_content("#alert")

    # Removing the browser's key: off the account, and keys come plain again.
    page.click("#identity-remove")
    page.wait_for_selector("#identity-create:not([hidden])")
    assert json.loads(api(server, "GET", "/account", token)[1])["recipients"] == []
    assert api(server, "GET", f"/files/{file_id}/key", token)[1].decode() == plain


def test_sharing_from_the_page_grants_links_and_history(
    open_page: OpenPage, server: Server
) -> None:
    new_token(server, "reader1")
    owner = open_page().page
    register(owner, "sharer1")
    token = token_of(owner)
    payload = os.urandom(MiB // 2)
    file_id = upload(server, token, payload, "report.pdf")
    owner.click("#refresh")
    row(owner, "report.pdf").locator("button[data-action=share]").click()
    owner.wait_for_selector("#share-panel:not([hidden])")

    # A grant to reader1: listed, and reader1's page finds the file and decrypts it.
    owner.fill("#grant-user", "reader1")
    owner.click("#grant-form button[type=submit]")
    owner.locator("#grants li", has_text="reader1").wait_for()
    reader = open_page().page
    log_in(reader, "reader1", "password1")
    shared = reader.locator("#shared tbody tr", has_text="report.pdf")
    shared.wait_for()
    assert "sharer1" in shared.text_content()
    with reader.expect_download() as started:
        shared.locator("button[data-action=decrypt]").click()
    assert Path(started.value.path()).read_bytes() == payload

    # A share link, with the key in its fragment, opens for someone with no account.
    owner.fill("#link-max", "1")
    owner.click("#link-form button[type=submit]")
    owner.wait_for_selector("#link-made:not([hidden])")
    url = owner.input_value("#link-url")
    assert url.startswith(f"{server.base}/s/") and "#k=" in url
    assert url.split("#k=")[1] not in server.log()  # the key never reached the server
    stranger = open_page().page
    stranger.goto(url)
    stranger.wait_for_selector("#link-name:not(:empty)")
    with stranger.expect_download(timeout=60_000) as started:
        stranger.click("#link-decrypt")
    assert Path(started.value.path()).read_bytes() == payload

    # The history shows each of them; revoking the grant takes the file from reader1.
    owner.click("#share-close")
    row(owner, "report.pdf").locator("button[data-action=share]").click()
    owner.locator("#events li", has_text="link.download").wait_for()
    history = owner.text_content("#events")
    assert "key by reader1" in history and "grant.create reader1 by sharer1" in history
    owner.locator("#grants li", has_text="reader1").locator("button").click()
    owner.locator("#grants li").first.wait_for(state="detached")
    status, _ = api(server, "GET", f"/files/{file_id}/key", new_token_for(server, "reader1"))
    assert status == 404
    screenshot(owner, "sharing")


def new_token_for(server: Server, name: str) -> str:
    response, data = server.request(
        "GET", "/login", None, {"User_Name": name, "User_Password": "password1"}
    )
    assert response.status == 200
    return str(data.decode())
