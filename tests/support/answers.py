"""Everything a client can observe of an answer, for tests that require two answers to be the same."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from werkzeug.test import TestResponse

# Headers whose value changes from one request to the next whatever the request was: leaving them
# out is what makes "the same answer" comparable. Everything else must match exactly.
VOLATILE_HEADERS = frozenset(
    {"date", "x-request-id", "x-ratelimit-reset", "ratelimit-reset", "ratelimit-policy"}
)


def stable_headers(response: TestResponse) -> dict[str, str]:
    """The answer's headers without the per-request ones (see VOLATILE_HEADERS)."""
    return {k.lower(): v for k, v in response.headers.items() if k.lower() not in VOLATILE_HEADERS}


def answer(response: TestResponse) -> tuple[int, str | None, bytes, dict[str, str]]:
    """Everything a client can observe of an answer, bar the per-request headers."""
    return response.status_code, response.content_type, response.data, stable_headers(response)


def keys_of(value: Any) -> set[str]:
    """Every key of every object nested in a JSON value."""
    if isinstance(value, Mapping):
        return set(value) | {k for v in value.values() for k in keys_of(v)}
    if isinstance(value, list):
        return {k for v in value for k in keys_of(v)}
    return set()
