"""Sealed keys on this machine: ``cryptofiles keygen`` and opening a key the server sealed.

``keygen`` makes an X25519 age identity, writes it in age's identity file format (the
``# created:`` and ``# public key:`` comments, then ``AGE-SECRET-KEY-1...``; mode 0600, never over an
existing file) and adds its recipient to the account, so the server seals every key answer to it
from then on. ``key`` and ``download --decrypt`` then open sealed answers with that file (or any
age identity file given with ``--identity``, e.g. one made by the stock ``age-keygen``).

The cryptography is ``cryptofiles.crypto``'s (age through pyrage), imported inside the functions
that need it, as in ``client``.
"""

from __future__ import annotations

import argparse
import base64
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptofiles.cli import EXIT_DECRYPT, EXIT_OK, EXIT_USAGE, CliError
from cryptofiles.cli.output import atomic_output
from cryptofiles.cli.transport import Api, config_dir

IDENTITY_NAME = "identity.txt"
MAX_IDENTITY_BYTES = 64 * 1024


def default_identity() -> Path:
    """Beside the token store: ``~/.config/cryptofiles/identity.txt``."""
    return config_dir() / IDENTITY_NAME


def cmd_keygen(args: argparse.Namespace, api: Api) -> int:
    from cryptofiles import crypto

    target = Path(args.out) if args.out else default_identity()
    account = api.call("GET", "/account")
    recipients = account.get("recipients")
    if not isinstance(recipients, list):
        raise CliError("the server's account answer holds no recipient list")
    identity = crypto.new_identity()
    if target.parent == config_dir():
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with atomic_output(target, force=False) as sink:  # 0600; refuses an existing file
        sink.write(identity_file_text(identity.secret, identity.recipient).encode())
    body: dict[str, Any] = {"recipients": [*recipients, identity.recipient]}
    if args.require_sealed:
        body["require_sealed"] = True
    try:
        api.call("PUT", "/account/recipients", json_body=body)
    except CliError as exc:
        raise CliError(
            f"the identity is in {target}, but registering its recipient failed: {exc.message}",
            exc.exit_code,
        ) from None
    print(identity.recipient)
    print(f"Identity written to {target}; keys are now sealed to it.", file=sys.stderr)
    return EXIT_OK


def identity_file_text(secret: str, recipient: str) -> str:
    created = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    return f"# created: {created}\n# public key: {recipient}\n{secret}\n"


def open_key_answer(doc: dict[str, Any], identity: str | None) -> str:
    """The key in base64 from a key answer: as it is when plain, opened here when sealed."""
    sealed = doc.get("sealed")
    if sealed is None:
        key = doc.get("key")
        if not isinstance(key, str):
            raise CliError("the server's key answer holds no key")
        return key
    if not isinstance(sealed, str):
        raise CliError("the server's sealed key answer is malformed")
    from cryptofiles import crypto

    try:
        key = crypto.unseal(sealed.encode("ascii", "replace"), read_identity(identity))
    except crypto.IdentityError as exc:
        raise CliError(f"the identity file is unusable: {exc}", EXIT_USAGE) from None
    except crypto.DecryptionError as exc:
        raise CliError(f"cannot open the sealed key: {exc}", EXIT_DECRYPT) from None
    return base64.b64encode(key).decode()


def read_identity(name: str | None) -> str:
    path = Path(name) if name else default_identity()
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_IDENTITY_BYTES + 1)
    except FileNotFoundError:
        raise CliError(
            f"the key is sealed to your age recipients, and there is no identity at {path}: "
            "give it with --identity FILE (made by `cryptofiles keygen` or `age-keygen`)",
            EXIT_USAGE,
        ) from None
    if len(raw) > MAX_IDENTITY_BYTES:
        raise CliError(f"{path} is too large for an age identity file", EXIT_USAGE)
    return raw.decode("utf-8", "replace")
