"""The API's description: ``GET /openapi.json`` and interactive documentation at ``GET /docs``.

The OpenAPI document is written by hand in ``cryptofiles/openapi.yaml`` (package data;
tests/test_openapi.py keeps it true to the routes) and read once per process, when the first app
registers these routes: a broken document stops the start, not a request. ``/docs`` is Swagger UI,
served entirely from the distribution that the flask-swagger-ui package ships: nothing is fetched
from a CDN, so the page works offline. Neither route needs a token.

The page runs no inline code, so that its Content-Security-Policy can forbid inline scripts: it
carries Swagger UI's settings as a JSON data block (never executed) that ``INIT_JS``, served from
``/docs/`` like the bundle, reads and hands to Swagger UI. Every value put into the page is escaped.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from pathlib import Path

import flask_swagger_ui
import yaml
from flask import Blueprint, Response, send_from_directory, url_for
from flask.sansio.blueprints import BlueprintSetupState
from jinja2.utils import htmlsafe_json_dumps
from markupsafe import escape

# Swagger UI's JavaScript, CSS and icons, as the package bundles them.
ASSETS_DIR = Path(flask_swagger_ui.__file__).parent / "dist"

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>crypto-files-server API</title>
  <link rel="stylesheet" href="{css}">
  <link rel="icon" type="image/png" href="{icon}">
</head>
<body>
  <div id="swagger-ui"></div>
  <script type="application/json" id="swagger-config">{config}</script>
  <script src="{js}"></script>
  <script src="{init}"></script>
</body>
</html>
"""
# Served as /docs/INIT_NAME: a name the Swagger UI distribution does not use.
INIT_NAME = "cryptofiles-init.js"
INIT_JS = """"use strict";
window.ui = SwaggerUIBundle(
  JSON.parse(document.getElementById("swagger-config").textContent)
);
"""
# Only what the page loads, from here: no inline script or style, no plugins, no framing
# (clickjacking), no <base> to re-point relative URLs. Swagger UI sets element styles from script
# (the CSSOM, which style-src does not govern) and its stylesheet draws icons as data: images.
CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


def load_spec() -> dict[str, object]:
    text = resources.files("cryptofiles").joinpath("openapi.yaml").read_text(encoding="utf-8")
    spec = yaml.safe_load(text)
    if not isinstance(spec, dict):
        raise ValueError("cryptofiles/openapi.yaml is not an OpenAPI document")
    return spec


bp = Blueprint("docs", __name__)


@functools.cache
def spec_json() -> str:
    return json.dumps(load_spec())


@bp.record_once
def _read_document(_state: BlueprintSetupState) -> None:
    spec_json()


@bp.get("/openapi.json")
def openapi_json() -> Response:
    return Response(spec_json(), mimetype="application/json")


@bp.get("/docs")
def docs() -> Response:
    config = {
        "url": url_for("docs.openapi_json"),
        "dom_id": "#swagger-ui",
        "deepLinking": True,
        "validatorUrl": None,  # the default would send the document's URL to swagger.io
    }
    # Escaped although every value is ours: a URL carries the request's path prefix
    # (SCRIPT_NAME), which a client once set to markup through a header.
    page = PAGE.format(
        css=escape(url_for("docs.docs_asset", filename="swagger-ui.css")),
        icon=escape(url_for("docs.docs_asset", filename="favicon-32x32.png")),
        js=escape(url_for("docs.docs_asset", filename="swagger-ui-bundle.js")),
        init=escape(url_for("docs.docs_asset", filename=INIT_NAME)),
        # JSON with <, > and & escaped: nothing in it can close the data block.
        config=htmlsafe_json_dumps(config),
    )
    response = Response(page, mimetype="text/html")
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Frame-Options"] = "DENY"  # for browsers without frame-ancestors
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@bp.get("/docs/<path:filename>")
def docs_asset(filename: str) -> Response:
    if filename == INIT_NAME:
        return Response(INIT_JS, mimetype="text/javascript")
    return send_from_directory(ASSETS_DIR, filename)
