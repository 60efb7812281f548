"""CPU-bound work kept off the event loop.

Under gunicorn's gevent worker every request of a process shares one native thread. A password
hash (scrypt: 32 MiB and about 0.1-0.3 s of CPU) run there would stop every other request of the
worker for that long. ``run`` hands such work to gevent's pool of native threads, where it runs
while the loop goes on serving (hashlib releases the GIL while it hashes); the calling greenlet
waits for the result. Without gevent (tests, the CLI, other servers) it simply calls the function.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def run(function: Callable[..., T], *args: object) -> T:
    if _gevent_patched():
        import gevent

        return gevent.get_hub().threadpool.apply(function, args)  # type: ignore[no-any-return]
    return function(*args)


def _gevent_patched() -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("threading"))
