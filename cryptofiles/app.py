"""The application factory and the routes.

``create_app()`` builds everything from ``Settings`` (read from the environment when none is given);
nothing happens at import time. Views read "authenticate, look up, check, act, answer": the work lives
in ``auth.Authenticator`` and ``storage.Storage``.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from flask import Flask, Response, current_app, g, jsonify, request

from cryptofiles import auth
from cryptofiles.auth import Authenticator, PasswordHasher, TokenService, token_required
from cryptofiles.config import Settings
from cryptofiles.errors import ApiError, register_error_handlers, wants_json
from cryptofiles.storage import Storage

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, *, clock: auth.Clock = auth.utcnow) -> Flask:
    settings = settings or Settings.from_env()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    app = Flask(__name__)
    # Uploads stream through our own size guard; Flask's limit would only apply to form parsing.
    app.config["MAX_CONTENT_LENGTH"] = None

    storage = Storage(settings.mongodb_uri, settings.mongodb_db, timeout_ms=settings.mongodb_timeout_ms)
    storage.ensure_indexes()
    authenticator = Authenticator(
        storage,
        PasswordHasher(settings.password_hash, settings.password_hash_concurrency),
        TokenService(settings.secret_key, timedelta(minutes=settings.token_life_minutes), clock),
        clock,
    )
    app.extensions["cryptofiles.settings"] = settings
    app.extensions["cryptofiles.storage"] = storage
    app.extensions[auth.EXTENSION_KEY] = authenticator

    register_error_handlers(app)
    register_routes(app)
    return app


def _authenticator() -> Authenticator:
    return current_app.extensions[auth.EXTENSION_KEY]  # type: ignore[no-any-return]


def _storage() -> Storage:
    return current_app.extensions["cryptofiles.storage"]  # type: ignore[no-any-return]


def reply(text: str, status: int = 200, json: dict[str, Any] | None = None) -> Response:
    """A single value: plain text by default (so ``X=$(curl ...)`` works), JSON when asked for."""
    if wants_json():
        response = jsonify(json if json is not None else {"message": text})
    else:
        response = Response(text, mimetype="text/plain")
    response.status_code = status
    return response


def credentials(name_field: str, password_field: str) -> tuple[str, str]:
    """A name and password from the seed's headers or, as a later seed did, from a JSON body."""
    body: dict[str, Any] = {}
    if request.mimetype == "application/json" and request.content_length != 0:
        parsed = request.get_json(silent=True)
        if not isinstance(parsed, dict):
            raise ApiError(400, "The request body must be a JSON object.")
        body = parsed
    values = []
    for field in (name_field, password_field):
        value: Any = request.headers.get(field)
        if value is not None:
            value = _header_text(field, value)
        else:
            value = body.get(field)
        if value is not None and not isinstance(value, str):
            # Also stops operator objects such as {"$gt": ""} from reaching a query.
            raise ApiError(400, f"{field} must be a string.")
        values.append(value or "")
    missing = [f for f, v in zip((name_field, password_field), values, strict=True) if not v]
    if missing:
        raise ApiError(400, f"Missing {' and '.join(missing)} (as a header or in a JSON body).")
    return values[0], values[1]


def _header_text(field: str, raw: str) -> str:
    # WSGI hands header values over as latin-1; clients such as curl send UTF-8. Decode them as
    # UTF-8 so that a non-ASCII password is the same whether it came in a header or in JSON.
    try:
        return raw.encode("latin-1").decode("utf-8")
    except UnicodeError:
        raise ApiError(400, f"{field} must be UTF-8 text.") from None


def register_routes(app: Flask) -> None:
    @app.post("/registration")
    def registration() -> Response:
        name, password = credentials("New_User_Name", "New_User_Password")
        user = _authenticator().register(name, password)
        return reply(
            f"Registration is OK, your name: {user.name}",
            201,
            {"name": user.name, "id": user.public_id, "created_at": user.created_at.isoformat()},
        )

    @app.get("/login")
    def login() -> Response:
        name, password = credentials("User_Name", "User_Password")
        issued = _authenticator().login(name, password)
        response = reply(
            issued.token,
            json={
                "token": issued.token,
                "token_type": "Bearer",
                "expires_at": issued.expires_at.isoformat(),
            },
        )
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.get("/test_login")
    @token_required
    def test_login() -> Response:
        name = g.principal.user.name
        return reply(f"Login is OK, your name: {name}", json={"message": "Login is OK", "name": name})

    @app.post("/logout")
    @token_required
    def logout() -> Response:
        _authenticator().logout(g.principal)
        return reply("Logged out: this token is revoked.", json={"revoked": True})

    @app.get("/healthz")
    def healthz() -> Response:
        return reply("ok", json={"status": "ok"})

    @app.get("/readyz")
    def readyz() -> Response:
        _storage().ping()  # DatabaseUnavailable becomes 503
        return reply("ready", json={"status": "ready"})
