"""Errors as HTTP answers, in one place: the status of every exception, and the handlers.

Services raise their own small exception types (``accounts.InvalidToken``,
``storage.DatabaseUnavailable``, ...). ``STATUS_OF`` maps each to a status; the handler answers with
a plain-text message, or with an RFC 9457 problem document when the client accepts JSON
(``responses.error_response``). Internals (tracebacks, exception texts of libraries) go to the log,
never to the client. The 429 of a rate limit is answered in ``ratelimit``, which knows the window.
"""

from __future__ import annotations

import logging

from flask import Flask, Response
from werkzeug.exceptions import HTTPException

from cryptofiles import accounts, crypto, files, keys, links, sharing, storage, uploads
from cryptofiles.web import connection
from cryptofiles.web.inputs import ApiError
from cryptofiles.web.responses import error_response

log = logging.getLogger(__name__)

STATUS_OF: tuple[tuple[type[Exception], int], ...] = (
    (accounts.InvalidAccountData, 400),
    (storage.NameTaken, 400),
    (accounts.InvalidCredentials, 401),
    (accounts.InvalidToken, 401),
    (files.EmptyUpload, 400),
    (files.UploadInterrupted, 400),
    (files.InvalidCursor, 400),
    (files.NoSuchFile, 404),
    (keys.InvalidRecipients, 400),
    (keys.SealingRequired, 403),
    (keys.AccountGone, 401),
    (sharing.InvalidGrant, 400),
    (sharing.NoSuchGrant, 404),
    (sharing.RecordingFailed, 503),
    (links.InvalidLink, 400),
    (links.TooManyLinks, 400),
    (links.NoSuchLink, 404),
    (uploads.InvalidUpload, 400),
    (uploads.OffsetMismatch, 409),
    (uploads.UploadBusy, 409),
    (uploads.UploadConflict, 409),
    (uploads.ChecksumMismatch, 460),  # tus's checksum extension
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
