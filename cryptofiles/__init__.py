"""crypto-files-server: a Flask REST API that stores every file encrypted under its own random key.

See README.md for the routes, configuration and security model, and docs/architecture.md for how the
modules fit together. The application factory is ``cryptofiles.web.create_app``.
"""

__version__ = "0.1.0"
