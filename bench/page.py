"""Rows page_upload_2GiB and page_decrypt_2GiB: the web page in Debian's Chromium (headless, through
Playwright), against its own server.

An upload picked in the page is streamed by the browser from disk, and a download decrypted by the
page is streamed to disk by its service worker, so the browser's memory must not follow the file:
the ``*_browser_rss`` rows are the growth of the summed RSS of every Chromium process during one
2 GiB transfer (goal: at most 128 MiB, against the 2048 MiB that holding the file would add). The
decrypting renderer's floor is V8's: every segment allocates fresh buffers (the network's chunks,
the segment, WebCrypto's output), which the engine collects in batches, so about 90-100 MiB of
garbage comes and goes whatever the size (measured: +91 MiB for 256 MiB, +106 MiB for 2 GiB).
The throughput rows compare the page with the same transfer over plain HTTP by the bench's own
client in the same run (which does no decryption: the ratio shows what the browser's WebCrypto and
streams cost).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from bench.client import http_download, http_upload
from bench.common import MiB, log
from bench.report import Goal, Row, mib_per_s
from bench.sampling import RssSampler, cmdline, descendants
from bench.session import PASSWORD, Bench
from cryptofiles.dev.browser import HOW, chromium_path

BROWSER_GOAL = Goal("value", "<=", 128)
TIMEOUT_MS = 15 * 60 * 1000


def browser_pids() -> list[int]:
    """Chromium's processes: everything below this process whose command line names it."""
    return [pid for pid in descendants(os.getpid()) if "chrom" in cmdline(pid)]


def page_rows(bench: Bench) -> None:
    if not bench.wanted("page_upload_2GiB", "page_decrypt_2GiB"):
        return
    # Imported here: Playwright is a development dependency, like the rest of the bench's tools.
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    if executable is None:
        raise RuntimeError(f"no Chromium: {HOW}")
    size = 2 * bench.sizes.huge
    label = f"{size // MiB} MiB" if size < 1024 * MiB else f"{size // (1024 * MiB)} GiB"
    data = bench.tmp / "page-upload.bin"
    with open(bench.data, "rb") as source, open(data, "wb") as out:
        while out.tell() < size:  # the bench's random data, as many times as needed
            source.seek(0)
            shutil.copyfileobj(source, out, min(size - out.tell(), bench.sizes.huge))
    launcher = bench.start_server("var-page")
    name = f"bench-page-{os.getpid()}"
    bench.token = bench.register(name)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(executable))
            context = browser.new_context(accept_downloads=True)
            page = context.new_page()
            page.goto(f"{launcher.base}/app/")
            page.fill("#login-name", name)
            page.fill("#login-password", PASSWORD)
            page.click("#login-form button[type=submit]")
            page.wait_for_selector("#workspace:not([hidden])")

            log(f"page: {label} upload over plain HTTP (baseline), then from the page")
            baseline_up = http_upload(launcher.port, "/upload", bench.token, data, size)
            with RssSampler({"browser": browser_pids}) as sampler:
                started = time.perf_counter()
                page.set_input_files("#file-input", str(data))
                page.wait_for_selector("#uploads li[data-state=done]", timeout=TIMEOUT_MS)
                up = {"bytes": size, "seconds": time.perf_counter() - started}
            up_growth = growth_mib(sampler)
            file_id = page.get_attribute("#uploads li[data-state=done]", "data-file-id")

            log(f"page: {label} ciphertext over plain HTTP (baseline), then decrypted by the page")
            baseline_down = http_download(launcher.port, f"/files/{file_id}", bench.token)
            page.click("#refresh")
            button = page.locator(
                f"#files tr[data-file-id='{file_id}'] button[data-action=decrypt]"
            )
            with RssSampler({"browser": browser_pids}) as sampler:
                started = time.perf_counter()
                with page.expect_download(timeout=TIMEOUT_MS) as download:
                    button.click()
                saved = Path(download.value.path())  # waits for the end of the download
                down = {"bytes": size, "seconds": time.perf_counter() - started}
            down_growth = growth_mib(sampler)
            if download.value.failure() or saved.stat().st_size != size:
                raise RuntimeError(f"the page's download failed: {download.value.failure()}")
            saved.unlink()
            browser.close()
    finally:
        data.unlink(missing_ok=True)
        bench.stop_server()

    for kind, ours, theirs, growth in (
        ("upload", up, baseline_up, up_growth),
        ("decrypt", down, baseline_down, down_growth),
    ):
        row = f"page_{kind}_{label.replace(' ', '')}"
        bench.add(Row(
            row, mib_per_s(ours), "MiB/s", mib_per_s(theirs),
            baseline_label="the same bytes over plain HTTP (bench client, no decryption)",
        ))  # fmt: skip
        bench.add(Row(
            f"{row}_browser_rss", growth, "MiB", goal=BROWSER_GOAL,
            note="growth of the summed RSS of Chromium's processes during the transfer",
        ))  # fmt: skip


def growth_mib(sampler: RssSampler) -> float:
    totals = [kib for _, kib in sampler.samples["browser"]]
    return (max(totals) - totals[0]) / 1024
