"""The docker compose demo (Dockerfile, docker-compose.yml, compose.env.example) stays coherent.

No Docker engine is needed: ``docker compose config`` (run when the client and its compose plugin
are installed) only parses and normalizes the file; the rest reads the files themselves, and runs
the MongoDB healthcheck's mongosh script under node (when installed) with the shell's objects stubbed.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from fnmatch import fnmatch
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from dotenv import dotenv_values
from flask import Flask
from gunicorn.config import Config

from cryptofiles.config import ConfigError, Settings
from cryptofiles.crypto import KeyRing
from cryptofiles.dev.serve import gunicorn_command

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / "compose.env.example"


def dockerfile_command() -> list[str]:
    """The Dockerfile's CMD as argv, with ``${VAR:-default}`` at its default (the shell's job)."""
    match = re.search(r"^CMD (\[.*\])$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert match, "the Dockerfile needs a one-line CMD in exec form"
    argv: list[str] = json.loads(match.group(1))
    if argv[:2] == ["sh", "-c"]:
        script = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", argv[2])
        argv = shlex.split(script)
        argv = argv[1:] if argv[0] == "exec" else argv
    return argv


def gunicorn_options(argv: list[str]) -> dict[str, Any]:
    """What gunicorn makes of a ``python -m gevent.monkey --module gunicorn ...`` command line."""
    assert argv[1:5] == ["-m", "gevent.monkey", "--module", "gunicorn"], argv
    options: dict[str, Any] = vars(Config().parser().parse_args(argv[5:]))
    return options


def test_dockerfile_runs_gunicorn_as_serve_does() -> None:
    settings = Settings.from_mapping(
        {
            "SECRET_KEY": "s" * 32,
            "MASTER_KEYS": KeyRing.generate_entry("k1"),
            "MONGODB_URI": "mongodb://mongo:27017",
            "HOST": "0.0.0.0",  # noqa: S104 (inside the container)
        }
    )
    expected = gunicorn_command(settings)
    assert expected[0] == sys.executable
    assert gunicorn_options(dockerfile_command()) == gunicorn_options(expected)


def mounts(service: dict[str, Any]) -> set[tuple[str, ...]]:
    """(source, target) of each volume, in the short ("a:b") or long syntax."""
    return {
        tuple(v.split(":")[:2]) if isinstance(v, str) else (v["source"], v["target"])
        for v in service.get("volumes", [])
    }


def ports(service: dict[str, Any]) -> set[tuple[str, ...]]:
    """(published, target) of each port, in the short ("a:b") or long syntax."""
    return {
        tuple(p.split(":")[-2:]) if isinstance(p, str) else (str(p["published"]), str(p["target"]))
        for p in service.get("ports", [])
    }


def check_compose(config: dict[str, Any]) -> None:
    services = config["services"]
    assert set(services) == {"app", "mongo"}
    app, mongo = services["app"], services["mongo"]
    assert "build" in app
    assert app["depends_on"]["mongo"]["condition"] == "service_healthy"
    assert ports(app) == {("5000", "5000")}
    command = app.get("command") or dockerfile_command()
    options = gunicorn_options(command)
    assert options["header_map"] == "dangerous"  # the seed's header names contain underscores
    assert options["worker_class"] == "gevent"
    assert options["config"] == "python:cryptofiles.gunicorn_conf"  # the header filter
    assert options["bind"] == ["0.0.0.0:5000"]

    assert mongo["image"] == "mongo:7"
    # A replica set (of one member), so that write concern "majority" means what it says.
    name = replica_set_name(mongo)
    test = mongo["healthcheck"]["test"]
    assert test[:2] == ["CMD", "mongosh"]
    script = healthcheck_script(mongo)
    # Healthy only once the set is initiated, under its own name, with the member at the address
    # the app's URI uses, and this member is the primary (stronger than the old ping).
    assert f"_id: '{name}'" in script
    assert "host: 'mongo:27017'" in script
    assert "isWritablePrimary" in script
    assert ("mongo-data", "/data/db") in mounts(mongo)
    assert "mongo-data" in config["volumes"]


def replica_set_name(mongo: dict[str, Any]) -> str:
    command = mongo["command"]
    command = shlex.split(command) if isinstance(command, str) else command
    assert "--replSet" in command, "the compose MongoDB must run as a replica set"
    return str(command[command.index("--replSet") + 1])


def healthcheck_script(mongo: dict[str, Any]) -> str:
    test = mongo["healthcheck"]["test"]
    assert test[-2] == "--eval", test
    return str(test[-1])


def test_compose_file() -> None:
    config = yaml.safe_load(COMPOSE_FILE.read_text())
    check_compose(config)
    assert config["services"]["app"]["build"] == "."
    assert config["services"]["app"]["env_file"] == "compose.env"


def test_the_app_connects_to_the_replica_set_with_majority_writes() -> None:
    mongo = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["mongo"]
    values = {k: v for k, v in dotenv_values(ENV_EXAMPLE).items() if v is not None}
    uri = urlsplit(values["MONGODB_URI"])
    assert uri.netloc == "mongo:27017"  # the member's host in the healthcheck's rs.initiate
    assert parse_qs(uri.query) == {"replicaSet": [replica_set_name(mongo)]}
    settings = Settings.from_mapping(
        {**values, "SECRET_KEY": "s" * 32, "MASTER_KEYS": KeyRing.generate_entry("k1")}
    )
    assert settings.mongodb_write_concern == "majority"


HEALTHCHECK_STUBS = """
let initiated = %(initiated)s, primary = %(primary)s, calls = [];
const rs = {
  status() { if (!initiated) throw new Error("no replset config has been received"); return {ok: 1}; },
  initiate(config) { calls.push(config); initiated = true; return {ok: 1}; },
};
const db = {hello() { return {isWritablePrimary: primary}; }};
function quit(code) { console.log(JSON.stringify({code, calls})); process.exit(0); }
"""


@pytest.mark.parametrize(
    ("initiated", "primary", "code", "initiates"),
    [
        (False, False, 1, True),  # first check: initiate, not yet primary: unhealthy
        (True, False, 1, False),  # elected soon after; until then unhealthy
        (True, True, 0, False),  # the primary: healthy, nothing re-initiated
    ],
)
def test_the_healthcheck_initiates_once_and_waits_for_a_primary(
    initiated: bool, primary: bool, code: int, initiates: bool
) -> None:
    """mongosh's script run under node with the shell's objects stubbed: its logic and syntax,
    not MongoDB's behaviour (no mongod here)."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    mongo = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["mongo"]
    stubs = HEALTHCHECK_STUBS % {
        "initiated": str(initiated).lower(),
        "primary": str(primary).lower(),
    }
    result = subprocess.run(
        [node, "-e", stubs + healthcheck_script(mongo)], capture_output=True, text=True, check=True
    )
    outcome = json.loads(result.stdout)
    assert outcome["code"] == code
    expected = [{"_id": replica_set_name(mongo), "members": [{"_id": 0, "host": "mongo:27017"}]}]
    assert outcome["calls"] == (expected if initiates else [])


