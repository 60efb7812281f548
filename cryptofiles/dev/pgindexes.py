"""The indexes FerretDB's PostgreSQL backend can use, and the plan settings that keep them in use.

FerretDB 1.24 stores each document as one ``jsonb`` column ``_jsonb`` and pushes an equality filter
down as ``_jsonb->'field' @> value``. The B-tree indexes it makes for MongoDB indexes cannot serve
``@>``; a GIN index on the same expression (``jsonb_path_ops``) can. FerretDB does not know about
these indexes (``listIndexes`` does not show them) and re-checks every row it gets, so they only
narrow what is read. Measured facts: ``/work/shared/notes/ferretdb-engines.md`` and README.

A collection's table is named after it plus a hash (``files_3ee74090``) and exists only once the
app creates the collection; every test uses a fresh MongoDB database (a fresh schema). So the
indexes are made by an event trigger on ``CREATE TABLE`` (in every schema of FerretDB's database),
and once more at each start for tables made before the trigger existed. Both are idempotent.
"""

from __future__ import annotations

import re

# The fields our queries filter on by equality (cryptofiles/storage/*.py), per collection. A
# collection not named here (one added later) gets an index on each of these fields.
INDEXED_FIELDS: dict[str, tuple[str, ...]] = {
    "users": ("_id", "name", "name_key", "public_id"),
    "revoked_tokens": ("_id",),
    "rate_counters": ("_id",),
    "files": ("_id", "owner", "status"),
    "ciphertext.files": ("_id",),
    "ciphertext.chunks": ("_id", "files_id", "n"),
    "usage": ("_id", "owner", "retired"),
    "grants": ("_id", "file", "owner", "grantee"),
    "events": ("_id", "file"),
    "links": ("_id", "token_hash", "file"),
    "link_downloads": ("_id", "link"),
}
ALL_FIELDS = tuple(sorted({f for fields in INDEXED_FIELDS.values() for f in fields}))

# `plan_cache_mode`: FerretDB's driver reuses prepared statements, and a generic plan cannot match
# `_jsonb->$1` to an index on `_jsonb->'files_id'` (1.35 s per chunk read at 2 GiB stored).
# `enable_seqscan`: the planner ignores the cost of de-TOASTing large documents and picks a scan
# of a small table over the index; off, it scans only where no index applies.
PLAN_SETTINGS = {"plan_cache_mode": "force_custom_plan", "enable_seqscan": "off"}

INDEX_SUFFIX = "_gin_"  # FerretDB's own indexes end in _idx: no name of ours can clash with one


def table_prefix(collection: str) -> str:
    """The table name FerretDB gives ``collection``, without its hash suffix (its own rule)."""
    return re.sub("[^a-z][^a-z0-9_]*", "_", collection.lower())


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _fields_case() -> str:
    whens = "\n".join(
        f"    WHEN {_quote(table_prefix(c))} THEN ARRAY[{', '.join(map(_quote, f))}]"
        for c, f in INDEXED_FIELDS.items()
    )
    every = ", ".join(map(_quote, ALL_FIELDS))
    return f"CASE prefix\n{whens}\n    ELSE ARRAY[{every}] END"


def install_sql() -> str:
    """SQL for FerretDB's database: the index function, the event trigger, and indexes on every
    table already there. Run at every start: ``CREATE OR REPLACE`` keeps it current. Built from
    this module's constants only (no outside input), quoted as SQL literals."""
    return f"""
CREATE OR REPLACE FUNCTION public.cryptofiles_index_table(schema_name text, table_name text)
RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
  field text;
  prefix text := regexp_replace(table_name, '_[0-9a-f]{{8}}$', '');
BEGIN
  -- FerretDB's own catalogue has its indexes already.
  IF table_name LIKE '\\_ferretdb\\_%' OR NOT EXISTS (
      SELECT 1 FROM pg_attribute WHERE attrelid = format('%I.%I', schema_name, table_name)::regclass
      AND attname = '_jsonb') THEN
    RETURN;
  END IF;
  FOREACH field IN ARRAY {_fields_case()} LOOP
    EXECUTE format(
      'CREATE INDEX IF NOT EXISTS %I ON %I.%I USING gin ((_jsonb->%L) jsonb_path_ops) '
      'WITH (fastupdate = off)',
      left(table_name, 40) || '{INDEX_SUFFIX}' || field, schema_name, table_name, field);
  END LOOP;
END $fn$;

CREATE OR REPLACE FUNCTION public.cryptofiles_on_create_table() RETURNS event_trigger
LANGUAGE plpgsql AS $fn$
DECLARE created record;
BEGIN
  FOR created IN SELECT c.relname, n.nspname FROM pg_event_trigger_ddl_commands() d
      JOIN pg_class c ON c.oid = d.objid JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE d.command_tag = 'CREATE TABLE' AND d.object_type = 'table' LOOP
    PERFORM public.cryptofiles_index_table(created.nspname, created.relname);
  END LOOP;
END $fn$;

DROP EVENT TRIGGER IF EXISTS cryptofiles_index_tables;
CREATE EVENT TRIGGER cryptofiles_index_tables ON ddl_command_end WHEN TAG IN ('CREATE TABLE')
  EXECUTE FUNCTION public.cryptofiles_on_create_table();

SELECT count(public.cryptofiles_index_table(n.nspname, c.relname))
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'public')
  AND n.nspname NOT LIKE 'pg\\_%';
"""  # noqa: S608
