"""System packages the set-up installs when it may: Debian's, through ``apt-get``, as root only.

Shared by the database set-up (PostgreSQL) and the browser tests' set-up (Chromium). Anyone else is
told which packages to install; nothing here asks for a password.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import IO

__all__ = ["apt_install"]


def apt_install(packages: list[str], what: str, out: IO[str] = sys.stderr) -> bool:
    """``apt-get install -y <packages>`` when we may (root, apt-get present); True if it worked."""
    apt = shutil.which("apt-get")
    if os.geteuid() != 0 or apt is None:
        return False
    print(f"Installing {what} with apt-get (first time only)...", file=out, flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [apt, "install", "-y", *packages]
    if subprocess.run(install, env=env, check=False).returncode == 0:
        return True
    # A fresh image has no package lists yet.
    subprocess.run([apt, "update"], env=env, check=False)
    return subprocess.run(install, env=env, check=False).returncode == 0
