"""Where an app keeps the services ``create_app`` built for it, and how a view reaches them.

A module of its own (not the package's ``__init__``) so that the blueprints can import it without
importing the factory that imports them.
"""

from __future__ import annotations

from flask import Flask, current_app

from cryptofiles.services import Services

EXTENSION_KEY = "cryptofiles"


def services_of(app: Flask) -> Services:
    """The services an app was built with (tests reach the database through this)."""
    return app.extensions[EXTENSION_KEY]  # type: ignore[no-any-return]


def current_services() -> Services:
    """The services of the app handling the current request."""
    return services_of(current_app)
