"""The command line: the argument parser, and ``main()``, which runs one command and turns its
failure into one line on stderr and the exit status listed in ``cryptofiles.cli``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptofiles import __version__
from cryptofiles.cli import EXIT_ERROR, EXIT_SIGINT, CliError, client, links
from cryptofiles.cli.terminal import PASSWORD_ENV, describe
from cryptofiles.cli.transport import DEFAULT_URL, URL_ENV


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cryptofiles",
        description="Client of a crypto-files-server, and its admin tasks.",
        epilog="Exit status: 0 ok, 1 error, 2 usage, 3 unreachable, 4 not logged in, "
        "5 no such file, 6 too large, 7 interrupted transfer, 8 decryption failed.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--server", help=f"server URL (default: ${URL_ENV}, else {DEFAULT_URL})", metavar="URL"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_account_commands(commands)
    add_file_commands(commands)
    add_admin_commands(commands)
    return parser


def password_options() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--password-stdin",
        action="store_true",
        help=f"read the password from the first line of stdin (else ${PASSWORD_ENV}, else a "
        "prompt); never give it as an argument",
    )
    return options


def add_account_commands(commands: Any) -> None:
    pw = password_options()
    cmd = commands.add_parser("register", parents=[pw], help="create an account")
    cmd.add_argument("name")
    cmd.set_defaults(handler=client.cmd_register)
    cmd = commands.add_parser("login", parents=[pw], help="log in and store the token")
    cmd.add_argument("name")
    cmd.set_defaults(handler=client.cmd_login)
    cmd = commands.add_parser("logout", help="revoke the stored token and forget it")
    cmd.set_defaults(handler=client.cmd_logout)
    cmd = commands.add_parser("whoami", help="the name the stored token speaks for")
    cmd.set_defaults(handler=client.cmd_whoami)
    cmd = commands.add_parser(
        "keygen", help="make an age identity and have the server seal keys to it"
    )
    cmd.add_argument(
        "--out", metavar="FILE", help="where to write it (default: identity.txt beside the token)"
    )
    cmd.add_argument(
        "--require-sealed", action="store_true", help="also refuse plain key answers from now on"
    )
    cmd.set_defaults(handler=client.cmd_keygen)


def identity_option(cmd: Any) -> None:
    cmd.add_argument(
        "--identity",
        metavar="FILE",
        help="age identity file that opens sealed keys (default: the one keygen wrote)",
    )


def add_file_commands(commands: Any) -> None:
    cmd = commands.add_parser("upload", help="upload files; prints one id per line")
    cmd.add_argument("files", nargs="+", metavar="FILE")
    cmd.add_argument(
        "--resume",
        action="store_true",
        help="upload resumably (tus): a cut transfer is retried, and running the same command "
        "again continues an interrupted upload where the server stopped",
    )
    cmd.set_defaults(handler=client.cmd_upload)
    cmd = commands.add_parser("ls", help="list your files: id, size, created, name")
    cmd.add_argument("--json", action="store_true", help="print the list as JSON")
    cmd.add_argument(
        "--page-size", type=page_size, default=client.DEFAULT_PAGE_SIZE, help="per request"
    )
    cmd.set_defaults(handler=client.cmd_ls)
    cmd = commands.add_parser("info", help="a file's metadata, as JSON")
    cmd.add_argument("id")
    cmd.set_defaults(handler=client.cmd_info)
    cmd = commands.add_parser("rm", help="delete files")
    cmd.add_argument("ids", nargs="+", metavar="ID")
    cmd.set_defaults(handler=client.cmd_rm)
    cmd = commands.add_parser("events", help="a file's access history, newest first; owner only")
    cmd.add_argument("id")
    cmd.add_argument("--json", action="store_true", help="print the events as JSON")
    cmd.add_argument(
        "--page-size", type=page_size, default=client.DEFAULT_PAGE_SIZE, help="per request"
    )
    cmd.set_defaults(handler=client.cmd_events)
    cmd = commands.add_parser("key", help="print a file's key (base64): yours, or granted to you")
    cmd.add_argument("id")
    identity_option(cmd)
    cmd.set_defaults(handler=client.cmd_key)
    cmd = commands.add_parser(
        "download",
        help="download a file's ciphertext, or with --decrypt its content; or download through "
        "a share link (no login), decrypted when the link holds its key (#k=...)",
    )
    cmd.add_argument("id", metavar="ID|LINK")
    cmd.add_argument(
        "-o",
        "--output",
        metavar="PATH",
        help="output file or folder (default: <name>.enc here, or with --decrypt the original name)",
    )
    cmd.add_argument("--decrypt", action="store_true", help="decrypt here while downloading")
    identity_option(cmd)
    cmd.add_argument("--force", action="store_true", help="replace an existing output file")
    cmd.set_defaults(handler=client.cmd_download)
    cmd = commands.add_parser(
        "link", help="create a share link to a file; prints it with the key in its #k= fragment"
    )
    cmd.add_argument("id")
    cmd.add_argument(
        "--expires", type=links.expiry, help="a duration (30m, 12h, 7d) or an ISO 8601 time"
    )
    cmd.add_argument("--max-downloads", type=max_downloads, metavar="N", help="1 to 10000")
    cmd.set_defaults(handler=links.cmd_link)
    cmd = commands.add_parser("decrypt", help="decrypt a downloaded ciphertext, offline")
    cmd.add_argument("file", metavar="FILE")
    keys = cmd.add_mutually_exclusive_group(required=True)
    keys.add_argument("--key", help="the key in base64 (visible in `ps`: prefer --key-file)")
    keys.add_argument("--key-file", metavar="F", help="file holding the key ('-': stdin)")
    cmd.add_argument("-o", "--output", metavar="PATH", help="default: its name without .enc, here")
    cmd.add_argument("--force", action="store_true", help="replace an existing output file")
    cmd.set_defaults(handler=client.cmd_decrypt)


def add_admin_commands(commands: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--secrets-file",
        type=Path,
        help="the launcher's secrets, used for SECRET_KEY/MASTER_KEYS missing from the "
        "environment (default: $CRYPTOFILES_VAR_DIR/secrets.env, else var/secrets.env)",
    )
    admin = commands.add_parser("admin", help="maintenance on the database (no HTTP)")
    tasks = admin.add_subparsers(dest="task", required=True, metavar="TASK")
    tasks.add_parser("init-db", parents=[common], help="create the indexes")
    tasks.add_parser("sweep", parents=[common], help="remove upload leftovers and orphans")
    cmd = tasks.add_parser(
        "rotate-master-key", parents=[common], help="re-wrap every file key under a new master key"
    )
    cmd.add_argument(
        "--key-id", help="id of the new key (default: k<UTC date>; a re-run finishes that rotation)"
    )
    cmd = tasks.add_parser(
        "create-user", parents=[common, password_options()], help="create an account"
    )
    cmd.add_argument("name")


def page_size(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= client.MAX_PAGE_SIZE:
        raise argparse.ArgumentTypeError(f"must be an integer from 1 to {client.MAX_PAGE_SIZE}")
    return int(text)


def max_downloads(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= links.MAX_DOWNLOADS:
        raise argparse.ArgumentTypeError(f"must be an integer from 1 to {links.MAX_DOWNLOADS}")
    return int(text)


def command_handler(args: argparse.Namespace) -> Callable[[argparse.Namespace], int]:
    """The function that runs the parsed command (an admin task's is looked up in ``admin``)."""
    if args.command != "admin":
        handler: Callable[[argparse.Namespace], int] = args.handler
        return handler
    # Imported only when an admin task runs: the admin module imports the server's services
    # (pymongo, Flask, the configuration, ...), some 200 ms of imports (`python -X importtime`)
    # that would otherwise delay every client command, none of which needs them.
    from cryptofiles.cli import admin

    return admin.prepare(args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = command_handler(args)
    try:
        return int(handler(args))
    except CliError as exc:
        print(f"cryptofiles: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("cryptofiles: interrupted", file=sys.stderr)
        return EXIT_SIGINT
    except BrokenPipeError:
        # Whoever read our output stopped (`cryptofiles ls | head`): nothing to report. Point
        # stdout at /dev/null so that the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    except OSError as exc:  # local files: missing input, unwritable folder, full disk...
        where = f": {exc.filename}" if exc.filename else ""
        print(f"cryptofiles: {describe(exc)}{where}", file=sys.stderr)
        return EXIT_ERROR
