"""Answers, in one shape: content negotiation, single values, errors, file metadata and downloads.

Single values (token, id, key, message) are plain text by default, so that ``X=$(curl ...)`` works,
and JSON for a client that prefers it; errors follow the same rule (a plain message, or an RFC 9457
problem document). Downloads stream with ETag, one byte range and attachment headers.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable, Iterator
from http import HTTPStatus
from typing import Any

from flask import Response, jsonify, request

from cryptofiles.files import ByteRange
from cryptofiles.storage import FileRecord, LinkRecord
from cryptofiles.web.inputs import requested_range
from cryptofiles.web.metrics import current_metrics

# Seconds a client should wait before retrying a 503.
RETRY_AFTER_SECONDS = 5


def wants_json() -> bool:
    """True when the client prefers JSON to plain text (``curl`` sends ``*/*``: plain text)."""
    best = request.accept_mimetypes.best_match(
        ["text/plain", "application/json", "application/problem+json"]
    )
    return best in ("application/json", "application/problem+json")


def reply(text: str, status: int = 200, json: dict[str, Any] | None = None) -> Response:
    """A single value: plain text by default (so ``X=$(curl ...)`` works), JSON when asked for."""
    if wants_json():
        response = jsonify(json if json is not None else {"message": text})
    else:
        response = Response(text, mimetype="text/plain")
    response.status_code = status
    return response


# Statuses of protocols we speak that HTTP's registry has not (tus's checksum extension).
EXTRA_TITLES = {460: "Checksum Mismatch"}


def error_response(status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    title = EXTRA_TITLES.get(status) or HTTPStatus(status).phrase
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


def file_json(record: FileRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "name": record.name,
        "content_type": record.content_type,
        "size": record.size,
        "stored_size": record.stored_size,
        "created_at": record.created_at.isoformat(),
    }


def link_json(link: LinkRecord, downloads: int) -> dict[str, Any]:
    return {
        "id": link.id,
        "file": link.file,
        "created_at": link.created_at.isoformat(),
        "expires_at": link.expires_at.isoformat(),
        "max_downloads": link.max_downloads,
        "downloads": downloads,
    }


def attachment(filename: str) -> str:
    """A Content-Disposition value that survives any file name (RFC 6266 with RFC 8187)."""
    fallback = re.sub(r"[^A-Za-z0-9._ -]", "_", filename) or "file"
    quoted = urllib.parse.quote(filename, safe="")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quoted}"


def ranged_response(
    total: int,
    *,
    etag: str,
    body: Callable[[ByteRange | None], Iterator[bytes]],
    mimetype: str,
    filename: str,
    ranges: bool = True,
) -> Response:
    """A streamed file download with ETag, Range (one range) and attachment headers.

    Without ``ranges`` (a share link's download, counted at each request) the whole file is
    always sent: Range and If-None-Match are ignored, as RFC 9110 allows, and no ETag is given.
    """
    if ranges and request.if_none_match.contains_weak(etag):  # RFC 9110: weak comparison here
        return Response(status=304, headers={"ETag": f'"{etag}"'})
    span = requested_range(total, etag) if ranges else None
    response = Response(
        current_metrics().counted_out(body(span)),
        status=206 if span else 200,
        mimetype=mimetype,
        direct_passthrough=True,
    )
    response.content_length = span.length if span else total
    if span:
        response.headers["Content-Range"] = f"bytes {span.start}-{span.stop - 1}/{total}"
    response.headers["Accept-Ranges"] = "bytes" if ranges else "none"
    if ranges:
        response.headers["ETag"] = f'"{etag}"'
    response.headers["Content-Disposition"] = attachment(filename)
    # Never let a browser render a download: the content type may be anything a user claimed.
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
