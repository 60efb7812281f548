"""Apps outside the fixtures' life cycle that clean up after themselves."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from flask import Flask

from cryptofiles.config import Settings
from cryptofiles.web import create_app, services_of


@contextlib.contextmanager
def running_app(settings: Settings) -> Iterator[Flask]:
    """An app on ``settings``; its database is dropped and its client closed afterwards."""
    app = create_app(settings)
    storage = services_of(app).storage
    try:
        yield app
    finally:
        storage.client.drop_database(settings.mongodb_db)
        storage.close()
