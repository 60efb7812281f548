"""The application factory and the routes.

``create_app()`` builds everything from ``Settings`` (read from the environment when none is given);
nothing happens at import time. Views read "authenticate, look up, check, act, answer": the work lives
in ``auth.Authenticator`` and ``files.FileService``; request parsing in ``inputs``, answers for errors
in ``errors``.
"""

from __future__ import annotations

import base64
import re
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

from flask import Flask, Response, current_app, g, jsonify, request, url_for
from werkzeug.http import parse_options_header

from cryptofiles import accounts, crypto
from cryptofiles.accounts import Authenticator, token_required
from cryptofiles.clock import Clock, utcnow
from cryptofiles.config import Settings
from cryptofiles.files import ByteRange, FileService, UploadInterrupted
from cryptofiles.services import Services, build_services
from cryptofiles.storage import FileRecord, Storage
from cryptofiles.web import connection
from cryptofiles.web.connection import ClientStalled
from cryptofiles.web.docs import register_docs
from cryptofiles.web.errors import ApiError, register_error_handlers, wants_json
from cryptofiles.web.inputs import credentials, int_arg, text_field
from cryptofiles.web.logs import configure_logging, init_request_logging
from cryptofiles.web.metrics import EXTENSION_KEY as METRICS_KEY
from cryptofiles.web.metrics import Metrics, init_metrics
from cryptofiles.web.ratelimit import (
    client_address,
    create_limiter,
    current_user,
    limited,
    password_checked,
)

EXTENSION_KEY = "cryptofiles"


def create_app(settings: Settings | None = None, *, clock: Clock = utcnow) -> Flask:
    settings = settings or Settings.from_env()
    configure_logging(settings.log_level)
    app = Flask(__name__, static_folder=None)  # no static files: no unauthenticated /static route
    # Uploads stream through our own size guard; Flask's limit would only apply to form parsing.
    app.config["MAX_CONTENT_LENGTH"] = None

    services = build_services(settings, clock=clock)
    services.files.sweep()  # leftovers of uploads that a crash interrupted
    app.extensions[EXTENSION_KEY] = services
    app.extensions[accounts.EXTENSION_KEY] = services.accounts  # for token_required

    register_error_handlers(app)
    connection.init_idle_limit(app, settings.idle_timeout_seconds)
    init_request_logging(app)
    init_metrics(app, settings.metrics_token)
    create_limiter(app, services.storage)
    register_routes(app)
    register_file_routes(app)
    register_docs(app)
    return app


def services_of(app: Flask) -> Services:
    """The services an app was built with (tests reach the database through this)."""
    return app.extensions[EXTENSION_KEY]  # type: ignore[no-any-return]


def _authenticator() -> Authenticator:
    return services_of(current_app).accounts


def _storage() -> Storage:
    return services_of(current_app).storage


def _files() -> FileService:
    return services_of(current_app).files


def reply(text: str, status: int = 200, json: dict[str, Any] | None = None) -> Response:
    """A single value: plain text by default (so ``X=$(curl ...)`` works), JSON when asked for."""
    if wants_json():
        response = jsonify(json if json is not None else {"message": text})
    else:
        response = Response(text, mimetype="text/plain")
    response.status_code = status
    return response


def register_routes(app: Flask) -> None:
    settings = services_of(app).settings

    @app.post("/registration")
    @limited(app, settings.rate_limit_registration, client_address, "registration")
    def registration() -> Response:
        name, password = credentials("New_User_Name", "New_User_Password")
        user = _authenticator().register(name, password)
        return reply(
            f"Registration is OK, your name: {user.name}",
            201,
            {"name": user.name, "id": user.public_id, "created_at": user.created_at.isoformat()},
        )

    @app.get("/login")
    @password_checked(app)
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
        return reply(
            f"Login is OK, your name: {name}", json={"message": "Login is OK", "name": name}
        )

    @app.post("/logout")
    @token_required
    def logout() -> Response:
        _authenticator().logout(g.principal)
        return reply("Logged out: this token is revoked.", json={"revoked": True})

    @app.put("/account/password")
    @token_required
    @password_checked(app)
    def change_password() -> Response:
        current, new = credentials("User_Password", "New_User_Password")
        _authenticator().change_password(g.principal, current, new)
        return reply("Password changed; every token of this account is revoked: log in again.")

    @app.delete("/account")
    @token_required
    @password_checked(app)
    def delete_account() -> Response:
        (password,) = credentials("User_Password")
        user = g.principal.user
        _authenticator().verify_password(user, password)
        # In this order, so that an upload of this user finishing meanwhile leaves nothing behind
        # (FileService._check_owner says why): mark, remove every file, then the user.
        _storage().mark_user_deleting(user.public_id)
        deleted = _files().delete_all(user.public_id)
        _storage().delete_user(user.public_id)
        return reply(
            f"Account {user.name} deleted with {deleted} file(s).", json={"deleted_files": deleted}
        )

    @app.get("/healthz")
    def healthz() -> Response:
        return reply("ok", json={"status": "ok"})

    @app.get("/readyz")
    def readyz() -> Response:
        _storage().ping()  # DatabaseUnavailable becomes 503
        return reply("ready", json={"status": "ready"})


