"""The client commands: accounts (register, login, logout, whoami, keygen) and files (upload, ls,
info, rm, key, download, decrypt), each a ``cmd_*`` function of the parsed arguments returning
the exit status.

Downloads are decrypted here, while they arrive, with the key the owner fetches: the server's
``/plaintext`` route is never used, so with ``download --decrypt`` plaintext exists only on this
machine. ``decrypt`` does the same offline for a ciphertext downloaded earlier.

``cryptofiles.crypto`` (with the ``cryptography`` package, some 20 ms of imports) is imported inside
the functions that check or use a key, so that the commands that need none (ls, whoami, ...) start
without it.
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import os
import stat
import sys
import urllib.parse
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from cryptofiles.cli import (
    EXIT_AUTH,
    EXIT_DECRYPT,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    links,
    resumable,
    sealed,
)
from cryptofiles.cli.output import (
    atomic_output,
    disposition_filename,
    output_path,
    refuse_existing,
    safe_filename,
)
from cryptofiles.cli.sealed import open_key_answer
from cryptofiles.cli.terminal import Progress, clean, progress, read_password
from cryptofiles.cli.transport import (
    BLOCK,
    DEFAULT_URL,
    URL_ENV,
    Api,
    ServerUrl,
    TokenStore,
    config_dir,
    content_length,
    file_path,
)

DEFAULT_PAGE_SIZE = 200
MAX_PAGE_SIZE = 1000  # the server's limit
KEY_BYTES = 32


def server_url(args: argparse.Namespace) -> ServerUrl:
    return ServerUrl.parse(args.server or os.environ.get(URL_ENV) or DEFAULT_URL)


def token_store() -> TokenStore:
    return TokenStore(config_dir() / "token")


def logged_in_api(args: argparse.Namespace) -> Api:
    url = server_url(args)
    token = token_store().get(url)
    if token is None:
        raise CliError(f"not logged in to {url}: run `cryptofiles login NAME`", EXIT_AUTH)
    return Api(url, token)


def cmd_register(args: argparse.Namespace) -> int:
    password = read_password(args, confirm=True)
    # A JSON body rather than the seed's headers: it carries any character, and proxies drop
    # header names with underscores (New_User_Name) by default.
    body = {"New_User_Name": args.name, "New_User_Password": password}
    doc = Api(server_url(args)).call("POST", "/registration", json_body=body)
    print(f"Registered {doc.get('name', args.name)}")
    return EXIT_OK


def cmd_login(args: argparse.Namespace) -> int:
    password = read_password(args, confirm=False)
    url = server_url(args)
    body = {"User_Name": args.name, "User_Password": password}
    doc = Api(url).call("GET", "/login", json_body=body)
    token = doc.get("token")
    if not isinstance(token, str) or not token:
        raise CliError("the server's login answer holds no token")
    store = token_store()
    store.put(url, token)
    expires = f", expires {doc['expires_at']}" if isinstance(doc.get("expires_at"), str) else ""
    print(f"Logged in to {url} as {args.name} (token stored in {store.path}{expires})")
    return EXIT_OK


def cmd_logout(args: argparse.Namespace) -> int:
    url = server_url(args)
    store = token_store()
    token = store.get(url)
    if token is None:
        print(f"Not logged in to {url}", file=sys.stderr)
        return EXIT_OK
    try:
        Api(url, token).call("POST", "/logout")
    except CliError as exc:
        if exc.exit_code != EXIT_AUTH:
            raise  # e.g. unreachable: keep the token, which is still valid, so logout can retry
        print("The token had already expired or been revoked.", file=sys.stderr)
    store.remove(url)
    print(f"Logged out of {url}")
    return EXIT_OK


def cmd_whoami(args: argparse.Namespace) -> int:
    doc = logged_in_api(args).call("GET", "/test_login")
    print(doc.get("name", ""))
    return EXIT_OK


def cmd_upload(args: argparse.Namespace) -> int:
    api = logged_in_api(args)
    store = resumable.resume_store() if args.resume else None
    for name in args.files:
        path = Path(name)
        if store is None:
            file_id = upload_one(api, path)
        else:
            file_id = resumable.upload_resumable(api, path, store)
        print(file_id, flush=True)  # each id as soon as it exists
    return EXIT_OK


def upload_one(api: Api, path: Path) -> str:
    with open(path, "rb") as source:
        info = os.fstat(source.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise CliError(f"{path}: not a regular file")
        # Header values go out as bytes: the server reads them as UTF-8, whatever the name holds.
        headers: dict[str, str | bytes] = {
            "Content-Type": "application/octet-stream",
            "X-File-Name": path.name.encode("utf-8", "replace"),
        }
        media_type, _ = mimetypes.guess_type(path.name)
        if media_type:
            headers["X-Content-Type"] = media_type
        doc = api.upload("/upload", source, info.st_size, headers, path.name)
    file_id = doc.get("id")
    if not isinstance(file_id, str):
        raise CliError("the server's upload answer holds no file id")
    return file_id


def cmd_ls(args: argparse.Namespace) -> int:
    files = list(list_files(logged_in_api(args), args.page_size))
    if args.json:
        print(json.dumps(files, indent=2, ensure_ascii=False))
        return EXIT_OK
    rows = [(str(f["id"]), str(f["size"]), when(f["created_at"]), f["name"] or "-") for f in files]
    width = max((len(size) for _, size, _, _ in rows), default=0)
    for file_id, size, created, name in rows:
        print(f"{file_id}  {size:>{width}}  {created}  {clean(name)}")
    return EXIT_OK


def list_files(api: Api, page_size: int) -> Iterator[dict[str, Any]]:
    """Every file of the user, newest first, page after page."""
    return paged(api, "/files", "files", page_size)


def paged(api: Api, path: str, field: str, page_size: int) -> Iterator[dict[str, Any]]:
    """The items ``field`` of every page of ``path``, following ``next_cursor``."""
    cursor: str | None = None
    seen: set[str] = set()
    while True:
        query = {"limit": str(page_size)} | ({"cursor": cursor} if cursor else {})
        doc = api.call("GET", f"{path}?" + urllib.parse.urlencode(query))
        yield from doc.get(field, [])
        cursor = doc.get("next_cursor")
        if not cursor or cursor in seen:  # a repeated cursor would loop forever
            return
        seen.add(cursor)


def cmd_events(args: argparse.Namespace) -> int:
    """A file's access history, newest first: one line per event (or JSON)."""
    events = list(paged(logged_in_api(args), file_path(args.id, "/events"), "events",
                        args.page_size))  # fmt: skip
    if args.json:
        print(json.dumps(events, indent=2, ensure_ascii=False))
        return EXIT_OK
    for event in events:
        print("  ".join(clean(str(part)) for part in event_columns(event)))
    return EXIT_OK


