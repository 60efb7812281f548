"""Settings: what is required, what is refused, the defaults, and that secrets never show."""

from __future__ import annotations

import base64
import os
import secrets
import traceback
from pathlib import Path

import pytest

from cryptofiles import config
from cryptofiles.config import ConfigError, Settings
from cryptofiles.web import create_app

URI_PASSWORD = "hunter2-db-password"
URI = f"mongodb://app:{URI_PASSWORD}@db.example:27017/?authSource=admin"


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


@pytest.fixture
def master_key() -> str:
    """The base64 key text of MASTER_KEYS (the secret part of the entry)."""
    return b64(secrets.token_bytes(32))


@pytest.fixture
def values(master_key: str) -> dict[str, str]:
    return {
        "SECRET_KEY": secrets.token_urlsafe(32),
        "MASTER_KEYS": f"k1:{master_key}",
        "MONGODB_URI": URI,
    }


def config_error(values: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as raised:
        Settings.from_mapping(values)
    return raised.value


def full_text(exc: BaseException) -> str:
    """Everything a log line with the traceback would show."""
    return "".join(traceback.format_exception(exc)) + repr(exc)


# -- required settings ----------------------------------------------------------------------------


def test_minimal_settings_are_enough(values: dict[str, str], master_key: str) -> None:
    settings = Settings.from_mapping(values)
    assert settings.secret_key == values["SECRET_KEY"]
    assert settings.mongodb_uri == URI
    assert settings.master_keys.ids() == ["k1"]


@pytest.mark.parametrize("name", ["SECRET_KEY", "MASTER_KEYS", "MONGODB_URI"])
@pytest.mark.parametrize("how", ["absent", "empty", "blank"])
def test_required_setting_missing(values: dict[str, str], name: str, how: str) -> None:
    if how == "absent":
        del values[name]
    else:
        values[name] = "" if how == "empty" else "   "
    assert name in str(config_error(values))


@pytest.mark.parametrize(
    ("secret_key", "accepted"),
    [
        ("k" * 31, False),
        ("k" * 32, True),
        ("é" * 15 + "k", False),  # 16 characters, 31 bytes: bytes are what counts
        ("é" * 16, True),
        ("k" * 200, True),
    ],
)
def test_secret_key_length(values: dict[str, str], secret_key: str, accepted: bool) -> None:
    values["SECRET_KEY"] = secret_key
    if accepted:
        assert Settings.from_mapping(values).secret_key == secret_key
    else:
        error = config_error(values)
        assert "SECRET_KEY" in str(error)
        assert "32 bytes" in str(error)
        assert secret_key not in full_text(error)


GOOD_KEY = b64(b"\x01" * 32)


@pytest.mark.parametrize(
    ("master_keys", "key_texts"),
    [
        pytest.param("{key}", ["{key}"], id="key-without-id"),
        pytest.param("{key}:k1", ["{key}"], id="key-and-id-swapped"),
        pytest.param("k1:{key}!!", ["{key}"], id="not-base64"),
        pytest.param("k1:{short}", ["{short}"], id="31-byte-key"),
        pytest.param("k1:{zero}", ["{zero}"], id="all-zero-key"),
        pytest.param("k1:{key},k2:{short}", ["{key}", "{short}"], id="second-entry-bad"),
        pytest.param("k1:{key},k1:{key}", ["{key}"], id="duplicate-id"),
        pytest.param("k1:{key},", ["{key}"], id="stray-comma"),
    ],
)
def test_malformed_master_keys_never_echo_the_key(
    values: dict[str, str], master_key: str, master_keys: str, key_texts: list[str]
) -> None:
    fill = {
        "key": master_key,
        "short": b64(secrets.token_bytes(31)),
        "zero": b64(bytes(32)),
    }
    values["MASTER_KEYS"] = master_keys.format(**fill)
    error = config_error(values)
    assert str(error).startswith("MASTER_KEYS")
    text = full_text(error)
    for key_text in key_texts:
        assert key_text.format(**fill) not in text
    assert values["SECRET_KEY"] not in text


def test_master_keys_first_entry_is_active(values: dict[str, str], master_key: str) -> None:
    values["MASTER_KEYS"] = f" new : {master_key} , old:{GOOD_KEY}"
    ring = Settings.from_mapping(values).master_keys
    assert ring.active_id == "new"
    assert ring.ids() == ["new", "old"]


@pytest.mark.parametrize("uri", ["http://db.example/", "db.example:27017", "mongo://db.example/"])
def test_mongodb_uri_scheme(values: dict[str, str], uri: str) -> None:
    values["MONGODB_URI"] = uri
    error = config_error(values)
    assert "MONGODB_URI" in str(error)
    assert uri not in full_text(error)


@pytest.mark.parametrize(
    "uri", ["mongodb://127.0.0.1:27017/", "mongodb+srv://u:p@cluster.example/"]
)
def test_mongodb_uri_accepted(values: dict[str, str], uri: str) -> None:
    values["MONGODB_URI"] = uri
    assert Settings.from_mapping(values).mongodb_uri == uri


# -- optional settings ----------------------------------------------------------------------------


def test_defaults(values: dict[str, str]) -> None:
    settings = Settings.from_mapping(values)
    assert settings.host == "127.0.0.1"
    assert settings.port == 5000
    assert settings.mongodb_db == "cryptofiles"
    assert settings.token_life_minutes == 30
    assert settings.log_level == "INFO"
    assert settings.max_upload_bytes == 10 * 2**30
    assert settings.password_hash == config.DEFAULT_PASSWORD_HASH
    assert settings.password_hash_queue is None  # the hasher's default: 4 per slot


def test_every_optional_setting_is_read(values: dict[str, str]) -> None:
    values.update(
        {
            "MONGODB_DB": "other_db",
            "HOST": "192.0.2.10",
            "PORT": "8080",
            "TOKEN_LIFE_MINUTES": "5",
            "LOG_LEVEL": "warning",
            "MAX_UPLOAD_BYTES": "1024",
            "PASSWORD_HASH": "scrypt:16384:8:1",
            "PASSWORD_HASH_CONCURRENCY": "4",
            "PASSWORD_HASH_QUEUE": "3",
            "MONGODB_TIMEOUT_MS": "250",
            "WEB_WORKERS": "3",
            "WEB_CONNECTIONS": "16",
            "HEADER_TIMEOUT_SECONDS": "7",
            "IDLE_TIMEOUT_SECONDS": "9",
        }
    )
    settings = Settings.from_mapping(values)
    assert (settings.mongodb_db, settings.host, settings.port) == ("other_db", "192.0.2.10", 8080)
    assert (settings.token_life_minutes, settings.log_level) == (5, "WARNING")
    assert settings.max_upload_bytes == 1024
    assert settings.password_hash == "scrypt:16384:8:1"
    assert settings.password_hash_concurrency == 4
    assert settings.password_hash_queue == 3
    assert settings.mongodb_timeout_ms == 250
    assert (settings.web_workers, settings.web_connections) == (3, 16)
    assert (settings.header_timeout_seconds, settings.idle_timeout_seconds) == (7, 9)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "abc"),
        ("PORT", "0"),
        ("PORT", "70000"),
        ("PORT", "65536"),
        ("PORT", "-1"),
        ("PORT", "80.5"),
        ("TOKEN_LIFE_MINUTES", "0"),
        ("TOKEN_LIFE_MINUTES", "-5"),
        ("TOKEN_LIFE_MINUTES", "half an hour"),
        ("LOG_LEVEL", "LOUD"),
        ("LOG_LEVEL", "warn"),
        ("MAX_UPLOAD_BYTES", "0"),
        ("MAX_UPLOAD_BYTES", "10GiB"),
        ("MONGODB_DB", "a/b"),
        ("MONGODB_DB", "a.b"),
        ("MONGODB_DB", "a b"),
        ("MONGODB_DB", "$db"),
        ("MONGODB_DB", "a\\b"),
        ("PASSWORD_HASH", "pbkdf2:sha256:600000"),
        ("PASSWORD_HASH", "scrypt"),
        ("PASSWORD_HASH", "scrypt:32768:8"),
        ("PASSWORD_HASH_CONCURRENCY", "0"),
        ("PASSWORD_HASH_QUEUE", "-1"),
        ("PASSWORD_HASH_QUEUE", "many"),
        ("MONGODB_TIMEOUT_MS", "99"),
        ("WEB_WORKERS", "0"),
        ("WEB_CONNECTIONS", "0"),
        ("HEADER_TIMEOUT_SECONDS", "0"),
        ("IDLE_TIMEOUT_SECONDS", "-1"),
    ],
)
def test_invalid_value_refused(values: dict[str, str], name: str, value: str) -> None:
    values[name] = value
    error = config_error(values)
    assert name in str(error)
    assert values["SECRET_KEY"] not in full_text(error)


