"""Reading what clients send, safely: text fields from headers or a JSON body, integer query parameters.

Every field a view reads goes through here, so the rules live in one place: header values are
decoded as UTF-8 (WSGI hands them over as latin-1), JSON bodies are bounded in size and nesting,
values must be strings (operator objects such as {"$gt": ""} never reach a query), and text must
be encodable (a lone surrogate from a JSON escape would otherwise fail deep inside hashing).
"""

from __future__ import annotations

import json
import re
from typing import Any

from flask import g, request

from cryptofiles.web import connection
from cryptofiles.web.errors import ApiError

# Credentials are a few hundred bytes; a JSON body larger than this is refused before parsing.
MAX_JSON_BYTES = 64 * 1024
# ASCII digits only, and few of them: str.isdigit and int() also accept superscripts, fullwidth and
# Arabic-Indic digits, and int() raises on more than 4300 digits, which answered 500 once.
INTEGER_RE = re.compile(r"[0-9]{1,9}")


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