# -- files --------------------------------------------------------------------------------------

# How much of the request body is read at a time: one segment's worth keeps the pipeline simple.
BODY_BLOCK = crypto.SEGMENT_SIZE
MAX_FILE_NAME_CHARS = 255
CONTENT_TYPE_RE = re.compile(r"[A-Za-z0-9!#$&^_.+-]{1,63}/[A-Za-z0-9!#$&^_.+-]{1,63}")
DEFAULT_PAGE = 50
MAX_PAGE = 1000
CUT_OFF = "The upload was cut off before the end of the body."
PLAIN_FILENAME_RE = re.compile(r';\s*filename\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)', re.IGNORECASE)
# C0 controls and DEL (header splitting, terminal escapes), and the Unicode bidirectional controls:
# embeddings and overrides U+202A-U+202E, isolates U+2066-U+2069, and the marks U+200E, U+200F,
# U+061C. These reorder how a name is displayed, so "invoice\u202efdp.exe" shows as "invoiceexe.pdf"
# in a listing or a save dialog; no legitimate file name needs them.
CONTROL_CHARS_RE = re.compile(r"[\x00-\x1f\x7f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def request_body() -> Iterator[bytes]:
    """The raw request body in blocks, whether sized by Content-Length or chunked."""
    stream = request.stream
    declared = request.content_length
    received = 0
    while True:
        try:
            block = connection.read(stream, BODY_BLOCK)
        except ClientStalled:
            raise
        except Exception as exc:
            # werkzeug (short body) and gunicorn (broken chunking, reset) raise different types;
            # for us they all mean the same: the client stopped sending.
            raise UploadInterrupted(CUT_OFF) from exc
        if not block:
            break
        received += len(block)
        yield block
    # gunicorn hands the body over unwrapped, and its reader just ends early when the client
    # goes away: only the count tells a cut-off body from a complete one.
    if declared is not None and received != declared:
        raise UploadInterrupted(CUT_OFF)


def upload_name() -> str | None:
    """The file name from ``X-File-Name`` or the ``filename`` of ``Content-Disposition``."""
    name = request.headers.get("X-File-Name")
    if name is not None:
        name = text_field("X-File-Name", body={})
    elif "Content-Disposition" in request.headers:
        disposition = request.headers["Content-Disposition"]
        if "filename*=" in disposition:
            # RFC 6266: filename* (RFC 8187, any charset) wins over filename, whatever the order.
            disposition = PLAIN_FILENAME_RE.sub("", disposition)
        _, options = parse_options_header(disposition)
        name = options.get("filename")
    if not name:
        return None
    if len(name) > MAX_FILE_NAME_CHARS or CONTROL_CHARS_RE.search(name):
        raise ApiError(
            400,
            f"The file name must be at most {MAX_FILE_NAME_CHARS} characters, "
            "no control characters (bidirectional controls included).",
        )
    return name


def upload_content_type() -> str | None:
    value = request.headers.get("X-Content-Type", "").strip()
    if not value:
        return None
    if not CONTENT_TYPE_RE.fullmatch(value):
        raise ApiError(400, "X-Content-Type must be a media type such as text/plain.")
    return value.lower()


def file_json(record: FileRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "name": record.name,
        "content_type": record.content_type,
        "size": record.size,
        "stored_size": record.stored_size,
        "created_at": record.created_at.isoformat(),
    }


def attachment(filename: str) -> str:
    """A Content-Disposition value that survives any file name (RFC 6266 with RFC 8187)."""
    fallback = re.sub(r"[^A-Za-z0-9._ -]", "_", filename) or "file"
    quoted = urllib.parse.quote(filename, safe="")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quoted}"


