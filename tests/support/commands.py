"""Counting database commands with pymongo's command monitoring (``Storage``'s ``event_listeners``)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from pymongo import monitoring


class CommandCounter(monitoring.CommandListener):
    """Records the name and collection of every command the client starts, in order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.commands: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        target = event.command.get(event.command_name)
        what = f"{event.command_name} {target}" if isinstance(target, str) else event.command_name
        with self._lock:
            self.commands.append(what)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    @contextlib.contextmanager
    def watching(self) -> Iterator[list[str]]:
        """The commands started inside the block (the list fills in as they run)."""
        seen: list[str] = []
        with self._lock:
            start = len(self.commands)
        try:
            yield seen
        finally:
            with self._lock:
                seen.extend(self.commands[start:])
