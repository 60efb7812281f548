"""Logging: one JSON object per line, each with the request id; security events (audit.py) get
who and from where.

What is never logged: passwords, tokens (share links' too: ``logged_path``), file keys, master
keys, file contents, request bodies, and header values. User input that is logged (a user name, a
file id) goes through the JSON encoder, so CR/LF and quotes in it cannot forge log lines. pymongo's
command logs (which would show documents) are held at WARNING whatever LOG_LEVEL says.
"""

from __future__ import annotations

import logging
import re
import sys
import time
import uuid

from flask import Flask, Response, g, has_request_context, request
from pythonjsonlogger.json import JsonFormatter

from cryptofiles.audit import security_log

request_log = logging.getLogger("cryptofiles.request")

# A client may pass its own id for correlation, if it looks like one (never arbitrary text).
REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._-]{8,64}")


def logged_path() -> str:
    """The request's path as it may be logged: a share link's token (a credential, in the path)
    is replaced by ``<token>``."""
    token = (request.view_args or {}).get("token")
    if isinstance(token, str) and token:
        return request.path.replace(token, "<token>")
    return request.path


class _RequestContext(logging.Filter):
    """Every line gets the request id; a security event (audit.py) also who and from where."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not has_request_context():
            record.request_id = None
            return True
        record.request_id = g.get("request_id")
        details = getattr(record, "details", None)
        if record.name == security_log.name and isinstance(details, dict):
            principal = g.get("principal")
            if principal is not None:
                details.setdefault("user", principal.user.public_id)
            details.setdefault("client", request.remote_addr)
        return True


def configure_logging(level: str) -> None:
    """Send every record to stderr as JSON. Idempotent: safe for every create_app()."""
    root = logging.getLogger()
    root.setLevel(level)
    if not any(getattr(h, "_cryptofiles", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            JsonFormatter(
                "{asctime}{levelname}{name}{message}",
                style="{",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
        handler.addFilter(_RequestContext())
        handler._cryptofiles = True  # type: ignore[attr-defined]
        root.handlers = [handler]
    for noisy in ("pymongo", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def init_request_logging(app: Flask) -> None:
    @app.before_request
    def start() -> None:
        offered = request.headers.get("X-Request-Id", "")
        g.request_id = offered if REQUEST_ID_RE.fullmatch(offered) else uuid.uuid4().hex
        g.started = time.perf_counter()

    @app.after_request
    def finish(response: Response) -> Response:
        response.headers["X-Request-Id"] = g.get("request_id", "")
        principal = g.get("principal")
        request_log.info(
            "request",
            extra={
                "method": request.method,
                "path": logged_path(),  # never the query string, nor a link's token
                "status": response.status_code,
                "ms": round(
                    (time.perf_counter() - g.get("started", time.perf_counter())) * 1000, 1
                ),
                "user": principal.user.public_id if principal else None,
            },
        )
        return response
