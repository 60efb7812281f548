"""Sharing over HTTP: a file's grants (``/files/<id>/grants``) and its access history
(``/files/<id>/events``), both for the file's owner only.

The work is ``sharing.Sharing``'s and ``sharing.History``'s. Every route looks the file up with
``FileService.get(id, owner=...)`` first, so that anyone but the owner gets exactly the answer of an
unknown id. ``actor()`` is what an event records of the request (never a token or a body).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, g, jsonify, request

from cryptofiles.sharing import Actor, NamedGrant
from cryptofiles.storage.events import Event
from cryptofiles.web.context import current_services
from cryptofiles.web.guard import token_required
from cryptofiles.web.inputs import grant_request, int_arg
from cryptofiles.web.ratelimit import client_address

DEFAULT_PAGE = 50
MAX_PAGE = 1000

bp = Blueprint("sharing", __name__)


def actor() -> Actor:
    """Who acts in this request, from where, under which request id (``web.logs``)."""
    user = g.principal.user
    return Actor(user.public_id, user.name, client_address(), g.get("request_id"))


def grant_json(named: NamedGrant) -> dict[str, Any]:
    expires_at = named.grant.expires_at
    return {
        "user": named.grantee_name,
        "expires_at": expires_at.isoformat() if expires_at else None,
        "created_at": named.grant.created_at.isoformat(),
    }


def event_json(event: Event) -> dict[str, Any]:
    details = {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in event.details.items()}
    return {
        "id": event.id,
        "at": event.at.isoformat(),
        "action": event.action,
        "user": {"id": event.user, "name": event.user_name},
        "client": event.client,
        "request_id": event.request_id,
        **details,
    }


@bp.post("/files/<file_id>/grants")
@token_required
def create_grant(file_id: str) -> Response:
    services = current_services()
    record = services.files.get(file_id, owner=g.principal.user.public_id)
    user, expires_at = grant_request()
    named, created = services.sharing.grant(record, user, expires_at, actor())
    response = jsonify(grant_json(named))
    response.status_code = 201 if created else 200
    return response


@bp.get("/files/<file_id>/grants")
@token_required
def list_grants(file_id: str) -> Response:
    services = current_services()
    record = services.files.get(file_id, owner=g.principal.user.public_id)
    return jsonify(grants=[grant_json(n) for n in services.sharing.grants_of(record)])


@bp.delete("/files/<file_id>/grants/<user>")
@token_required
def revoke_grant(file_id: str, user: str) -> Response:
    services = current_services()
    record = services.files.get(file_id, owner=g.principal.user.public_id)
    services.sharing.revoke(record, user, actor())
    return Response(status=204)


@bp.get("/files/<file_id>/events")
@token_required
def list_events(file_id: str) -> Response:
    services = current_services()
    record = services.files.get(file_id, owner=g.principal.user.public_id)
    events, next_cursor = services.history.of_file(
        record,
        limit=int_arg("limit", DEFAULT_PAGE, 1, MAX_PAGE),
        cursor=request.args.get("cursor"),
    )
    return jsonify(events=[event_json(e) for e in events], next_cursor=next_cursor)
