"""The production recipe's index script and the embedded database's index list name the same
fields, so an operator's PostgreSQL gets the indexes our queries need (docs/deployment.md)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from cryptofiles.dev.pgindexes import INDEXED_FIELDS

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "ferretdb-postgresql-indexes.sql"
# Fields that carry only a unique index (enforced by FerretDB's own B-trees) and that no query
# filters on: the embedded engine indexes them anyway, the recipe need not.
UNIQUE_ONLY = {"name_key", "public_id"}


def script_fields() -> dict[str, list[str]]:
    found = re.search(r"fields jsonb := '(\{.*?\})';", SCRIPT.read_text(), re.DOTALL)
    assert found, "the script's field list moved: update this test"
    return json.loads(found.group(1))  # type: ignore[no-any-return]


def test_the_recipe_indexes_every_collection_and_field_the_queries_need() -> None:
    recipe = script_fields()
    assert set(recipe) == set(INDEXED_FIELDS)
    for collection, fields in INDEXED_FIELDS.items():
        assert set(recipe[collection]) <= set(fields), collection
        assert set(fields) - set(recipe[collection]) <= UNIQUE_ONLY, collection
