"""The web page: ``/app/``, a single page that does the seed's whole job in a browser.

Everything it needs is served from here, from files in the package (``web/static/``): no CDN, no
build step. The page talks to the same API as curl does (``POST /login`` being the one route added
for it), keeps its token in ``sessionStorage`` and decrypts downloads in the browser: the server
only ever sends it ciphertext. ``sw.js``, a service worker, turns a download into a stream that the
browser saves to disk as it is decrypted, so memory does not grow with the file.

Every answer carries a strict Content-Security-Policy: scripts, styles, workers and frames from this
origin only, nothing inline, no plugins, no framing of the page, no ``<base>``; the page is written to
work under it (no inline handlers, no ``style`` attributes, no ``eval``).
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, abort, redirect, send_from_directory, url_for
from werkzeug.wrappers import Response as BaseResponse

ASSETS_DIR = Path(__file__).parent / "static"
# The files in the folder, and nothing else: no path reaches beyond it.
ASSETS = frozenset(path.name for path in ASSETS_DIR.iterdir() if path.is_file())

CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "worker-src 'self'",
        "frame-src 'self'",  # the hidden frame that starts a service-worker download
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",  # forms are handled by script; none is ever submitted
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",  # for browsers without frame-ancestors
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    # Revalidated on every load (ETag), so an upgraded server never runs with a stale script.
    "Cache-Control": "no-cache",
}

bp = Blueprint("page", __name__)


@bp.after_request
def _secure(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


@bp.get("/")
def root() -> BaseResponse:
    # A person who types the server's address lands on the page; the API has nothing at "/".
    return redirect(url_for("page.index"))


@bp.get("/app/")
def index() -> Response:
    return send_from_directory(ASSETS_DIR, "index.html")


@bp.get("/app/<name>")
def asset(name: str) -> Response:
    if name not in ASSETS:
        abort(404)
    return send_from_directory(ASSETS_DIR, name)
