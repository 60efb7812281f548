"""Resumable uploads over tus 1.0 (tus.io): core, creation, creation-with-upload, termination,
expiration and checksum (sha256), under ``/uploads/``.

The work is ``uploads.ResumableUploads``'s; this blueprint speaks the protocol: its headers on
every answer, ``Tus-Resumable`` checked on every request but discovery (``OPTIONS``), the same
token as every other route. The upload's id is the file's id: once complete, the upload is the
file at ``/files/<id>``.
"""

from __future__ import annotations

import base64

from flask import Blueprint, Response, g, request, url_for
from werkzeug.http import http_date

from cryptofiles.uploads import UploadStatus
from cryptofiles.web import connection
from cryptofiles.web.context import current_services
from cryptofiles.web.guard import token_required
from cryptofiles.web.inputs import (
    ApiError,
    request_body,
    tus_body_type,
    tus_checksum,
    tus_length,
    tus_metadata,
    tus_offset,
)
from cryptofiles.web.metrics import current_metrics

TUS_VERSION = "1.0.0"
EXTENSIONS = "creation,creation-with-upload,termination,expiration,checksum"

bp = Blueprint("uploads", __name__)


@bp.before_request
def check_protocol_version() -> None:
    if request.method != "OPTIONS" and request.headers.get("Tus-Resumable") != TUS_VERSION:
        raise ApiError(
            412,
            f"Send Tus-Resumable: {TUS_VERSION} (the only tus version this server speaks).",
            {"Tus-Version": TUS_VERSION},
        )


@bp.after_request
def protocol_headers(response: Response) -> Response:
    response.headers["Tus-Resumable"] = TUS_VERSION
    if response.status_code >= 400 and request.content_length:
        # A refused body (a PATCH of hundreds of MiB answered 409 from its head) is not read to
        # its end for the sake of keeping the connection: the server stops reading and closes.
        connection.stop_reading()
    return response


@bp.route("/uploads/", methods=["OPTIONS"])
@bp.route("/uploads/<upload_id>", methods=["OPTIONS"])
def discovery(upload_id: str | None = None) -> Response:
    response = _empty(204)
    response.headers.update(
        {
            "Tus-Version": TUS_VERSION,
            "Tus-Extension": EXTENSIONS,
            "Tus-Max-Size": str(current_services().settings.max_upload_bytes),
            "Tus-Checksum-Algorithm": "sha1,sha256",
        }
    )
    return response


@bp.post("/uploads/")
@token_required
def create() -> Response:
    owner = g.principal.user.public_id
    length = tus_length()
    name, content_type = tus_metadata()
    with_body = request.content_length not in (None, 0) or "chunked" in request.headers.get(
        "Transfer-Encoding", ""
    )
    if with_body:  # creation-with-upload
        tus_body_type()
    uploads = current_services().uploads
    status = uploads.create(owner, length, name=name, content_type=content_type)
    if with_body:
        status = uploads.append(
            status.id,
            owner,
            0,
            current_metrics().counted_in(request_body()),
            declared_size=request.content_length,
            checksum=tus_checksum(),
            creating=True,
        )
    response = _status_response(status, 201, metadata=False)
    response.headers["Location"] = url_for("uploads.head", upload_id=status.id, _external=True)
    return response


@bp.route("/uploads/<upload_id>", methods=["HEAD"])
@token_required
def head(upload_id: str) -> Response:
    status = current_services().uploads.status(upload_id, g.principal.user.public_id)
    response = _status_response(status, 200, metadata=True)
    response.headers["Upload-Length"] = str(status.length)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.patch("/uploads/<upload_id>")
@token_required
def append(upload_id: str) -> Response:
    uploads = current_services().uploads
    owner = g.principal.user.public_id
    uploads.status(upload_id, owner)  # first: a stranger learns nothing from our other checks
    tus_body_type()
    offset = tus_offset()
    checksum = tus_checksum()
    status = uploads.append(
        upload_id,
        owner,
        offset,
        current_metrics().counted_in(request_body()),
        declared_size=request.content_length,
        checksum=checksum,
    )
    return _status_response(status, 204, metadata=False)


@bp.delete("/uploads/<upload_id>")
@token_required
def terminate(upload_id: str) -> Response:
    current_services().uploads.terminate(upload_id, g.principal.user.public_id)
    return _empty(204)


def _empty(code: int) -> Response:
    """An answer with no body (tus answers are all headers), and so no Content-Type."""
    response = Response(status=code)
    del response.headers["Content-Type"]
    return response


def _status_response(status: UploadStatus, code: int, *, metadata: bool) -> Response:
    response = _empty(code)
    response.headers["Upload-Offset"] = str(status.offset)
    if status.expires_at is not None:
        response.headers["Upload-Expires"] = http_date(status.expires_at)
    if metadata:
        pairs = [
            f"{key} {base64.b64encode(value.encode()).decode()}"
            for key, value in (("filename", status.name), ("filetype", status.content_type))
            if value
        ]
        if pairs:
            response.headers["Upload-Metadata"] = ",".join(pairs)
    return response
