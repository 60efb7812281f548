"""The fault tests start, kill, pause and restart database servers of their own, whatever
MONGODB_URI says: without a local server to start (mongod on PATH or FerretDB in tools/), skip."""

from __future__ import annotations

import pytest

from cryptofiles.dev.database import NoDatabaseServer, find_server
from tests.support.database import TOOLS


@pytest.fixture(scope="session", autouse=True)
def _local_database_server() -> None:
    try:
        find_server(TOOLS)
    except NoDatabaseServer:
        pytest.skip("the fault tests need a database server they can start and kill themselves")
