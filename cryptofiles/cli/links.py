"""Share links from the command line: ``link`` creates one and prints it with the file's key in its
fragment; ``download LINK`` downloads through one, with no account, and decrypts here.

A link is ``<server>/s/<token>#k=<key in base64url>``. The server stores neither the key nor the
token (only the token's hash); the fragment is never sent to it, by a browser or by this client.
"""

from __future__ import annotations

import argparse
import base64
import re
import sys
import urllib.parse
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptofiles.cli import EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE, CliError
from cryptofiles.cli.output import (
    atomic_output,
    disposition_filename,
    output_path,
    refuse_existing,
    safe_filename,
)
from cryptofiles.cli.transport import Api, ServerUrl, content_length, file_path

DURATION_RE = re.compile(r"([0-9]{1,5})([mhd])")
UNITS = {"m": "minutes", "h": "hours", "d": "days"}
MAX_DOWNLOADS = 10_000  # the server's limit
DEAD_LINK = "no such link: it expired, was revoked or its downloads are used up"


def expiry(text: str) -> str:
    """``--expires``: a duration from now (``30m``, ``12h``, ``7d``) or an ISO 8601 time; as ISO."""
    match = DURATION_RE.fullmatch(text.strip())
    if match:
        when = datetime.now(UTC) + timedelta(**{UNITS[match[2]]: int(match[1])})
        return when.isoformat(timespec="seconds")
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            "use a duration (30m, 12h, 7d) or an ISO 8601 time"
        ) from None
    if when.tzinfo is None:
        raise argparse.ArgumentTypeError("an ISO 8601 time needs its time zone (a final Z)")
    return when.isoformat()


def is_link(text: str) -> bool:
    """Whether a ``download`` argument is a share link rather than a file id."""
    parts = urllib.parse.urlsplit(text)
    return parts.scheme in ("http", "https") and "/s/" in parts.path


def cmd_link(args: argparse.Namespace) -> int:
    from cryptofiles.cli.client import fetch_key, logged_in_api

    api = logged_in_api(args)
    # The key first: if it cannot be had, no link is left behind.
    key = base64.b64decode(fetch_key(api, args.id))
    settings: dict[str, object] = {}
    if args.expires is not None:
        settings["expires_at"] = args.expires
    if args.max_downloads is not None:
        settings["max_downloads"] = args.max_downloads
    link = api.call("POST", file_path(args.id, "/links"), json_body=settings)
    fragment = base64.urlsafe_b64encode(key).decode().rstrip("=")
    limit = link.get("max_downloads") or "unlimited"
    print(f"expires {link.get('expires_at')}, downloads: {limit}", file=sys.stderr)
    print(f"{link['url']}#k={fragment}")  # printing the link, key included, is the purpose
    return EXIT_OK


def parse_link(text: str) -> tuple[ServerUrl, str, str | None]:
    """The server, the token and the key text (None without a ``#k=`` fragment) of a link."""
    parts = urllib.parse.urlsplit(text.strip())
    prefix, _, token = parts.path.rpartition("/s/")
    if not token or "/" in token:
        raise CliError("a share link looks like https://server/s/TOKEN#k=KEY", EXIT_USAGE)
    server = ServerUrl.parse(urllib.parse.urlunsplit((parts.scheme, parts.netloc, prefix, "", "")))
    keys = urllib.parse.parse_qs(parts.fragment).get("k")
    return server, urllib.parse.unquote(token), keys[0] if keys else None


def cmd_download_link(args: argparse.Namespace) -> int:
    from cryptofiles.cli.client import counted, decrypt_into, parse_key
    from cryptofiles.cli.terminal import progress

    server, token, key_text = parse_link(args.id)
    key = parse_key(key_text) if key_text is not None else None  # before the download counts
    if args.output is not None and not Path(args.output).is_dir():
        refuse_existing(Path(args.output), args.force)
    api = Api(server)  # no token: the link is the credential
    path = f"/s/{urllib.parse.quote(token, safe='')}/file"
    try:
        with api.exchange("GET", path) as response:
            name = safe_filename(disposition_filename(response.getheader("Content-Disposition")))
            name = name or "shared-file.enc"
            default = name.removesuffix(".enc") if key is not None else name
            target = output_path(args.output, default)
            with (
                atomic_output(target, force=args.force) as sink,
                progress(content_length(response), target.name) as bar,
            ):
                blocks = counted(api.blocks(response), bar)
                if key is None:
                    for block in blocks:
                        sink.write(block)
                else:
                    decrypt_into(key, blocks, sink)
    except CliError as exc:
        if exc.exit_code == EXIT_NOT_FOUND:  # the server's message names the token: not repeated
            raise CliError(DEAD_LINK, EXIT_NOT_FOUND) from None
        raise
    if key is None:
        print(
            "cryptofiles: the link has no key (#k=...): saved the encrypted file; decrypt it "
            "with `cryptofiles decrypt FILE --key-file KEYFILE`",
            file=sys.stderr,
        )
    print(target)
    return EXIT_OK