def event_columns(event: dict[str, Any]) -> list[str]:
    """time, action, user, client address, request id, then what the action adds."""
    user = event.get("user") or {}
    extra = []
    if "sealed" in event:
        extra.append("sealed" if event["sealed"] else "plain")
    if "grantee_name" in event:
        extra.append(f"to {event['grantee_name']}")
    if event.get("expires_at"):
        extra.append(f"until {when(event['expires_at'])}")
    return [when(event.get("at", "")), f"{event.get('action', ''):<12}", str(user.get("name")),
            str(event.get("client")), str(event.get("request_id") or "-"), *extra]  # fmt: skip


def when(iso: str) -> str:
    try:
        moment = datetime.fromisoformat(iso)
    except (TypeError, ValueError):
        return str(iso)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def cmd_info(args: argparse.Namespace) -> int:
    doc = logged_in_api(args).call("GET", file_path(args.id, "/info"))
    print(json.dumps(doc, indent=2, ensure_ascii=False))
    return EXIT_OK


def cmd_rm(args: argparse.Namespace) -> int:
    """Delete each id; unknown ids are reported and skipped, like rm(1) does."""
    api = logged_in_api(args)
    status = EXIT_OK
    for file_id in args.ids:
        try:
            api.call("DELETE", file_path(file_id))
        except CliError as exc:
            if exc.exit_code != EXIT_NOT_FOUND:
                raise
            print(f"cryptofiles: {exc.message}", file=sys.stderr)
            status = EXIT_NOT_FOUND
    return status


def fetch_key(api: Api, file_id: str, identity: str | None = None) -> str:
    """The file's key in base64, checked to be one this client can decrypt with; a key the server
    sealed to the account's age recipients is opened here with the identity file."""
    from cryptofiles import crypto

    doc = api.call("GET", file_path(file_id, "/key"))
    key = open_key_answer(doc, identity)
    if doc.get("algorithm", crypto.ALGORITHM) != crypto.ALGORITHM:
        raise CliError(f"the file uses {clean(str(doc['algorithm']))}, which this client lacks")
    return key


def cmd_key(args: argparse.Namespace) -> int:
    # Printing the key is this command's purpose.
    print(fetch_key(logged_in_api(args), args.id, args.identity))
    return EXIT_OK