@pytest.mark.parametrize(("value", "port"), [("1", 1), ("65535", 65535), (" 8080 ", 8080)])
def test_port_accepted(values: dict[str, str], value: str, port: int) -> None:
    values["PORT"] = value
    assert Settings.from_mapping(values).port == port


@pytest.mark.parametrize(
    ("value", "level"), [("debug", "DEBUG"), (" Warning ", "WARNING"), ("CRITICAL", "CRITICAL")]
)
def test_log_level_is_case_insensitive(values: dict[str, str], value: str, level: str) -> None:
    values["LOG_LEVEL"] = value
    assert Settings.from_mapping(values).log_level == level


@pytest.mark.parametrize("name", ["my_db-1", "Crypto2"])
def test_plain_database_names_accepted(values: dict[str, str], name: str) -> None:
    values["MONGODB_DB"] = name
    assert Settings.from_mapping(values).mongodb_db == name


@pytest.mark.parametrize("method", ["scrypt:abc:8:1", "scrypt:1000:8:1", "scrypt:16384:0:1"])
def test_unusable_scrypt_parameters_refused(values: dict[str, str], method: str) -> None:
    values["PASSWORD_HASH"] = method
    assert "PASSWORD_HASH" in str(config_error(values))


# -- secrets stay out of repr -----------------------------------------------------------------------


