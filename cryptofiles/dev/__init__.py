"""What a developer's machine runs around the service, never the service itself.

- ``database.py``: the local MongoDB-wire server (mongod, or FerretDB built with Go) that ``make`` and
  the tests start when ``MONGODB_URI`` is unset (``python -m cryptofiles.dev.database ensure``).
- ``serve.py``: the launcher behind ``make run`` (``python -m cryptofiles.dev.serve``): secrets file,
  local database, gunicorn.
- ``harness.py``: starts and stops that launcher on a free port for the tests and the bench.
- ``tink_oracle.py``: Google Tink around our file keys, the independent implementation that the
  format tests and the bench's baseline compare us with (Tink is a dev dependency).

The service (``create_app`` and everything it uses) imports nothing from here.
"""
