"""Helpers shared by the tests, one module per concern; fixtures stay in the conftest.py files.

- ``settings.py``: settings of a test app on a fresh database (cheap password hash, rate limits)
- ``apps.py``: an app that drops its database and closes its client afterwards
- ``api.py``: the client's steps through Flask's test client (register, log in, upload)
- ``answers.py``: comparing answers without their per-request headers
- ``server.py``: the real server as ``make run`` starts it (``cryptofiles.dev.harness``)
- ``database.py``: a local database the fault tests kill, pause and restart in place
- ``processes.py``: bounded waits and what /proc says about processes and connections
- ``loopback.py``: a small HTTP client over loopback that never hangs, and slow uploads
- ``load.py``: client threads under load, and checking every acknowledged upload afterwards
- ``cutting_proxy.py``: a TCP proxy that logs requests and kills PATCH uploads mid-body (tus)

The Tink oracle is ``cryptofiles.dev.tink_oracle`` (the bench uses it too).
"""
