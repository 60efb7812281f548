"""Errors as HTTP answers, in one place, and the content negotiation they share with the views.

Services raise their own small exception types (``accounts.InvalidToken``, ``storage.DatabaseUnavailable``,
...). ``STATUS_OF`` maps each to a status; the handler answers with a plain-text message, or with an
RFC 9457 problem document when the client accepts JSON. Internals (tracebacks, exception texts of
libraries) go to the log, never to the client.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from cryptofiles import accounts, crypto, files, storage
from cryptofiles.web import connection

log = logging.getLogger(__name__)

# Seconds a client should wait before retrying a 503.
RETRY_AFTER_SECONDS = 5


class ApiError(Exception):
    """An error the views raise directly, with its status and a message safe to show."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}


STATUS_OF: tuple[tuple[type[Exception], int], ...] = (
    (accounts.InvalidAccountData, 400),
    (storage.NameTaken, 400),
    (accounts.InvalidCredentials, 401),
    (accounts.InvalidToken, 401),
    (files.EmptyUpload, 400),
    (files.UploadInterrupted, 400),
    (files.InvalidCursor, 400),
    (files.NoSuchFile, 404),
    (files.OwnerGone, 410),
    (files.UploadTooLarge, 413),
    (connection.ClientStalled, 408),
    (accounts.Busy, 503),
    (storage.DatabaseUnavailable, 503),
    (storage.StorageFull, 507),
    # Server-side faults: logged with their cause, answered with a generic message.
    (crypto.CryptoError, 500),
    (storage.StorageError, 500),
)

SAFE_MESSAGES: dict[type[Exception], str] = {
    storage.NameTaken: "This user name is already taken.",
    storage.DatabaseUnavailable: "The database is unavailable; try again shortly.",
    storage.StorageFull: "The server is out of storage space; try again later.",
}
INTERNAL_ERROR = "Internal server error."


def wants_json() -> bool:
    """True when the client prefers JSON to plain text (``curl`` sends ``*/*``: plain text)."""
    best = request.accept_mimetypes.best_match(
        ["text/plain", "application/json", "application/problem+json"]
    )
    return best in ("application/json", "application/problem+json")


def error_response(status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    title = HTTPStatus(status).phrase
    if wants_json():
        response = jsonify(type="about:blank", title=title, status=status, detail=detail)
        response.mimetype = "application/problem+json"
    else:
        response = Response(detail + "\n", mimetype="text/plain")
    response.status_code = status
    response.headers.update(headers or {})
    if status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    if status == 503:
        response.headers.setdefault("Retry-After", str(RETRY_AFTER_SECONDS))
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def api_error(exc: ApiError) -> Response:
        return error_response(exc.status, exc.detail, exc.headers)

    for exc_type, status in STATUS_OF:

        def handle(exc: Exception, status: int = status) -> Response:
            if status >= 500:
                log.warning("request failed: %s: %s", type(exc).__name__, exc)
            default = INTERNAL_ERROR if status == 500 else str(exc)
            return error_response(status, SAFE_MESSAGES.get(type(exc), default))

        app.register_error_handler(exc_type, handle)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        # Keep headers such as 405's Allow; the body is ours.
        headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
        return error_response(exc.code or 500, exc.description or "", headers)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, INTERNAL_ERROR)
