"""The ``cryptofiles`` command: a client of the server's HTTP API, and admin tasks on its database.

Client commands speak HTTP with the standard library only, stream every transfer in blocks (memory
use does not grow with file size) and decrypt downloads on this machine: the server's ``/plaintext``
route is never used, so with ``download --decrypt`` plaintext exists only here. Output files are
written to a private temporary file beside the target and renamed onto it only once complete, so a
failed, interrupted or tampered transfer never leaves partial output.

``admin`` commands do not use HTTP: they call the services on the database with the server's own
configuration (environment, ``.env``, and the launcher's ``var/secrets.env`` for missing secrets).

Exit status: 0 success; 1 other errors (the server's message is shown); 2 usage or configuration
error; 3 server or database unreachable; 4 not logged in or token rejected; 5 no such file; 6 file
over the server's size limit; 7 transfer interrupted; 8 decryption failed (wrong key or tampered
data); 130 interrupted by Ctrl-C.

The modules, from the command line inward:

- ``main``: the argument parser and ``main()``, which turns every ``CliError`` into one line on
  stderr and its exit status (``python -m cryptofiles.cli`` runs it).
- ``client``: the client commands (register, login, logout, whoami, keygen, upload, ls, info, rm,
  key, download, decrypt).
- ``resumable``: ``upload --resume``, a tus client that records uploads in progress so that a
  re-run resumes them.
- ``sealed``: ``keygen`` (an age identity, its recipient registered) and opening sealed keys.
- ``admin``: the ``admin`` tasks, through ``cryptofiles.services`` like the server itself.
- ``transport``: the server's address (``ServerUrl``), HTTP requests (``Api``), stored tokens
  (``TokenStore``).
- ``output``: the files this command writes: private, atomic, never partial; safe names.
- ``terminal``: what a person sees and types: progress bars, password prompts, printable text.

This module holds what they all share: the exit statuses and ``CliError``.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_AUTH = 4
EXIT_NOT_FOUND = 5
EXIT_TOO_LARGE = 6
EXIT_INTERRUPTED = 7
EXIT_DECRYPT = 8
EXIT_SIGINT = 130


class CliError(Exception):
    """A failure to report as one line on stderr, with the exit status it maps to."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
