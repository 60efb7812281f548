"""The time seam: services take a ``Clock`` instead of reading the time themselves, so that tests
can issue tokens, expire uploads and date files at the moment they choose."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)
