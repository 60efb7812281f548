"""The ``admin`` tasks: maintenance on the server's database, without HTTP.

They run the server's own services (``services.build_services``) with the server's configuration:
the environment, ``.env``, and the launcher's secrets file (``var/secrets.env``) for secrets missing
from both. Database failures become ``CliError``: unreachable (3), anything else (1).

This module imports the server side (config, services, storage, crypto); ``main`` imports it only
when an admin task runs, so the client commands never load it.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import sys
import urllib.parse
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from cryptofiles.cli import EXIT_ERROR, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, CliError
from cryptofiles.cli.output import write_private_file
from cryptofiles.cli.terminal import read_password
from cryptofiles.config import ConfigError, Settings, configured_values, read_env_file
from cryptofiles.crypto import KeyRing, KeyRingError
from cryptofiles.dev.serve import var_dir
from cryptofiles.files import RewrapReport
from cryptofiles.services import Services, build_services, open_storage
from cryptofiles.storage import DatabaseUnavailable, NameTaken, StorageError

SECRET_NAMES = ("SECRET_KEY", "MASTER_KEYS")
NO_DATABASE = (
    "MONGODB_URI is not set: admin commands work on the database directly, so point it at the "
    "server's database. The local launcher's database (`make run`) lives only while it runs; its "
    "URI is in the launcher's log at start-up: 'Started a local database at mongodb://...'."
)
MASTER_KEYS_LINE = re.compile(r"^\s*(?:export\s+)?MASTER_KEYS\s*=")


def admin_settings(secrets_file: Path) -> Settings:
    """The server's settings; secrets missing from the configuration come from the launcher's
    secrets file, which is never created or extended here (a new MASTER_KEYS would not open
    anything stored)."""
    values = configured_values()
    if not values.get("MONGODB_URI", "").strip():
        raise CliError(NO_DATABASE, EXIT_USAGE)
    stored = read_env_file(secrets_file)
    for name in SECRET_NAMES:
        if not values.get(name, "").strip() and name in stored:
            values[name] = stored[name]
    try:
        return Settings.from_mapping(values)
    except ConfigError as exc:
        raise CliError(f"{exc} (nor found in {secrets_file})", EXIT_USAGE) from None


def redacted(uri: str) -> str:
    """A database URI without its credentials, to name it in messages."""
    parts = urllib.parse.urlsplit(uri)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


@contextlib.contextmanager
def open_services(settings: Settings) -> Iterator[Services]:
    """The server's own services (``services.build_services``), with database errors as CliError."""
    storage = open_storage(settings)
    try:
        yield build_services(settings, storage=storage)
    except DatabaseUnavailable:
        raise CliError(
            f"cannot reach the database at {redacted(settings.mongodb_uri)}", EXIT_UNREACHABLE
        ) from None
    except StorageError as exc:
        raise CliError(f"database error: {exc}") from None
    finally:
        storage.close()


def cmd_init_db(args: argparse.Namespace) -> int:
    settings = admin_settings(args.secrets_file)
    with open_services(settings) as services:  # building them ensures the indexes
        revocations = (
            "TTL" if services.storage.ttl_supported else "plain; the server purges expired rows"
        )
    print(f"Database {settings.mongodb_db!r} at {redacted(settings.mongodb_uri)}: indexes ensured")
    print("  users: unique_name, unique_public_id")
    print(f"  revoked_tokens: expires_at ({revocations})")
    print("  files: files_by_owner, files_by_status, files_by_expiry")
    print("  ciphertext.chunks: files_id_1_n_1 (unique)")
    print("  usage: usage_by_owner, usage_retired")
    print("  links: links_by_token, links_by_file, links_by_expiry")
    return EXIT_OK


def cmd_sweep(args: argparse.Namespace) -> int:
    settings = admin_settings(args.secrets_file)
    with open_services(settings) as services:
        report = services.files.sweep(orphans=True, usage=True)
        links = services.links.sweep()
        expired_uploads = services.uploads.sweep()
    print(
        f"Swept: unfinished={report.unfinished} orphans={report.orphans}"
        f" ownerless={report.ownerless} usage_repaired={len(report.usage)} links={links}"
        f" expired_uploads={expired_uploads}"
    )
    for repair in report.usage:
        print(f"  usage of user {repair.owner}: {repair.recorded} -> {repair.stored} bytes")
    return EXIT_OK


def cmd_create_user(args: argparse.Namespace) -> int:
    from cryptofiles.accounts import InvalidAccountData

    password = read_password(args, confirm=True)
    settings = admin_settings(args.secrets_file)
    # Building the services ensures the unique name index, which is what makes names unique.
    with open_services(settings) as services:
        try:
            user = services.accounts.register(args.name, password)
        except InvalidAccountData as exc:
            raise CliError(str(exc)) from None
        except NameTaken:
            raise CliError(f"the user name {args.name!r} is already taken") from None
    print(f"Created user {user.name} ({user.public_id})")
    return EXIT_OK


