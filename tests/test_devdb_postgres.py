"""FerretDB on PostgreSQL (cryptofiles.dev.postgres, pgindexes): the cluster, its user, its indexes.

Runs the real FerretDB from tools/ on the real PostgreSQL server programs (`make setup` installs
them); without them these tests fail rather than skip. The rules shared with the SQLite fallback
(sockets, pid files, parent death, leftovers) are in test_devdb.py, run on both engines.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import pwd
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from cryptofiles.dev import database as devdb
from cryptofiles.dev import pgindexes, postgres
from cryptofiles.dev.database import LocalDatabase, NoDatabaseServer
from cryptofiles.storage import Storage
from tests.test_devdb import listening_addresses, mode, mongo, ping

ROOT = Path(__file__).resolve().parents[1]
TOOLS = Path(os.environ.get("CRYPTOFILES_TOOLS_DIR") or ROOT / "tools").resolve()


@pytest.fixture
def empty_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PATH without mongod (nor initdb): FerretDB is what starts, PostgreSQL found in its roots."""
    assert devdb.ferretdb_binary(TOOLS).is_file(), "FerretDB is not built: run `make setup`"
    assert postgres.find_postgres() is not None, "PostgreSQL is not installed: run `make setup`"
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    return empty


@pytest.fixture
def database(tmp_path: Path, empty_path: Path) -> Iterator[LocalDatabase]:
    made = LocalDatabase(tmp_path / "db", tools=TOOLS)  # engine "auto": PostgreSQL when present
    yield made
    made.stop()


def gin_indexes(database: LocalDatabase, schema: str) -> dict[str, set[str]]:
    """Table -> fields with one of our GIN indexes (jsonb_path_ops, fastupdate off) in ``schema``."""
    assert database.postgres is not None
    where = f"schemaname = '{schema}' AND indexname LIKE '%{pgindexes.INDEX_SUFFIX}%'"
    query = "SELECT tablename, indexdef FROM pg_indexes WHERE " + where  # noqa: S608 - our names
    rows = database.postgres.psql("ferretdb", query)
    found: dict[str, set[str]] = {}
    for row in rows.splitlines():
        table, definition = row.split("|", 1)
        assert "USING gin" in definition and "jsonb_path_ops" in definition, definition
        assert "WITH (fastupdate=off)" in definition, definition
        field = definition.split("->", 1)[1].split("'")[1]
        found.setdefault(table, set()).add(field)
    return found


def by_collection(found: dict[str, set[str]]) -> dict[str, set[str]]:
    prefixes = {pgindexes.table_prefix(c): c for c in pgindexes.INDEXED_FIELDS}
    return {prefixes.get(t[:-9], t[:-9]): fields for t, fields in found.items()}


def expected(*collections: str) -> dict[str, set[str]]:
    return {c: set(pgindexes.INDEXED_FIELDS[c]) for c in collections}


def test_postgresql_is_the_default_engine(database: LocalDatabase) -> None:
    uri = database.start()
    assert database.postgres is not None and database.process is not None
    cmdline = Path(f"/proc/{database.process.pid}/cmdline").read_bytes().split(b"\0")
    assert b"--handler=postgresql" in cmdline
    assert (database.data_dir / "pg" / "PG_VERSION").is_file()
    assert not list(database.data_dir.glob("*.sqlite"))
    assert ping(uri) == 1.0


def test_every_collection_table_gets_its_gin_indexes(database: LocalDatabase) -> None:
    uri = database.start()
    for name in ("first", "second"):  # each MongoDB database is a fresh schema: the trigger's work
        storage = Storage(uri, name, timeout_ms=10_000)
        try:
            storage.ensure_indexes()  # what the app does at start; the rest come with a write
            for collection in [*pgindexes.INDEXED_FIELDS, "added_later"]:  # + one no list names
                storage.db[collection].update_one({"_id": 1}, {"$set": {"x": 1}}, upsert=True)
        finally:
            storage.close()
        found = by_collection(gin_indexes(database, name))
        assert found == {
            **expected(*pgindexes.INDEXED_FIELDS),
            "added_later": set(pgindexes.ALL_FIELDS),
        }


def test_tables_made_before_the_trigger_get_indexes_at_the_next_start(
    database: LocalDatabase,
) -> None:
    uri = database.start()
    assert database.postgres is not None
    database.postgres.psql("ferretdb", "DROP EVENT TRIGGER cryptofiles_index_tables")
    with mongo(uri) as client:
        client.older.files.insert_one({"_id": "f", "owner": "u"})
    assert gin_indexes(database, "older") == {}
    database.stop()
    with mongo(database.start()) as client:  # idempotent: the same indexes, once each
        assert client.older.files.find_one({"owner": "u"}) == {"_id": "f", "owner": "u"}
    assert by_collection(gin_indexes(database, "older")) == expected("files")
    database.stop()
    database.start()
    assert by_collection(gin_indexes(database, "older")) == expected("files")


def test_plan_settings_keep_the_indexes_in_use(database: LocalDatabase) -> None:
    database.start()
    assert database.postgres is not None
    shown = database.postgres.psql("ferretdb", "SHOW plan_cache_mode; SHOW enable_seqscan;")
    assert shown.split() == ["force_custom_plan", "off"]
    config = (database.data_dir / "pg" / "postgresql.conf").read_text()
    assert "include_if_exists = 'cryptofiles.conf'" in config  # a hand-started cluster has them too


