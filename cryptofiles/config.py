"""Settings: read once from the environment (and an optional ``.env``), typed and validated.

Every setting the service understands is declared in ``Settings`` below and documented in README's
configuration table. Nothing else in the package reads ``os.environ``: code receives a ``Settings``.
There are no fallback secrets. Without ``SECRET_KEY`` and ``MASTER_KEYS`` the app refuses to start
(``python -m cryptofiles.dev.serve``, behind ``make run``, generates them once into a git-ignored file).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dotenv import dotenv_values
from limits import parse_many

from cryptofiles.crypto import KeyRing, KeyRingError

# RFC 7518 §3.2: an HMAC key must be at least as long as the hash output (32 bytes for HS256).
MIN_SECRET_KEY_BYTES = 32

# OWASP Password Storage Cheat Sheet: scrypt N=2^15, r=8, p=3 (32 MiB, ~0.3 s here) is one of the
# recommended equal-strength settings. In werkzeug's "method:args" notation.
DEFAULT_PASSWORD_HASH = "scrypt:32768:8:3"  # noqa: S105 (a cost setting, not a secret)

GiB = 1 << 30
RATE_LIMITS = (
    "RATE_LIMIT_LOGIN_NAME",
    "RATE_LIMIT_LOGIN_ADDRESS",
    "RATE_LIMIT_REGISTRATION",
    "RATE_LIMIT_KEYS",
    "RATE_LIMIT_LINKS",
)
# Whole-number settings, read by from_mapping with the field's default when unset.
INTEGERS = (
    "PORT",
    "TOKEN_LIFE_MINUTES",
    "MAX_UPLOAD_BYTES",
    "PASSWORD_HASH_CONCURRENCY",
    "PASSWORD_HASH_QUEUE",
    "MONGODB_TIMEOUT_MS",
    "WEB_WORKERS",
    "WEB_CONNECTIONS",
    "HEADER_TIMEOUT_SECONDS",
    "IDLE_TIMEOUT_SECONDS",
    "QUOTA_BYTES",
    "EVENTS_RETENTION_DAYS",
    "UPLOAD_EXPIRY_HOURS",
)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class ConfigError(ValueError):
    """A setting is missing or invalid. The message names the setting, never its secret value."""


# Refuse costs that would fail at the first login (scrypt's own limits) or need over 1 GiB each.
MAX_SCRYPT_MEMORY = 1 << 30


def _write_concern(raw: str) -> str | int:
    return int(raw) if raw.isdigit() else raw


def _check_scrypt_cost(method: str) -> None:
    parts = method.split(":")
    if len(parts) != 4 or parts[0] != "scrypt" or not all(p.isdigit() for p in parts[1:]):
        raise ConfigError("PASSWORD_HASH must look like scrypt:N:r:p with whole numbers")
    n, r, p = (int(x) for x in parts[1:])
    if n < 2 or n & (n - 1) or r < 1 or p < 1 or 128 * n * r * p > MAX_SCRYPT_MEMORY:
        raise ConfigError(
            "PASSWORD_HASH: N must be a power of two, r and p at least 1, using at most 1 GiB"
        )


@dataclasses.dataclass(frozen=True)
class Settings:
    secret_key: str = dataclasses.field(repr=False)
    master_keys: KeyRing = dataclasses.field(repr=False)
    mongodb_uri: str = dataclasses.field(repr=False)  # may carry a password
    mongodb_db: str = "cryptofiles"
    host: str = "127.0.0.1"
    port: int = 5000
    token_life_minutes: int = 30
    log_level: str = "INFO"
    max_upload_bytes: int = 10 * GiB
    password_hash: str = DEFAULT_PASSWORD_HASH
    password_hash_concurrency: int = 2
    # Password checks that may wait for a hashing slot; None: 4 per slot (accounts.DEFAULT_QUEUE_PER_SLOT).
    password_hash_queue: int | None = None
    mongodb_timeout_ms: int = 5000
    mongodb_write_concern: str | int = "majority"
    web_workers: int = 2
    web_connections: int = 1000
    header_timeout_seconds: int = 10
    idle_timeout_seconds: int = 30
    rate_limit_login_name: str = "10/minute"
    rate_limit_login_address: str = "60/minute"
    rate_limit_registration: str = "30/hour"
    rate_limit_keys: str = "600/minute"
    # Requests to the share-link routes per client address (each view counted on its own).
    rate_limit_links: str = "60/minute"
    quota_bytes: int = 50 * GiB
    metrics_token: str | None = dataclasses.field(default=None, repr=False)
    events_retention_days: int = 90
    # Unfinished resumable (tus) uploads expire this long after their creation.
    upload_expiry_hours: int = 24

    def __post_init__(self) -> None:
        if len(self.secret_key.encode()) < MIN_SECRET_KEY_BYTES:
            raise ConfigError(f"SECRET_KEY must be at least {MIN_SECRET_KEY_BYTES} bytes long")
        if not self.mongodb_uri.startswith(("mongodb://", "mongodb+srv://")):
            raise ConfigError("MONGODB_URI must start with mongodb:// or mongodb+srv://")
        if not self.mongodb_db or any(c in self.mongodb_db for c in '/\\. "$'):
            raise ConfigError("MONGODB_DB must be a plain database name")
        if not 0 < self.port < 65536:
            raise ConfigError("PORT must be between 1 and 65535")
        if self.token_life_minutes < 1:
            raise ConfigError("TOKEN_LIFE_MINUTES must be at least 1")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError("LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        if self.max_upload_bytes < 1:
            raise ConfigError("MAX_UPLOAD_BYTES must be positive")
        _check_scrypt_cost(self.password_hash)
        if self.password_hash_concurrency < 1:
            raise ConfigError("PASSWORD_HASH_CONCURRENCY must be at least 1")
        if self.password_hash_queue is not None and self.password_hash_queue < 0:
            raise ConfigError("PASSWORD_HASH_QUEUE must be 0 or more")
        if self.mongodb_write_concern != "majority" and not (
            isinstance(self.mongodb_write_concern, int) and self.mongodb_write_concern >= 1
        ):
            raise ConfigError("MONGODB_WRITE_CONCERN must be majority or a number of nodes >= 1")
        if self.mongodb_timeout_ms < 100:
            raise ConfigError("MONGODB_TIMEOUT_MS must be at least 100")
        for name in RATE_LIMITS:
            try:
                parse_many(getattr(self, name.lower()))
            except ValueError:
                raise ConfigError(f"{name} must look like 10/minute or 100 per hour") from None
        if self.metrics_token is not None and len(self.metrics_token) < 16:
            raise ConfigError("METRICS_TOKEN must be at least 16 characters")
        if self.quota_bytes < 1:
            raise ConfigError("QUOTA_BYTES must be positive")
        if not 1 <= self.events_retention_days <= 36500:
            raise ConfigError("EVENTS_RETENTION_DAYS must be from 1 to 36500")
        if not 1 <= self.upload_expiry_hours <= 24 * 365:
            raise ConfigError("UPLOAD_EXPIRY_HOURS must be from 1 to 8760")
        if self.web_workers < 1 or self.web_connections < 1:
            raise ConfigError("WEB_WORKERS and WEB_CONNECTIONS must be at least 1")
        if self.header_timeout_seconds < 1 or self.idle_timeout_seconds < 1:
            raise ConfigError("HEADER_TIMEOUT_SECONDS and IDLE_TIMEOUT_SECONDS must be at least 1")

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, env_file: str | Path | None = ".env"
    ) -> Settings:
        """Settings from ``environ`` (default: the process environment) over ``env_file``."""
        return cls.from_mapping(configured_values(environ, env_file))

    @classmethod
    def from_mapping(cls, values: Mapping[str, str]) -> Settings:
        """Settings from ``values`` (names as in README's table); an unset or blank setting takes
        the default declared on the field above, the one place defaults are written."""

        def given(name: str) -> str:
            return values.get(name, "").strip()

        def required(name: str, hint: str) -> str:
            if not (value := given(name)):
                raise ConfigError(f"{name} is not set: {hint}")
            return value

        def text(name: str) -> Any:
            return given(name) or getattr(cls, name.lower())

        def integer(name: str) -> Any:
            if not (raw := given(name)):
                return getattr(cls, name.lower())
            try:
                return int(raw)
            except ValueError:
                raise ConfigError(f"{name} must be an integer") from None

        try:
            key_ring = KeyRing.parse(
                required("MASTER_KEYS", "expected id:base64key[,id:base64key...]")
            )
        except KeyRingError as exc:
            raise ConfigError(f"MASTER_KEYS: {exc}") from None
        return cls(
            secret_key=required("SECRET_KEY", "set a random string of at least 32 bytes"),
            master_keys=key_ring,
            mongodb_uri=required(
                "MONGODB_URI", "point it at MongoDB, or start the app with `make run`"
            ),
            mongodb_db=text("MONGODB_DB"),
            host=text("HOST"),
            log_level=text("LOG_LEVEL").upper(),
            password_hash=text("PASSWORD_HASH"),
            mongodb_write_concern=_write_concern(text("MONGODB_WRITE_CONCERN")),
            metrics_token=text("METRICS_TOKEN"),
            **{name.lower(): text(name) for name in RATE_LIMITS},
            **{name.lower(): integer(name) for name in INTEGERS},
        )


def read_env_file(path: str | Path) -> dict[str, str]:
    """The values a dotenv file sets, blank ones left out; {} when there is no such file.

    The one reader of ``.env`` files: the settings' ``.env`` and the launcher's ``secrets.env``.
    """
    if not Path(path).is_file():
        return {}
    return {k: v.strip() for k, v in dotenv_values(path).items() if v and v.strip()}


def configured_values(
    environ: Mapping[str, str] | None = None, env_file: str | Path | None = ".env"
) -> dict[str, str]:
    """What settings are read from: ``environ`` (default: the process environment) over
    ``env_file``. The app, the launcher and the CLI's admin commands all start here."""
    values = read_env_file(env_file) if env_file is not None else {}
    values.update(os.environ if environ is None else environ)
    return values
