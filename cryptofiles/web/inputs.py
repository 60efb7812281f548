"""Reading what clients send, safely: text fields from headers or a JSON body, integer query
parameters, the upload's body, name and type, and the byte range of a download.

Every field a view reads goes through here, so the rules live in one place: header values are
decoded as UTF-8 (WSGI hands them over as latin-1), JSON bodies are bounded in size and nesting,
values must be strings (operator objects such as {"$gt": ""} never reach a query), and text must
be encodable (a lone surrogate from a JSON escape would otherwise fail deep inside hashing). A field
that breaks a rule raises ``ApiError`` with its status and a message safe to show.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from flask import g, request
from werkzeug.http import parse_options_header

from cryptofiles import crypto
from cryptofiles.files import ByteRange, UploadInterrupted
from cryptofiles.web import connection
from cryptofiles.web.connection import ClientStalled

# Credentials are a few hundred bytes; a JSON body larger than this is refused before parsing.
MAX_JSON_BYTES = 64 * 1024
# ASCII digits only, and few of them: str.isdigit and int() also accept superscripts, fullwidth and
# Arabic-Indic digits, and int() raises on more than 4300 digits, which answered 500 once.
INTEGER_RE = re.compile(r"[0-9]{1,9}")

# How much of the request body is read at a time: one segment's worth keeps the pipeline simple.
BODY_BLOCK = crypto.SEGMENT_SIZE
MAX_FILE_NAME_CHARS = 255
CONTENT_TYPE_RE = re.compile(r"[A-Za-z0-9!#$&^_.+-]{1,63}/[A-Za-z0-9!#$&^_.+-]{1,63}")
TUS_INTEGER_RE = re.compile(r"[0-9]{1,16}")
TUS_METADATA_KEY_RE = re.compile(r"[!-+\--~]{1,64}")  # printable ASCII, no space or comma
MAX_TUS_METADATA = 4096
# tus's checksum extension: sha1 is the one every server must take; the digests' sizes.
TUS_CHECKSUMS = {"sha1": 20, "sha256": 32}
CUT_OFF = "The upload was cut off before the end of the body."
PLAIN_FILENAME_RE = re.compile(r';\s*filename\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)', re.IGNORECASE)
# C0 controls and DEL (header splitting, terminal escapes), and the Unicode bidirectional controls:
# embeddings and overrides U+202A-U+202E, isolates U+2066-U+2069, and the marks U+200E, U+200F,
# U+061C. These reorder how a name is displayed, so "invoice\u202efdp.exe" shows as "invoiceexe.pdf"
# in a listing or a save dialog; no legitimate file name needs them.
CONTROL_CHARS_RE = re.compile(r"[\x00-\x1f\x7f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


class ApiError(Exception):
    """A request that breaks a rule of this module, with its status and a message safe to show."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}


def json_object() -> dict[str, Any]:
    """The request's JSON object body ({} without one), parsed once per request."""
    cached = g.get("json_object")
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    body: dict[str, Any] = {}
    if request.mimetype == "application/json" and request.content_length != 0:
        if (request.content_length or 0) > MAX_JSON_BYTES:
            raise ApiError(413, f"A JSON body may be at most {MAX_JSON_BYTES} bytes.")
        data = connection.read(request.stream, MAX_JSON_BYTES + 1)
        if len(data) > MAX_JSON_BYTES:
            raise ApiError(413, f"A JSON body may be at most {MAX_JSON_BYTES} bytes.")
        try:
            parsed = json.loads(data)
        except (ValueError, RecursionError):  # malformed, or nested deeper than Python recurses
            parsed = None
        if not isinstance(parsed, dict):
            raise ApiError(400, "The request body must be a JSON object.")
        body = parsed
    g.json_object = body
    return body


