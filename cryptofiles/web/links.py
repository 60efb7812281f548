"""Share links over HTTP: the owner's routes (create, list, revoke) and the holder's (the page and
the ciphertext download, no account needed).

The work is ``links.LinkService``'s. The owner's routes look the file up with
``files.get(id, owner=...)``, so anyone else gets the unknown-id 404. Every dead link (unknown,
expired, revoked, used up, its file gone) is the one ``NoSuchLink``, answered by the error table
with one 404. Every route is rate-limited per client address (``RATE_LIMIT_LINKS``, per route).
"""

from __future__ import annotations

import json
from pathlib import Path

from flask import Blueprint, Response, g, jsonify, request, url_for

from cryptofiles.web.context import current_services
from cryptofiles.web.guard import token_required
from cryptofiles.web.inputs import link_settings
from cryptofiles.web.page import SECURITY_HEADERS
from cryptofiles.web.ratelimit import client_address, limited
from cryptofiles.web.responses import link_json, ranged_response, reply

# The page a link opens; its one variable part is a JSON data block (the page runs no inline code).
PAGE = (Path(__file__).parent / "link_page.html").read_text(encoding="utf-8")

bp = Blueprint("links", __name__)


@bp.post("/files/<file_id>/links")
@token_required
@limited("links", by=client_address)
def create_link(file_id: str) -> Response:
    services = current_services()
    record = services.files.get(file_id, owner=g.principal.user.public_id)
    expires_at, max_downloads = link_settings()
    new = services.links.create(record, expires_at=expires_at, max_downloads=max_downloads)
    url = url_for("links.link_page", token=new.token, _external=True)
    response = reply(url, 201, json={**link_json(new.link, 0), "url": url, "token": new.token})
    response.headers["Cache-Control"] = "no-store"  # the token is in it, shown this once
    return response


@bp.get("/files/<file_id>/links")
@token_required
@limited("links", by=client_address)
def list_links(file_id: str) -> Response:
    services = current_services()
    record = services.files.get(file_id, owner=g.principal.user.public_id)
    statuses = services.links.live(record)
    return jsonify(links=[link_json(s.link, s.downloads) for s in statuses])


@bp.delete("/files/<file_id>/links/<link_id>")
@token_required
@limited("links", by=client_address)
def revoke_link(file_id: str, link_id: str) -> Response:
    services = current_services()
    record = services.files.get(file_id, owner=g.principal.user.public_id)
    services.links.revoke(record, link_id)
    return Response(status=204)


@bp.get("/s/<token>")
@limited("links", by=client_address)
def link_page(token: str) -> Response:
    """The page that downloads, decrypts (key from the URL fragment) and saves the file."""
    _, record = current_services().links.open(token)  # no download counted: only looking
    data = {"name": record.name or record.id, "size": record.size, "stored": record.stored_size}
    # In a <script type="application/json"> block: no "<" may close it, whatever the file name.
    text = json.dumps(data).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    response = Response(PAGE.replace("{{data}}", text), mimetype="text/html")
    response.headers.update(SECURITY_HEADERS)
    response.headers["Cache-Control"] = "no-store"  # the token is in the address
    return response


@bp.get("/s/<token>/file")
@limited("links", by=client_address)
def link_file(token: str) -> Response:
    """The ciphertext, whole (each request counts one download, so no ranges and no 304).

    HEAD counts nothing: it sends no file (link previews and ``curl -I`` would spend downloads)."""
    services = current_services()
    if request.method == "HEAD":
        _, record = services.links.open(token)
    else:
        record = services.links.download(token, client_address(), g.get("request_id"))
    response = ranged_response(
        record.stored_size,
        etag=record.id,
        body=lambda span: services.files.ciphertext(record, span),
        mimetype="application/octet-stream",
        filename=f"{record.name or record.id}.enc",
        ranges=False,
    )
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response