def requested_range(length: int, etag: str) -> ByteRange | None:
    """The single byte range asked for, or None for the whole body; 416 when unsatisfiable.

    As RFC 9110 allows or asks: several ranges at once, a unit other than bytes, or an ``If-Range``
    that is not exactly this file's (strong) ETag are answered with the whole body; a suffix
    longer than the body selects all of it.
    """
    ranges = request.range
    if ranges is None or ranges.units != "bytes" or len(ranges.ranges) != 1:
        return None
    if_range = request.headers.get("If-Range")
    if if_range is not None and if_range.strip() != f'"{etag}"':
        return None
    start, stop = ranges.ranges[0]  # werkzeug: stop is exclusive, or None when open-ended
    if start < 0:  # a suffix "-N": the last N bytes, all of them when N exceeds the length
        start = max(length + start, 0)
    stop = length if stop is None else min(stop, length)
    if start >= stop:
        raise ApiError(
            416, "The requested range is not satisfiable.", {"Content-Range": f"bytes */{length}"}
        )
    return ByteRange(start, stop)


def ranged_response(
    total: int,
    *,
    etag: str,
    body: Callable[[ByteRange | None], Iterator[bytes]],
    mimetype: str,
    filename: str,
) -> Response:
    """A streamed file download with ETag, Range (one range) and attachment headers."""
    if request.if_none_match.contains_weak(etag):  # RFC 9110: weak comparison here
        return Response(status=304, headers={"ETag": f'"{etag}"'})
    span = requested_range(total, etag)
    metrics: Metrics = current_app.extensions[METRICS_KEY]
    response = Response(
        metrics.counted_out(body(span)),
        status=206 if span else 200,
        mimetype=mimetype,
        direct_passthrough=True,
    )
    response.content_length = span.length if span else total
    if span:
        response.headers["Content-Range"] = f"bytes {span.start}-{span.stop - 1}/{total}"
    response.headers["Accept-Ranges"] = "bytes"
    response.headers["ETag"] = f'"{etag}"'
    response.headers["Content-Disposition"] = attachment(filename)
    # Never let a browser render a download: the content type may be anything a user claimed.
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def register_file_routes(app: Flask) -> None:
    settings = services_of(app).settings

    @app.post("/upload")
    @token_required
    def upload() -> Response:
        metrics: Metrics = current_app.extensions[METRICS_KEY]
        record = _files().upload(
            g.principal.user.public_id,
            metrics.counted_in(request_body()),
            name=upload_name(),
            content_type=upload_content_type(),
            declared_size=request.content_length,
        )
        response = reply(record.id, 201, json=file_json(record))
        response.headers["Location"] = url_for("download", file_id=record.id)
        return response

    @app.get("/files/<file_id>")
    @token_required
    def download(file_id: str) -> Response:
        record = _files().get(file_id)
        return ranged_response(
            record.stored_size,
            etag=record.id,  # files never change, so the id is a strong validator
            body=lambda span: _files().ciphertext(record, span),
            mimetype="application/octet-stream",
            filename=f"{record.name or record.id}.enc",
        )

    @app.get("/files/<file_id>/plaintext")
    @token_required
    def plaintext(file_id: str) -> Response:
        record = _files().get(file_id, owner=g.principal.user.public_id)
        response = ranged_response(
            record.size,
            etag=f"{record.id}.plain",
            body=lambda span: _files().plaintext(record, span),
            mimetype=record.content_type or "application/octet-stream",
            filename=record.name or record.id,
        )
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.get("/files")
    @token_required
    def list_files() -> Response:
        records, next_cursor = _files().list(
            g.principal.user.public_id,
            limit=int_arg("limit", DEFAULT_PAGE, 1, MAX_PAGE),
            cursor=request.args.get("cursor"),
        )
        return jsonify(files=[file_json(r) for r in records], next_cursor=next_cursor)

    @app.get("/files/<file_id>/info")
    @token_required
    def file_info(file_id: str) -> Response:
        record = _files().get(file_id, owner=g.principal.user.public_id)
        return jsonify(file_json(record))

    @app.delete("/files/<file_id>")
    @token_required
    def delete_file(file_id: str) -> Response:
        record = _files().get(file_id, owner=g.principal.user.public_id)
        _files().delete(record)
        return Response(status=204)

    @app.get("/files/<file_id>/key")
    @token_required
    @limited(app, settings.rate_limit_keys, current_user, "keys")
    def file_key(file_id: str) -> Response:
        record = _files().get(file_id, owner=g.principal.user.public_id)
        key = base64.b64encode(_files().key(record)).decode()
        response = reply(
            key,
            json={
                "id": record.id,
                "key": key,
                "encoding": "base64",
                "algorithm": crypto.ALGORITHM,
                "format": crypto.FORMAT,
                "segment_size": crypto.SEGMENT_SIZE,
            },
        )
        response.headers["Cache-Control"] = "no-store"
        return response