def cmd_keygen(args: argparse.Namespace) -> int:
    return sealed.cmd_keygen(args, logged_in_api(args))


def cmd_download(args: argparse.Namespace) -> int:
    if links.is_link(args.id):
        return links.cmd_download_link(args)
    api = logged_in_api(args)
    if args.output is not None and not Path(args.output).is_dir():
        refuse_existing(Path(args.output), args.force)  # before any transfer
    if args.decrypt:
        target = download_plaintext(api, args.id, args.output, args.force, args.identity)
    else:
        target = download_ciphertext(api, args.id, args.output, args.force)
    print(target)
    return EXIT_OK


def download_ciphertext(api: Api, file_id: str, output: str | None, force: bool) -> Path:
    with api.exchange("GET", file_path(file_id)) as response:
        # Only the owner may read the name through /info; the download names the file for anyone.
        name = safe_filename(disposition_filename(response.getheader("Content-Disposition")))
        target = output_path(output, name or f"{safe_filename(file_id) or 'file'}.enc")
        with (
            atomic_output(target, force=force) as sink,
            progress(content_length(response), target.name) as bar,
        ):
            for block in counted(api.blocks(response), bar):
                sink.write(block)
    return target


def download_plaintext(
    api: Api, file_id: str, output: str | None, force: bool, identity: str | None = None
) -> Path:
    """Download the ciphertext and decrypt it here while it arrives, with the owner's key."""
    info = api.call("GET", file_path(file_id, "/info"))  # 404 unless the file is ours
    key = parse_key(fetch_key(api, file_id, identity))
    default = safe_filename(info.get("name")) or safe_filename(file_id) or "file"
    target = output_path(output, default)
    refuse_existing(target, force)  # fail before the transfer, not after it
    with (
        api.exchange("GET", file_path(file_id)) as response,
        atomic_output(target, force=force) as sink,
        progress(content_length(response), target.name) as bar,
    ):
        decrypt_into(key, counted(api.blocks(response), bar), sink)
    return target


def cmd_decrypt(args: argparse.Namespace) -> int:
    """Decrypt a downloaded ciphertext offline: no server, no token."""
    key = read_key_file(args.key_file) if args.key_file else parse_key(args.key)
    source = Path(args.file)
    default = source.name.removesuffix(".enc") if source.suffix == ".enc" else source.name + ".dec"
    target = output_path(args.output, default)
    with open(source, "rb") as ciphertext:
        total = os.fstat(ciphertext.fileno()).st_size
        with atomic_output(target, force=args.force) as sink, progress(total, source.name) as bar:
            decrypt_into(key, file_blocks(ciphertext, bar), sink)
    print(target)
    return EXIT_OK


# -- blocks, keys and decryption ------------------------------------------------------------------------


def file_blocks(source: BinaryIO, bar: Progress) -> Iterator[bytes]:
    while block := source.read(BLOCK):
        bar.update(len(block))
        yield block


def counted(blocks: Iterable[bytes], bar: Progress) -> Iterator[bytes]:
    for block in blocks:
        bar.update(len(block))
        yield block


def parse_key(text: str) -> bytes:
    """A 32-byte file key from base64 (standard or URL-safe, padding and whitespace optional)."""
    from cryptofiles import crypto

    try:
        # Whitespace anywhere: a key pasted from a terminal may be wrapped, a key file ends in \n.
        return crypto.decode_key("".join(text.split()))
    except crypto.KeyFormatError as exc:
        raise CliError(f"the {exc}", EXIT_USAGE) from None


def read_key_file(name: str) -> bytes:
    """The key in a file ('-': stdin) as base64 text, or as the 32 raw bytes."""
    if name == "-":
        raw = sys.stdin.buffer.read(4096)
    else:
        with open(name, "rb") as handle:
            raw = handle.read(4096)
    try:
        return parse_key(raw.decode("ascii"))
    except (UnicodeDecodeError, CliError):
        if len(raw) == KEY_BYTES:  # 32 raw bytes; base64 of a 32-byte key is 44 characters
            return raw
        raise CliError(f"{name}: expected a key in base64 (or 32 raw bytes)", EXIT_USAGE) from None


def decrypt_into(key: bytes, ciphertext: Iterable[bytes], sink: BinaryIO) -> None:
    """Decrypt a ciphertext stream into ``sink``, segment by segment; exit 8 if it is rejected."""
    from cryptofiles import crypto

    try:
        for plain in crypto.decrypt_stream(key, ciphertext):
            sink.write(plain)
    except crypto.DecryptionError as exc:
        raise CliError(f"decryption failed: {exc}", EXIT_DECRYPT) from None
