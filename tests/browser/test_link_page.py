"""A share link's page in headless Chromium: opened as `/s/<token>#k=<key>` it downloads through the
link, decrypts in the browser and saves the original (its SHA-256 checked); without the fragment it
offers the ciphertext and says the key is missing; a wrong key saves nothing. The server's log
never holds the key (the fragment is never sent), and the page keeps to its CSP (conftest watches).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Callable
from typing import Any

from playwright.sync_api import Page

from tests.browser.conftest import Watched, screenshot
from tests.support.server import Server, new_token

OpenPage = Callable[..., Watched]
NAME = "shared notes.txt"


def shared(server: Server, owner: str, data: bytes, **settings: Any) -> tuple[str, str, str]:
    """Upload ``data`` as a new user and link it: (the link's address, the key in base64url, the
    file's id)."""
    token = new_token(server, owner)
    auth = {"x-access-tokens": token}
    response, file_id = server.request("POST", "/upload", data, {**auth, "X-File-Name": NAME})
    assert response.status == 201
    headers = {**auth, "Accept": "application/json", "Content-Type": "application/json"}
    path = f"/files/{file_id.decode()}/links"
    response, body = server.request("POST", path, json.dumps(settings), headers)
    assert response.status == 201, body
    link = server.base + "/s/" + json.loads(body)["url"].rsplit("/s/", 1)[1]
    _, key = server.request("GET", f"/files/{file_id.decode()}/key", None, auth)
    url_key = base64.urlsafe_b64encode(base64.b64decode(key)).decode().rstrip("=")
    return link, url_key, file_id.decode()


def go(page: Page, url: str) -> None:
    page.goto("about:blank")  # a new fragment alone would not load the page again
    page.goto(url)
    page.wait_for_selector("#link-name:not(:empty)")


def test_the_link_page_decrypts_in_the_browser_with_the_key_from_the_fragment(
    open_page: OpenPage, server: Server
) -> None:
    data = os.urandom(3 * (1 << 20) + 5)
    link, key, _ = shared(server, "linkowner", data, max_downloads=2)
    watched = open_page()
    page = watched.page
    go(page, f"{link}#k={key}")
    assert page.text_content("#link-name") == NAME
    assert page.is_visible("#link-decrypt")
    with page.expect_download(timeout=60_000) as started:
        page.click("#link-decrypt")
    saved = started.value
    assert saved.suggested_filename == NAME
    path = saved.path()
    assert path is not None and saved.failure() is None
    assert hashlib.sha256(path.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
    page.wait_for_selector("#link-status:has-text('Saved')")
    screenshot(page, "link-decrypted")
    log = server.log()
    standard = base64.b64encode(base64.urlsafe_b64decode(key + "=")).decode()
    for form in (key, standard, standard.rstrip("=")):
        assert form not in log, "the key reached the server"
    assert link.rsplit("/", 1)[1] not in log, "the link's token was logged"


def test_without_the_fragment_the_page_offers_the_ciphertext(
    open_page: OpenPage, server: Server
) -> None:
    link, _, file_id = shared(server, "nokeyowner", b"secret words " * 100)
    page = open_page().page
    go(page, link)
    assert "key is missing" in str(page.text_content("#link-note"))
    assert not page.is_visible("#link-decrypt")
    with page.expect_download() as started:
        page.click("#link-ciphertext")
    saved = started.value
    assert saved.suggested_filename == f"{NAME}.enc"
    path = saved.path()
    assert path is not None
    token = new_token(server, "ciphertextreader")
    _, ciphertext = server.request("GET", f"/files/{file_id}", None, {"x-access-tokens": token})
    assert path.read_bytes() == ciphertext


def test_a_wrong_key_or_a_used_up_link_saves_nothing_and_says_why(
    open_page: OpenPage, server: Server
) -> None:
    link, _, _ = shared(server, "wrongkeyowner", b"x" * 5000, max_downloads=1)
    page = open_page().page
    downloads: list[Any] = []
    page.on("download", lambda started: downloads.append(started))
    # A key that is not one: refused before anything is downloaded (nothing counted).
    go(page, f"{link}#k=short")
    page.click("#link-decrypt")
    page.wait_for_selector("#link-alert:not([hidden])")
    assert "key" in str(page.text_content("#link-alert"))
    # A wrong key of the right size: the download is spent, authentication fails, nothing saved.
    wrong = base64.urlsafe_b64encode(bytes(32)).decode().rstrip("=")
    go(page, f"{link}#k={wrong}")
    page.click("#link-decrypt")
    page.wait_for_selector("#link-alert:not([hidden])")
    screenshot(page, "link-wrong-key")
    assert downloads == []
    # The link's one download is used up: its page is gone like an unknown link's.
    response = page.reload()
    assert response is not None and response.status == 404