def compose_available() -> str | None:
    """Why ``docker compose`` cannot run here, or None if it can."""
    if shutil.which("docker") is None:
        return "the docker client is not installed"
    version = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    if version.returncode != 0:
        return "the docker compose plugin is not installed (docker compose version failed)"
    return None


def test_docker_compose_config(tmp_path: Path) -> None:
    if reason := compose_available():
        pytest.skip(f"cannot run `docker compose config`: {reason}")
    shutil.copy(COMPOSE_FILE, tmp_path / "docker-compose.yml")
    shutil.copy(ENV_EXAMPLE, tmp_path / "compose.env")
    compose = ["docker", "compose", "--file", str(tmp_path / "docker-compose.yml")]
    result = subprocess.run(
        [*compose, "config", "--format", "json"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    check_compose(config)
    # The env file was found and read.
    assert (
        config["services"]["app"]["environment"]["MONGODB_URI"]
        == "mongodb://mongo:27017/?replicaSet=rs0"
    )


def test_env_example_placeholders_are_refused() -> None:
    """Nobody can run the demo on the example's secrets by mistake."""
    values = {k: v for k, v in dotenv_values(ENV_EXAMPLE).items() if v is not None}
    assert {"SECRET_KEY", "MASTER_KEYS", "MONGODB_URI"} <= set(values)
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        Settings.from_mapping({**values, "MASTER_KEYS": KeyRing.generate_entry("k1")})
    with pytest.raises(ConfigError, match="MASTER_KEYS"):
        Settings.from_mapping({**values, "SECRET_KEY": "s" * 32})


def test_the_image_ships_the_openapi_document(app: Flask) -> None:
    """The image installs the package (not editable): openapi.yaml must be package data."""
    if "/openapi.json" not in {rule.rule for rule in app.url_map.iter_rules()}:
        pytest.skip("create_app does not register the docs routes (yet)")
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = setuptools.get("package-data", {}).get("cryptofiles", [])
    assert any(fnmatch("openapi.yaml", p) for p in patterns), (
        'add [tool.setuptools.package-data] cryptofiles = ["openapi.yaml"] to pyproject.toml'
    )
