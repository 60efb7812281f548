"""The API's description: ``GET /openapi.json`` and interactive documentation at ``GET /docs``.

The OpenAPI document is written by hand in ``openapi.yaml`` beside this module (tests/test_openapi.py
keeps it true to the routes) and read once, when the routes are registered. ``/docs`` is Swagger UI,
served entirely from the distribution that the flask-swagger-ui package ships: nothing is fetched from
a CDN, so the page works offline. Neither route needs a token.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import flask_swagger_ui
import yaml
from flask import Flask, Response, send_from_directory, url_for

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
  <script src="{js}"></script>
  <script>
    window.ui = SwaggerUIBundle({config});
  </script>
</body>
</html>
"""


def load_spec() -> dict[str, object]:
    text = resources.files("cryptofiles").joinpath("openapi.yaml").read_text(encoding="utf-8")
    spec = yaml.safe_load(text)
    if not isinstance(spec, dict):
        raise ValueError("cryptofiles/openapi.yaml is not an OpenAPI document")
    return spec


def register_docs(app: Flask) -> None:
    spec_json = json.dumps(load_spec())

    @app.get("/openapi.json")
    def openapi_json() -> Response:
        return Response(spec_json, mimetype="application/json")

    @app.get("/docs")
    def docs() -> Response:
        config = {
            "url": url_for("openapi_json"),
            "dom_id": "#swagger-ui",
            "deepLinking": True,
            "validatorUrl": None,  # the default would send the document's URL to swagger.io
        }
        page = PAGE.format(
            css=url_for("docs_asset", filename="swagger-ui.css"),
            icon=url_for("docs_asset", filename="favicon-32x32.png"),
            js=url_for("docs_asset", filename="swagger-ui-bundle.js"),
            config=json.dumps(config),
        )
        return Response(page, mimetype="text/html")

    @app.get("/docs/<path:filename>")
    def docs_asset(filename: str) -> Response:
        return send_from_directory(ASSETS_DIR, filename)