def test_repr_hides_secrets(values: dict[str, str], master_key: str) -> None:
    settings = Settings.from_mapping(values)
    for text in (repr(settings), str(settings)):
        assert values["SECRET_KEY"] not in text
        assert master_key not in text
        assert URI not in text
        assert URI_PASSWORD not in text
        assert "db.example" not in text
        # The rest is there, so the repr is still useful.
        assert "mongodb_db='cryptofiles'" in text
        assert "port=5000" in text


# -- from_env: the environment over .env ----------------------------------------------------------


def write_env_file(path: Path, values: dict[str, str]) -> Path:
    path.write_text("".join(f"{name}={value}\n" for name, value in values.items()))
    return path


def test_from_env_reads_the_env_file(tmp_path: Path, values: dict[str, str]) -> None:
    env_file = write_env_file(tmp_path / ".env", {**values, "PORT": "6001", "LOG_LEVEL": "debug"})
    settings = Settings.from_env(environ={}, env_file=env_file)
    assert settings.secret_key == values["SECRET_KEY"]
    assert settings.mongodb_uri == URI
    assert (settings.port, settings.log_level) == (6001, "DEBUG")


def test_from_env_default_file_is_dot_env_in_cwd(
    tmp_path: Path, values: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    write_env_file(tmp_path / ".env", {**values, "PORT": "6002"})
    monkeypatch.chdir(tmp_path)
    assert Settings.from_env(environ={}).port == 6002


def test_environment_wins_over_env_file(tmp_path: Path, values: dict[str, str]) -> None:
    env_file = write_env_file(tmp_path / ".env", {**values, "PORT": "6001", "MONGODB_DB": "file"})
    other_secret = secrets.token_urlsafe(40)
    settings = Settings.from_env(
        environ={"PORT": "7002", "SECRET_KEY": other_secret}, env_file=env_file
    )
    assert settings.port == 7002
    assert settings.secret_key == other_secret
    assert settings.mongodb_db == "file"  # not in the environment: the file's value holds


def test_from_env_reads_the_process_environment(
    tmp_path: Path, values: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PORT", "7003")
    env_file = write_env_file(tmp_path / ".env", {"PORT": "6001"})
    assert Settings.from_env(env_file=env_file).port == 7003


@pytest.mark.parametrize("env_file", ["missing.env", None])
def test_missing_env_file_is_fine(
    tmp_path: Path, values: dict[str, str], env_file: str | None
) -> None:
    path = tmp_path / env_file if env_file else None
    assert Settings.from_env(environ=values, env_file=path).secret_key == values["SECRET_KEY"]


def test_env_file_alone_cannot_skip_required(tmp_path: Path, values: dict[str, str]) -> None:
    del values["SECRET_KEY"]
    env_file = write_env_file(tmp_path / ".env", values)
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        Settings.from_env(environ={}, env_file=env_file)


# -- create_app refuses to start without its secrets ----------------------------------------------


@pytest.mark.parametrize("missing", ["SECRET_KEY", "MASTER_KEYS"])
def test_create_app_refuses_without_secrets(
    tmp_path: Path, values: dict[str, str], monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env to fall back on
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv(missing)
    assert missing not in os.environ
    with pytest.raises(ConfigError) as raised:
        create_app()
    assert missing in str(raised.value)
