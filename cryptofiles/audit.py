"""Security events: what the services report (failed logins and password checks, rejected tokens,
requests for somebody else's file, rate-limit hits), with no knowledge of HTTP.

Events go to the ``cryptofiles.security`` logger with their fields under ``details``. Who the
request was for and where it came from are added by the web layer's log filter (``web/logs.py``),
so services stay usable without Flask (the CLI, tests). User input in a field goes through
``clip`` and the JSON encoder: bounded, and unable to forge log lines.
"""

from __future__ import annotations

import logging
from typing import Any

security_log = logging.getLogger("cryptofiles.security")

MAX_LOGGED_TEXT = 64


def clip(text: object) -> str:
    """User-supplied text, bounded in length; JSON encoding takes care of control characters."""
    return str(text)[:MAX_LOGGED_TEXT]


def security_event(event: str, **fields: Any) -> None:
    # Under "details": field names can never collide with LogRecord's own (name, msg, ...).
    security_log.warning(event, extra={"event": event, "details": fields})