def cmd_rotate(args: argparse.Namespace) -> int:
    """Re-wrap every file key under a new master key (file contents are untouched).

    Where the key ring lives decides what is done. In the launcher's secrets file: a new key is
    put first there (saved before anything is wrapped under it), then keys are re-wrapped. In
    the environment (or .env): nothing is edited, keys are re-wrapped under its first key.
    """
    if configured_values().get("MASTER_KEYS", "").strip():
        return rotate_configured_ring(args)
    return rotate_secrets_file_ring(args)


def rotate_configured_ring(args: argparse.Namespace) -> int:
    if args.key_id:
        raise CliError("--key-id applies only to a key ring kept in the secrets file", EXIT_USAGE)
    settings = admin_settings(args.secrets_file)
    with open_services(settings) as services:
        report = services.files.rewrap_all()
    print_rewrap(report, settings.master_keys.active_id)
    print(
        "MASTER_KEYS comes from the environment, so nothing was edited. To add a key, put a new "
        "entry first in MASTER_KEYS (keep the old ones after it), restart the server, and run "
        "this command again."
    )
    return EXIT_ERROR if report.failed else EXIT_OK


def rotate_secrets_file_ring(args: argparse.Namespace) -> int:
    secrets_file: Path = args.secrets_file
    current = read_env_file(secrets_file).get("MASTER_KEYS")
    if not current:
        raise CliError(
            f"MASTER_KEYS is neither in the environment nor in {secrets_file}: nothing to rotate",
            EXIT_USAGE,
        )
    settings = admin_settings(secrets_file)
    # A default id per UTC day makes a re-run (after an interruption, or after the server's
    # restart) finish the same rotation instead of adding yet another key.
    new_id = args.key_id or "k" + datetime.now(UTC).strftime("%Y%m%d")
    with open_services(settings) as services:
        services.storage.ping()  # no new key while the database cannot be re-wrapped anyway
        added = add_master_key(secrets_file, settings, new_id, current)
        # Wrap under what the file now holds, so no key is ever wrapped under an unsaved master.
        settings = admin_settings(secrets_file)
        report = build_services(settings, storage=services.storage).files.rewrap_all()
    print_rewrap(report, new_id)
    if added or report.rewrapped:
        print(
            "Restart the server now: it read the key ring at start-up, so until then it cannot "
            f"unwrap keys re-wrapped under {new_id}, and it wraps new files under the old key. "
            f"After the restart, run `cryptofiles admin rotate-master-key --key-id {new_id}` to "
            "re-wrap those. Old keys stay in the ring: backups made before now need them."
        )
    return EXIT_ERROR if report.failed else EXIT_OK


def add_master_key(secrets_file: Path, settings: Settings, new_id: str, current: str) -> bool:
    """Put a new key ``new_id`` first in the file's ring; False if it is the active one already."""
    ring = settings.master_keys
    if new_id == ring.active_id:
        print(f"{new_id} is already the active master key: re-wrapping only", file=sys.stderr)
        return False
    if new_id in ring.ids():
        raise CliError(f"{new_id!r} is an older key of the ring: pick a new --key-id", EXIT_USAGE)
    try:
        entry = KeyRing.generate_entry(new_id)
    except KeyRingError as exc:
        raise CliError(f"--key-id: {exc}", EXIT_USAGE) from None
    prepend_master_key(secrets_file, entry, current)
    print(f"Added master key {new_id} first in MASTER_KEYS in {secrets_file}")
    return True


def prepend_master_key(secrets_file: Path, entry: str, current: str) -> None:
    """Put ``entry`` first in the file's MASTER_KEYS line; the rest of the file is kept as is."""
    lines = secrets_file.read_text(encoding="utf-8").splitlines(keepends=True)
    hits = [n for n, line in enumerate(lines) if MASTER_KEYS_LINE.match(line)]
    if len(hits) != 1:
        raise CliError(f"{secrets_file} should hold exactly one MASTER_KEYS line", EXIT_USAGE)
    lines[hits[0]] = f"MASTER_KEYS={entry},{current}\n"
    write_private_file(secrets_file, "".join(lines))


def print_rewrap(report: RewrapReport, active_id: str) -> None:
    print(
        f"Re-wrapped under {active_id}: rewrapped={report.rewrapped} skipped={report.skipped} "
        f"failed={report.failed}"
    )
    if report.failed:
        print("Some keys could not be unwrapped (see above); they were left as they are.")


# The task names are the parser's (``main.add_admin_commands``), which cannot name these
# functions without importing this module.
TASKS: dict[str, Callable[[argparse.Namespace], int]] = {
    "init-db": cmd_init_db,
    "sweep": cmd_sweep,
    "rotate-master-key": cmd_rotate,
    "create-user": cmd_create_user,
}


def prepare(args: argparse.Namespace) -> Callable[[argparse.Namespace], int]:
    """The handler of ``args.task``, once what every task needs is in place."""
    if args.secrets_file is None:
        args.secrets_file = var_dir() / "secrets.env"  # the launcher's rule, not a copy of it
    # The services log what they skip or fail (e.g. a key that does not unwrap): show it.
    logging.basicConfig(level=logging.WARNING, format="cryptofiles: %(message)s")
    return TASKS[args.task]
