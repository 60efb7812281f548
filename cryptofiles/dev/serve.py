"""The local launcher behind ``make run``: secrets, database, then the production WSGI server.

1. Settings come from the environment over ``.env``. ``SECRET_KEY`` and ``MASTER_KEYS`` missing from
   both are generated once into ``var/secrets.env`` (git-ignored, mode 0600) and reused afterwards.
2. Without ``MONGODB_URI`` a local server is started (``cryptofiles.dev.database``) with its data in
   ``var/db``, and stopped when this launcher stops.
3. gunicorn serves ``create_app()`` with threaded workers until interrupted.

In production, run gunicorn yourself with the same options (see README) and real secrets.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from cryptofiles.config import ConfigError, Settings, configured_values, read_env_file
from cryptofiles.crypto import KeyRing
from cryptofiles.dev.database import (
    DatabaseStartError,
    LocalDatabase,
    NoDatabaseServer,
    die_with_parent,
)
from cryptofiles.web.logs import configure_logging

log = logging.getLogger("cryptofiles.dev.serve")

GENERATED_SECRETS = {
    "SECRET_KEY": lambda: secrets.token_urlsafe(48),
    "MASTER_KEYS": lambda: KeyRing.generate_entry("local1"),
}


def var_dir() -> Path:
    return Path(os.environ.get("CRYPTOFILES_VAR_DIR", "var")).resolve()


def ensure_secrets(values: Mapping[str, str], secrets_file: Path) -> dict[str, str]:
    """``values`` with every missing secret taken from, or first generated into, ``secrets_file``."""
    result = dict(values)
    missing = [name for name in GENERATED_SECRETS if not result.get(name)]
    if not missing:
        return result
    stored = read_env_file(secrets_file)
    new = {name: GENERATED_SECRETS[name]() for name in missing if name not in stored}
    if new:
        secrets_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(secrets_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as out:
            out.writelines(f"{name}={value}\n" for name, value in new.items())
        os.chmod(secrets_file, 0o600)
        log.warning(
            "Generated %s into %s (mode 0600). Keep that file: without its MASTER_KEYS the stored "
            "files cannot be decrypted.", ", ".join(new), secrets_file,
        )  # fmt: skip
    result.update({name: stored.get(name) or new[name] for name in missing})
    return result


def gunicorn_command(settings: Settings) -> list[str]:
    return [
        # gevent's own launcher patches the standard library before gunicorn imports ssl and
        # threading; patched only in the worker, after the fork, gevent warns that modules imported
        # earlier stay unpatched.
        sys.executable, "-m", "gevent.monkey", "--module", "gunicorn",
        "--bind", f"{settings.host}:{settings.port}",
        # An event loop per worker, not a thread per connection: a client that sends its request a
        # byte at a time (or not at all) then holds a few KiB of memory, not one of a handful of
        # threads. Uploads still stream through constant memory; the CPU-heavy work (AES-GCM on a
        # segment, socket copies) runs in C, and password hashing runs in a native thread pool.
        "--worker-class", "gevent",
        "--workers", str(settings.web_workers),
        "--worker-connections", str(settings.web_connections),
        # The gevent worker bounds the read of every request head (line and headers, and the idle
        # wait before a kept-alive connection's next request) by this many seconds; the app bounds
        # idle time inside a request (see app.limit_idle_time).
        "--keep-alive", str(settings.header_timeout_seconds),
        # The seed's header names contain underscores (New_User_Name), which gunicorn drops by
        # default. "dangerous" keeps every underscore header through parsing; the pre_request hook
        # in gunicorn_conf.py then lets through only the seed's four and drops the rest, so that no
        # client header can become SCRIPT_NAME, HTTP_TRANSFER_ENCODING or the like.
        "--header-map", "dangerous",
        "--timeout", "120",
        "--graceful-timeout", "30",
        # No control socket: it would be one more local interface, shared by every run on the host.
        "--no-control-socket",
        # Server hooks only (metrics of dead workers); all options stay on this command line.
        "--config", "python:cryptofiles.gunicorn_conf",
        "--log-level", settings.log_level.lower(),
        "cryptofiles.web:create_app()",
    ]  # fmt: skip


def main() -> int:
    configure_logging("INFO")
    values = ensure_secrets(configured_values(), var_dir() / "secrets.env")
    database: LocalDatabase | None = None
    try:
        if not values.get("MONGODB_URI"):
            database = LocalDatabase(var_dir() / "db")
            values["MONGODB_URI"] = database.start()
            log.info("Started a local database at %s (data in %s)", database.uri, database.data_dir)
        settings = Settings.from_mapping(values)
        # Workers write their metrics here and /metrics adds them up (see gunicorn_conf.py).
        values.setdefault("PROMETHEUS_MULTIPROC_DIR", str(var_dir() / "metrics"))
        log.info("Serving on http://%s:%d", settings.host, settings.port)
        # gunicorn in a process group of its own: Ctrl-C reaches only this launcher, which asks
        # for a graceful stop (SIGTERM). gevent workers that get the terminal's SIGINT themselves
        # quit at once, and pymongo's exit handlers then fail noisily in the greenlet.
        server = subprocess.Popen(
            gunicorn_command(settings),
            env={**os.environ, **values},
            preexec_fn=die_with_parent,
            process_group=0,
        )
        signal.signal(signal.SIGTERM, lambda *_: server.terminate())
        try:
            return server.wait()
        except KeyboardInterrupt:
            server.terminate()
            return server.wait()
    except (ConfigError, NoDatabaseServer, DatabaseStartError) as exc:
        print(f"Cannot start: {exc}", file=sys.stderr)
        return 2
    finally:
        if database is not None:
            database.stop()


if __name__ == "__main__":
    sys.exit(main())
