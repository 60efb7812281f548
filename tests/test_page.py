"""The web page's routes: what is served, and the security headers every answer under /app/ carries.
(The page itself, in a browser, is tests/browser/; its scripts under Node, tests/test_page_scripts.py.)"""

from __future__ import annotations

import re

import pytest
from flask.testing import FlaskClient

from cryptofiles.web.page import ASSETS

POLICY = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self'",
    "connect-src": "'self'",
    "worker-src": "'self'",
    "frame-src": "'self'",
    "object-src": "'none'",
    "base-uri": "'none'",
    "form-action": "'none'",
    "frame-ancestors": "'none'",
}


def policy_of(header: str) -> dict[str, str]:
    directives = (d.strip().split(None, 1) for d in header.split(";") if d.strip())
    return {name: value for name, value in directives}


@pytest.mark.parametrize("path", ["/app/", "/app/app.js", "/app/sw.js", "/app/style.css"])
def test_every_answer_carries_the_strict_policy(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    response.close()
    assert response.status_code == 200
    assert policy_of(response.headers["Content-Security-Policy"]) == POLICY  # no 'unsafe-*'
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cross-Origin-Opener-Policy"] == "same-origin"


def test_scripts_are_served_as_javascript_and_revalidated(client: FlaskClient) -> None:
    for name in ("app.js", "api.js", "tus.js", "decrypt.js", "downloads.js", "sw.js"):
        response = client.get(f"/app/{name}")
        response.close()
        assert response.mimetype == "text/javascript", name
        assert response.headers["Cache-Control"] == "no-cache", name
    assert "index.html" in ASSETS and "decrypt.js" in ASSETS


def test_the_page_has_no_inline_code_and_loads_only_its_own_files(client: FlaskClient) -> None:
    response = client.get("/app/")
    html = response.text
    response.close()
    assert "<script>" not in html  # every script has a src
    assert not re.search(r"<[^>]*\son\w+\s*=", html)  # no inline event handlers
    assert "style=" not in html and "<style" not in html
    assert "http://" not in html and "https://" not in html  # nothing from another origin


def test_the_root_leads_to_the_page_and_unknown_assets_are_404(client: FlaskClient) -> None:
    response = client.get("/")
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/app/")
    assert client.get("/app/secrets.env").status_code == 404
    assert client.get("/app/..%2fpage.py").status_code == 404
