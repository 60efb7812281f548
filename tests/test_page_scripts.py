"""The page's scripts under Node's test runner: the decryptor against Tink's output, the API
client's messages (``tests/js/api.test.mjs``), the tus upload client against an in-memory tus
server (``tests/js/tus.test.mjs``), and the browser's age identity against the stock ``age`` CLI
(``tests/js/identity.test.mjs``).

The decryptor (``cryptofiles/web/static/decrypt.js``):

Tink, an implementation we did not write, encrypts plaintexts of every size class into a folder,
with a ``manifest.json`` saying what each one must decrypt to; then Node's test runner runs
``tests/js/decrypt.test.mjs`` on them (the module is standard JavaScript, and Node 20 has WebCrypto
and WHATWG streams). The JavaScript tests cover delivery in chunks of any size, every failure class
and the helpers; this file only produces their inputs, and checks that ``cryptofiles.crypto`` reads
the same vectors, so a failure over there is the decryptor's and not the vectors'.

Node is part of the set-up (the page needs a JavaScript engine to be tested at all), so a missing
``node`` fails this test instead of skipping it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from cryptofiles import crypto
from cryptofiles.crypto import layout
from cryptofiles.dev import age as age_tools
from cryptofiles.dev.tink_oracle import tink_encrypt

ROOT = Path(__file__).resolve().parent.parent
JS_TESTS = ROOT / "tests" / "js" / "decrypt.test.mjs"
FIRST = layout.FIRST_PLAIN  # plaintext capacity of segment 0: 1_048_520
LATER = layout.PLAIN  # plaintext capacity of every later segment: 1_048_560

# Plaintext sizes by name; the JavaScript tests pick cases by these names.
CASES = {
    "empty": 0,
    "one-byte": 1,
    "first-1": FIRST - 1,
    "first": FIRST,  # one full-size segment that is also the last
    "first+1": FIRST + 1,
    "second-1": FIRST + LATER - 1,
    "second": FIRST + LATER,
    "second+1": FIRST + LATER + 1,
    "several": 7 * (1 << 20) // 2,  # 3.5 MiB: four segments, the last one partial
}

# Ciphertext lengths whose plaintext size (or impossibility) the JavaScript must agree on.
_AROUND = (layout.SEGMENT_SIZE, 2 * layout.SEGMENT_SIZE, 5 * layout.SEGMENT_SIZE)
CIPHERTEXT_SIZES = sorted(
    {
        *range(-1, 60),
        *(edge + d for edge in _AROUND for d in range(-2, layout.TAG_SIZE + 2)),
        *(layout.ciphertext_size(n) for n in CASES.values()),
        (1 << 40) + 12_345,
        (1 << 52) + 7,
    }
)

# Key texts as people may paste them, with what keytext.decode_key makes of them (stripped, as
# the page strips): None where it refuses.
_KEY = bytes(range(1, 33))
_STANDARD = base64.b64encode(_KEY).decode()
KEY_TEXTS = [
    _STANDARD,
    _STANDARD.rstrip("="),
    _STANDARD + "=",
    base64.urlsafe_b64encode(b"\xfb\xff" * 16).decode(),
    base64.b64encode(b"\xfb\xff" * 16).decode(),
    f"  {_STANDARD}\n",
    _STANDARD + "==",
    "",
    "=",
    _STANDARD[:-3] + "!" + _STANDARD[-2:],
    _STANDARD[:10] + "=" + _STANDARD[10:],
    _STANDARD[:20] + " " + _STANDARD[20:],
    base64.b64encode(_KEY[:16]).decode(),
    base64.b64encode(_KEY + b"x").decode(),
    "A" * 45,
]


def _decoded(text: str) -> str | None:
    try:
        return crypto.decode_key(text.strip()).hex()
    except crypto.KeyFormatError:
        return None


def _plaintext_size(size: int) -> int | None:
    try:
        return layout.plaintext_size(size)
    except crypto.DecryptionError:
        return None


@pytest.fixture(scope="module")
def vectors(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("decryptor-vectors")
    cases = []
    for name, size in CASES.items():
        key, plaintext = os.urandom(32), os.urandom(size)
        (folder / f"{name}.bin").write_bytes(tink_encrypt(key, plaintext))
        cases.append(
            {
                "name": name,
                "key": base64.b64encode(key).decode(),
                "size": size,
                "sha256": hashlib.sha256(plaintext).hexdigest(),
                "file": f"{name}.bin",
            }
        )
    manifest = {
        "constants": {
            "SEGMENT_SIZE": layout.SEGMENT_SIZE,
            "HEADER_SIZE": layout.HEADER_SIZE,
            "TAG_SIZE": layout.TAG_SIZE,
        },
        "cases": cases,
        "plaintext_sizes": [[n, _plaintext_size(n)] for n in CIPHERTEXT_SIZES],
        "key_texts": [[text, _decoded(text)] for text in KEY_TEXTS],
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return folder


def test_vectors_decrypt_with_our_crypto(vectors: Path) -> None:
    """The vectors are right: our own decryptor gives the plaintexts the manifest names."""
    manifest = json.loads((vectors / "manifest.json").read_text())
    assert {case["name"] for case in manifest["cases"]} == set(CASES)
    for case in manifest["cases"]:
        key = base64.b64decode(case["key"])
        ciphertext = (vectors / case["file"]).read_bytes()
        digest = hashlib.sha256()
        for piece in crypto.decrypt_stream(key, [ciphertext]):
            digest.update(piece)
        assert digest.hexdigest() == case["sha256"], case["name"]
        assert len(ciphertext) == layout.ciphertext_size(case["size"]), case["name"]
    assert any(size is None for _, size in manifest["plaintext_sizes"])
    assert any(key is None for _, key in manifest["key_texts"])


def run_node_tests(script: Path, env: dict[str, str] | None = None) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.fail(
            "node is not installed: the page's scripts are tested with Node's test runner "
            "(Node 20 or newer, e.g. `apt-get install nodejs`)"
        )
    result = subprocess.run(
        [node, "--test", str(script)],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, (
        f"node --test failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    )


def test_decryptor_passes_its_node_tests(vectors: Path) -> None:
    run_node_tests(JS_TESTS, {"CRYPTOFILES_VECTORS": str(vectors)})


def test_api_client_passes_its_node_tests() -> None:
    run_node_tests(ROOT / "tests" / "js" / "api.test.mjs")


def test_tus_client_passes_its_node_tests() -> None:
    """tus.js against an in-memory tus server: cuts, reloads, cancel, refusals (see tests/js)."""
    run_node_tests(ROOT / "tests" / "js" / "tus.test.mjs")


def test_browser_identity_opens_what_the_stock_age_cli_seals() -> None:
    """identity.js and the vendored age.js against the stock `age` CLI (see tests/js)."""
    try:
        found = age_tools.find()
    except age_tools.MissingAge as exc:
        pytest.fail(f"{exc} (make test installs it)")
    run_node_tests(
        ROOT / "tests" / "js" / "identity.test.mjs", {"CRYPTOFILES_AGE": str(found["age"])}
    )