def test_unix_socket_only_in_a_private_folder(database: LocalDatabase) -> None:
    database.start()
    cluster = database.postgres
    assert cluster is not None
    assert cluster.psql("postgres", "SHOW listen_addresses").strip() == ""
    folder = database.data_dir / "pg" / "socket"  # the same folder as cluster.socket_dir
    assert os.path.samefile(folder, cluster.socket_dir)
    assert mode(folder) == 0o700
    sockets = [p for p in folder.iterdir() if stat.S_ISSOCK(p.lstat().st_mode)]
    assert [p.name for p in sockets] == [".s.PGSQL.5432"]
    assert mode(sockets[0]) == 0o700
    for pid in cluster.pids():
        assert listening_addresses(pid) == set(), pid


def test_cluster_is_private_and_reused(database: LocalDatabase, tmp_path: Path) -> None:
    before = {p: mode(p) for p in [tmp_path, *tmp_path.parents]}
    database.start()
    assert database.postgres is not None
    cluster = database.data_dir / "pg"
    identity = database.postgres.psql(
        "postgres", "SELECT system_identifier FROM pg_control_system()"
    )
    runs_as = pwd.getpwnam("postgres").pw_uid if os.geteuid() == 0 else os.geteuid()
    owners = {}
    for pid in database.postgres.pids():
        with contextlib.suppress(FileNotFoundError):  # a short-lived backend that just ended
            owners[pid] = os.stat(f"/proc/{pid}").st_uid
    assert database.postgres.process is not None and database.postgres.process.pid in owners
    assert set(owners.values()) == {runs_as}  # never root: PostgreSQL refuses it
    assert cluster.stat().st_uid == runs_as and mode(cluster) == 0o700
    assert mode(database.data_dir) == 0o700
    for path in database.data_dir.rglob("*"):
        kind = path.lstat().st_mode
        if stat.S_ISDIR(kind) or stat.S_ISREG(kind):
            assert mode(path) == (0o700 if stat.S_ISDIR(kind) else 0o600), path
    # Nothing above the data folder was opened for PostgreSQL's user (it starts inside).
    assert {p: mode(p) for p in before} == before
    database.stop()
    database.start()  # the same cluster, not a new one
    again = database.postgres.psql("postgres", "SELECT system_identifier FROM pg_control_system()")
    assert again == identity


def test_sqlite_is_the_fallback_with_a_warning(
    tmp_path: Path,
    empty_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(postgres, "POSTGRES_ROOTS", ())
    assert postgres.find_postgres() is None
    with caplog.at_level(logging.WARNING), LocalDatabase(tmp_path / "db", tools=TOOLS) as database:
        assert database.postgres is None
        with mongo(database.uri) as client:
            client.some.things.insert_one({"_id": 1})
        assert (database.data_dir / "some.sqlite").is_file()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(devdb.SQLITE_WARNING in w and postgres.INSTALL_HINT in w for w in warnings)


def test_older_sqlite_data_is_named_not_lost(
    database: LocalDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    database.data_dir.mkdir(parents=True)
    (database.data_dir / "cryptofiles.sqlite").write_bytes(b"kept as it is")
    with caplog.at_level(logging.WARNING):
        database.start()
    assert any("SQLite from an older run" in r.getMessage() for r in caplog.records)
    assert (database.data_dir / "cryptofiles.sqlite").read_bytes() == b"kept as it is"


def test_postgresql_asked_for_but_missing_says_how(
    tmp_path: Path, empty_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres, "POSTGRES_ROOTS", ())
    database = LocalDatabase(tmp_path / "db", tools=TOOLS, engine="postgresql")
    with pytest.raises(NoDatabaseServer, match="apt-get install postgresql"):
        database.start()
    assert database.process is None


def test_find_postgres_on_path_and_in_its_roots(tmp_path: Path) -> None:
    found = postgres.find_postgres()
    assert found is not None
    linked = tmp_path / "bin"
    linked.mkdir()
    (linked / "initdb").symlink_to(found / "initdb")  # as /usr/local/bin's symlinks
    assert postgres.find_postgres(str(linked), roots=()) == found
    assert postgres.find_postgres(str(tmp_path / "none"), roots=()) is None
    root = tmp_path / "lib"
    for version in ("9.6", "13", "15"):
        (root / version / "bin").mkdir(parents=True)
        for program in postgres.PROGRAMS:
            (root / version / "bin" / program).write_text("")
    assert postgres.find_postgres(str(tmp_path / "none"), roots=(root,)) == root / "15" / "bin"


def test_ensure_server_says_which_engine(
    tmp_path: Path, empty_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    environ = {"PATH": str(empty_path), "CRYPTOFILES_TOOLS_DIR": str(TOOLS)}
    out = io.StringIO()
    devdb.ensure_server(environ, out=out)
    assert "FerretDB will run on PostgreSQL" in out.getvalue()

    monkeypatch.setattr(postgres, "POSTGRES_ROOTS", ())
    monkeypatch.setattr(postgres, "install_postgres", lambda out: False)  # no root or no apt-get
    out = io.StringIO()
    devdb.ensure_server(environ, out=out)
    assert postgres.INSTALL_HINT in out.getvalue() and devdb.SQLITE_WARNING in out.getvalue()


def test_nothing_outside_the_local_database_module_names_the_engine() -> None:
    """The app gets a mongodb:// URI; which engine serves it is cryptofiles/dev/'s business."""
    named = []
    for path in (ROOT / "cryptofiles").rglob("*.py"):
        if "dev" in path.relative_to(ROOT / "cryptofiles").parts[:1]:
            continue
        for word in ("postgres", "psql", "pgindexes", "cryptofiles.dev.database"):
            if word in path.read_text().lower():
                named.append(f"{path.relative_to(ROOT)}: {word}")
    assert named == []
