"""gunicorn server hooks (passed with ``--config python:cryptofiles.gunicorn_conf``).

Only hooks live here; every option is on the command line (serve.py, Dockerfile), in one place each.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from cryptofiles.web.metrics import child_exit

__all__ = ["child_exit", "on_starting", "post_worker_init", "pre_request"]

# The seed's account headers, as gunicorn's parser spells names (upper case). Their hyphen twins
# (User-Name) map to the same WSGI key; the app cannot tell the two apart, and does not need to.
SEED_HEADERS = frozenset({"NEW_USER_NAME", "NEW_USER_PASSWORD", "USER_NAME", "USER_PASSWORD"})


def on_starting(server: object) -> None:
    """Start with an empty metrics folder: files of an earlier run would be added up too."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
        Path(folder).mkdir(parents=True)


def pre_request(worker: object, req: Any) -> None:
    """Drop every header whose name has an underscore, except the seed's four.

    Runs after parsing and before the WSGI environment is built from ``req.headers``. WSGI writes
    header ``X-Y`` as ``HTTP_X_Y``, so ``X_Y`` would land on the same key, and gunicorn reads some
    underscore names as server variables (``SCRIPT_NAME``, ``PATH_INFO``): with ``--header-map
    dangerous`` a client could set the path prefix, or make ``Transfer_Encoding: chunked`` override
    the real ``Content-Length`` for the app. gunicorn's own framing uses only the hyphenated names,
    so after this filter the environment says what the socket said.
    """
    req.headers = [
        (name, value) for name, value in req.headers if "_" not in name or name in SEED_HEADERS
    ]


class _StalledClientFilter(logging.Filter):
    """One plain line, not an error with a traceback, for a client cut off by the idle limit.

    A client that stops reading a download (or sending a request) for ``IDLE_TIMEOUT_SECONDS``
    (web/connection.py) is closed on purpose; gunicorn reports the socket's timeout as "Socket error
    processing request" at ERROR level with a traceback, which would bury real errors.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], TimeoutError):
            record.msg, record.args = "Closed a connection whose client stalled (idle limit).", ()
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def post_worker_init(worker: Any) -> None:
    worker.log.error_log.addFilter(_StalledClientFilter())
