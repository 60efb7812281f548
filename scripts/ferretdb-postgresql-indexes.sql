-- Indexes and plan settings that make FerretDB 1.24 on PostgreSQL serve our queries from an index
-- (docs/deployment.md, "FerretDB on PostgreSQL"). Idempotent: run it after the app's first start and
-- again whenever a collection is created or dropped (dropping a collection drops its indexes, and
-- FerretDB's listIndexes never shows these).
--
--   psql "postgres://ferretdb@db-host/ferretdb" -v schema=cryptofiles -f scripts/ferretdb-postgresql-indexes.sql
--
-- `schema` is MONGODB_DB: FerretDB keeps each MongoDB database in a PostgreSQL schema of that name,
-- each collection in one table (a hashed name, found in _ferretdb_database_metadata) whose one
-- column _jsonb holds the document. FerretDB sends an equality filter as `_jsonb->'field' @> value`,
-- which its own B-tree indexes cannot serve and a GIN jsonb_path_ops index on the same expression
-- can. FerretDB re-checks every row it gets, so these indexes only narrow what is read.

\set ON_ERROR_STOP on
SELECT set_config('cryptofiles.schema', :'schema', false);

DO $$
DECLARE
  target text := current_setting('cryptofiles.schema');
  -- The fields our queries filter on by equality (cryptofiles/storage/*.py), per collection;
  -- _id everywhere (every lookup, update and delete by id).
  fields jsonb := '{
    "users": ["_id", "name"],
    "files": ["_id", "owner", "status"],
    "ciphertext.chunks": ["_id", "files_id", "n"],
    "ciphertext.files": ["_id"],
    "revoked_tokens": ["_id"],
    "rate_counters": ["_id"],
    "usage": ["_id", "owner", "retired"],
    "grants": ["_id", "file", "owner", "grantee"],
    "events": ["_id", "file"],
    "links": ["_id", "token_hash", "file"],
    "link_downloads": ["_id", "link"]
  }';
  coll record;
  field text;
BEGIN
  FOR coll IN EXECUTE format(
    'SELECT _jsonb->>''_id'' AS name, _jsonb->>''table'' AS tbl FROM %I._ferretdb_database_metadata',
    target)
  LOOP
    CONTINUE WHEN NOT fields ? coll.name;
    FOR field IN SELECT jsonb_array_elements_text(fields->coll.name) LOOP
      -- fastupdate off: no pending list that every lookup would have to scan.
      EXECUTE format(
        'CREATE INDEX IF NOT EXISTS %I ON %I.%I USING gin ((_jsonb->%L) jsonb_path_ops) '
        'WITH (fastupdate = off)',
        left(coll.tbl, 40) || '_' || field || '_gin', target, coll.tbl, field);
    END LOOP;
  END LOOP;
END $$;

-- FerretDB's driver re-uses prepared statements, and a generic plan cannot match `_jsonb->$1` to
-- an expression index; the planner also ignores what de-TOASTing a 1 MiB chunk costs and would scan
-- small tables. Both for new sessions of this database (reconnect FerretDB, or wait for its pool).
DO $$
BEGIN
  EXECUTE format('ALTER DATABASE %I SET plan_cache_mode = force_custom_plan', current_database());
  EXECUTE format('ALTER DATABASE %I SET enable_seqscan = off', current_database());
END $$;
