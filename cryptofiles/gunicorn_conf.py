"""gunicorn server hooks (passed with ``--config python:cryptofiles.gunicorn_conf``).

Only hooks live here; every option is on the command line (serve.py, Dockerfile), in one place each.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from cryptofiles.metrics import child_exit

__all__ = ["child_exit", "on_starting"]


def on_starting(server: object) -> None:
    """Start with an empty metrics folder: files of an earlier run would be added up too."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
        Path(folder).mkdir(parents=True)