def text_field(field: str, *, body: dict[str, Any] | None = None) -> str | None:
    """A text field from its header or, failing that, the JSON body; None when absent."""
    value: Any = request.headers.get(field)
    if value is not None:
        try:
            value = value.encode("latin-1").decode("utf-8")
        except UnicodeError:
            raise ApiError(400, f"{field} must be UTF-8 text.") from None
    else:
        value = (json_object() if body is None else body).get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError(400, f"{field} must be a string.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, f"{field} must be UTF-8 text.") from None
    return value


def credentials(*fields: str) -> list[str]:
    """Required text fields from the seed's headers or, as a later seed did, from a JSON body."""
    body = json_object()
    values = [text_field(field, body=body) or "" for field in fields]
    missing = [f for f, v in zip(fields, values, strict=True) if not v]
    if missing:
        raise ApiError(400, f"Missing {' and '.join(missing)} (as a header or in a JSON body).")
    return values


def int_arg(name: str, default: int, low: int, high: int) -> int:
    """The integer query parameter ``name`` (``default`` when absent), from ``low`` to ``high``."""
    raw = request.args.get(name)
    if raw is None:
        return default
    if not INTEGER_RE.fullmatch(raw) or not low <= int(raw) <= high:
        raise ApiError(400, f"{name} must be an integer from {low} to {high}.")
    return int(raw)


# -- grants and listings ------------------------------------------------------------------------

SHARED_VALUES = ("with-me",)


def grant_request() -> tuple[str, datetime | None]:
    """``{"user": NAME, "expires_at": optional ISO 8601 time with its zone}`` of a new grant."""
    body = json_object()
    user = body.get("user")  # the body only: no header is read for it
    if user is not None and not isinstance(user, str):
        raise ApiError(400, "user must be a string.")
    if not user:
        raise ApiError(400, 'Name the user to grant: {"user": NAME} as a JSON body.')
    raw = body.get("expires_at")
    if raw is None:
        return user, None
    if not isinstance(raw, str) or len(raw) > 64:
        raise ApiError(400, "expires_at must be an ISO 8601 time such as 2030-01-31T12:00:00Z.")
    try:
        parsed = datetime.fromisoformat(raw)
        # Near year 1 or 9999 an offset can carry the time out of datetime's range.
        expires_at = parsed.astimezone(UTC) if parsed.tzinfo is not None else None
    except (ValueError, OverflowError):
        expires_at = None
    if expires_at is None:
        raise ApiError(
            400, "expires_at must be an ISO 8601 time with its zone, such as 2030-01-31T12:00:00Z."
        )
    return user, expires_at


def shared_arg() -> str | None:
    """``shared`` of ``GET /files``: absent (your own files) or ``with-me``."""
    value = request.args.get("shared")
    if value is not None and value not in SHARED_VALUES:
        raise ApiError(400, "shared must be with-me (or absent, for your own files).")
    return value


def link_settings() -> tuple[datetime | None, int | None]:
    """``expires_at`` (ISO 8601 with its time zone) and ``max_downloads`` of a new share link, from
    the JSON body; None for each one absent. Their ranges are the links service's rules."""
    body = json_object()
    expires_at, max_downloads = body.get("expires_at"), body.get("max_downloads")
    if expires_at is not None:
        try:
            # fromisoformat also takes non-ASCII digits; the ASCII check keeps the format strict.
            if not isinstance(expires_at, str) or not expires_at.isascii():
                raise ValueError("not text")
            expires_at = datetime.fromisoformat(expires_at)
        except ValueError:
            raise ApiError(
                400, "expires_at must be an ISO 8601 time such as 2030-01-31T12:00:00Z."
            ) from None
        if expires_at.tzinfo is None:
            raise ApiError(400, "expires_at must include its time zone (for example a final Z).")
    # bool is an int in Python; JSON's true is not a count.
    if max_downloads is not None and (
        not isinstance(max_downloads, int) or isinstance(max_downloads, bool)
    ):
        raise ApiError(400, "max_downloads must be an integer.")
    return expires_at, max_downloads


# -- uploads ------------------------------------------------------------------------------------


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
    return _file_name(name)


def _file_name(name: str | None) -> str | None:
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
    return _content_type(request.headers.get("X-Content-Type", ""), "X-Content-Type")


def _content_type(value: str, field: str) -> str | None:
    value = value.strip()
    if not value:
        return None
    if not CONTENT_TYPE_RE.fullmatch(value):
        raise ApiError(400, f"{field} must be a media type such as text/plain.")
    return value.lower()


# -- resumable uploads (tus 1.0) ----------------------------------------------------------------


def tus_length() -> int:
    """``Upload-Length`` of a new upload; a deferred length and concatenation are refused."""
    if "Upload-Concat" in request.headers:
        # Not offered in Tus-Extension; a client that sends it anyway (tus-js-client's
        # parallelUploads) would otherwise store its parts as separate files.
        raise ApiError(
            400,
            "Upload-Concat is not supported: upload the file as one upload (no parallel parts).",
        )
    if "Upload-Defer-Length" in request.headers:
        raise ApiError(
            400, "Upload-Defer-Length is not supported: send Upload-Length (the file's size)."
        )
    return _tus_integer("Upload-Length")


def tus_offset() -> int:
    return _tus_integer("Upload-Offset")


def _tus_integer(field: str) -> int:
    raw = request.headers.get(field)
    if raw is None:
        raise ApiError(400, f"{field} is required.")
    # Up to 2**53: more than any size limit, less than JSON's exact integers.
    if not TUS_INTEGER_RE.fullmatch(raw.strip()):
        raise ApiError(400, f"{field} must be a whole number of bytes (ASCII digits).")
    return int(raw)


def tus_metadata() -> tuple[str | None, str | None]:
    """The file's name and content type from ``Upload-Metadata`` (``filename``, ``filetype``).

    The header is ``key base64value`` pairs separated by commas; other keys are allowed and
    ignored, as tus asks (clients add their own, such as tus-js-client's ``name``).
    """
    raw = request.headers.get("Upload-Metadata", "")
    if len(raw) > MAX_TUS_METADATA:
        raise ApiError(400, f"Upload-Metadata must be at most {MAX_TUS_METADATA} bytes.")
    values: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in raw.split(","))):
        key, _, value = pair.partition(" ")
        if not TUS_METADATA_KEY_RE.fullmatch(key) or key in values:
            raise ApiError(400, "Upload-Metadata must be unique keys, each with a base64 value.")
        try:
            values[key] = base64.b64decode(value.strip(), validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            raise ApiError(
                400, f"Upload-Metadata: the value of {key!r} must be base64 of UTF-8 text."
            ) from None
    return _file_name(values.get("filename")), _content_type(
        values.get("filetype", ""), "Upload-Metadata filetype"
    )


def tus_checksum() -> tuple[str, bytes] | None:
    """``(algorithm, digest)`` of ``Upload-Checksum: <sha1|sha256> <base64>``, if sent."""
    raw = request.headers.get("Upload-Checksum")
    if raw is None:
        return None
    algorithm, _, value = raw.strip().partition(" ")
    algorithm = algorithm.lower()
    if algorithm not in TUS_CHECKSUMS:
        raise ApiError(
            400, "Upload-Checksum: the algorithm must be sha1 or sha256 (Tus-Checksum-Algorithm)."
        )
    try:
        digest = base64.b64decode(value.strip(), validate=True)
    except ValueError:
        digest = b""
    if len(digest) != TUS_CHECKSUMS[algorithm]:
        raise ApiError(
            400, f"Upload-Checksum must be '{algorithm} <base64 of the body's {algorithm} digest>'."
        )
    return algorithm, digest


def tus_body_type() -> None:
    if request.mimetype != "application/offset+octet-stream":
        raise ApiError(415, "The body's Content-Type must be application/offset+octet-stream.")


# -- downloads ----------------------------------------------------------------------------------


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


# -- keys and recipients ------------------------------------------------------------------------

RECIPIENT_FIELDS = frozenset({"recipients", "require_sealed"})
# Answer forms of a key: armored age text (curl, $(...)), JSON, or the binary age file.
KEY_FORMS = {
    "text/plain": "text",
    "application/json": "json",
    "application/problem+json": "json",
    "application/octet-stream": "binary",
}


def recipients_update() -> tuple[list[str], bool | None]:
    """``PUT /account/recipients``'s body: ``{"recipients": [...], "require_sealed": bool}``;
    ``require_sealed`` may be left out (the current rule stays). Unknown fields are refused, so a
    misspelt ``require_sealed`` cannot silently leave keys unsealed."""
    body = json_object()
    unknown = set(body) - RECIPIENT_FIELDS
    if unknown or "recipients" not in body:
        raise ApiError(
            400,
            'Send a JSON object {"recipients": ["age1...", ...], "require_sealed": true|false} '
            "and no other field.",
        )
    recipients = body["recipients"]
    if not isinstance(recipients, list) or not all(isinstance(r, str) for r in recipients):
        raise ApiError(400, "recipients must be a list of strings (age1...).")
    require_sealed = body.get("require_sealed")
    if require_sealed is not None and not isinstance(require_sealed, bool):
        raise ApiError(400, "require_sealed must be true or false.")
    return recipients, require_sealed


def key_form() -> str:
    """The form a key answer should take: "text" (curl's */* included), "json" or "binary"."""
    best = request.accept_mimetypes.best_match(list(KEY_FORMS))
    return KEY_FORMS.get(best or "", "text")


def plain_key_asked() -> bool:
    """``?plain=1``: the plain key, even for a user with recipients (the URL carries no secret)."""
    raw = request.args.get("plain")
    if raw is None or raw == "0":
        return False
    if raw == "1":
        return True
    raise ApiError(400, "plain must be 1 or 0.")
