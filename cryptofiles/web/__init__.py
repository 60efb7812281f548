"""The web layer: the application factory, and every module that imports Flask.

``create_app()`` builds everything from ``Settings`` (read from the environment when none is given);
nothing happens at import time. Each concern is a blueprint whose views are module-level functions:
``accounts`` (registration, login, logout, password, deletion), ``files`` (upload, download, listing,
keys), ``links`` (share links: the owner's routes, the holder's page and download), ``health``
(liveness, readiness, metrics), ``docs`` (OpenAPI, Swagger UI) and ``page`` (the web page at
``/app/``). Views read "authenticate, look up, check, act, answer":
``guard.token_required`` authenticates, the services (``cryptofiles.accounts``,
``cryptofiles.files``) do the work, ``inputs`` parses every request field, ``responses`` shapes every
answer and ``errors`` maps the services' exceptions to statuses. Rate limits (``ratelimit``) are
declared on the views and bound to each app's limiter at request time.

``services_of`` lives in ``context`` so that blueprints can import it without importing this factory.
"""

from __future__ import annotations

from flask import Flask

from cryptofiles.clock import Clock, utcnow
from cryptofiles.config import Settings
from cryptofiles.services import build_services
from cryptofiles.storage import Storage
from cryptofiles.web import (
    accounts,
    connection,
    docs,
    files,
    health,
    links,
    page,
    sharing,
    uploads,
)
from cryptofiles.web.context import EXTENSION_KEY, services_of
from cryptofiles.web.errors import register_error_handlers
from cryptofiles.web.logs import configure_logging, init_request_logging
from cryptofiles.web.metrics import init_metrics
from cryptofiles.web.ratelimit import init_limiter, password_check_allowed

__all__ = ["EXTENSION_KEY", "create_app", "services_of"]


def create_app(
    settings: Settings | None = None, *, clock: Clock = utcnow, storage: Storage | None = None
) -> Flask:
    """The app on ``settings``; ``storage`` (default: opened from the settings) lets a test watch
    the database client (``services.open_storage(settings, event_listeners=...)``)."""
    settings = settings or Settings.from_env()
    configure_logging(settings.log_level)
    app = Flask(__name__, static_folder=None)  # no static files: no unauthenticated /static route
    # Uploads stream through our own size guard; Flask's limit would only apply to form parsing.
    app.config["MAX_CONTENT_LENGTH"] = None

    services = build_services(settings, clock=clock, storage=storage)
    # Inside a request, a password may only be checked under ratelimit.password_checked.
    services.accounts.password_check_allowed = password_check_allowed
    services.files.sweep()  # leftovers of uploads that a crash interrupted
    services.uploads.sweep()  # resumable uploads past their expiry
    app.extensions[EXTENSION_KEY] = services

    # In this order: before_request hooks run in it, after_request hooks in reverse.
    register_error_handlers(app)
    connection.init_idle_limit(app, settings.idle_timeout_seconds)
    init_request_logging(app)
    init_metrics(app)
    init_limiter(app, services)
    blueprints = (
        accounts.bp,
        health.bp,
        files.bp,
        uploads.bp,
        sharing.bp,
        links.bp,
        docs.bp,
        page.bp,
    )
    for blueprint in blueprints:
        app.register_blueprint(blueprint)
    return app
