"""Files over HTTP: upload, download (ciphertext, or plaintext for the owner), listing, metadata,
deletion and the file's key (plain, or sealed to the caller's age recipients: ``key_response``).

The work is ``files.FileService``'s: ``get(id, owner=...)`` answers "not yours" exactly like "not
found"; the key and the metadata are also for the users the owner granted them to
(``sharing.Sharing.key_record``). Every route needs a token; key fetches are also rate-limited per
user. Key deliveries and downloads are recorded in the file's access history before anything is
sent, and not sent when that fails.
"""

from __future__ import annotations

import base64

from flask import Blueprint, Response, g, jsonify, request, url_for

from cryptofiles import crypto, sharing
from cryptofiles.storage import FileRecord, User
from cryptofiles.web.context import current_services
from cryptofiles.web.guard import token_required
from cryptofiles.web.inputs import (
    int_arg,
    key_form,
    plain_key_asked,
    request_body,
    shared_arg,
    upload_content_type,
    upload_name,
)
from cryptofiles.web.metrics import current_metrics
from cryptofiles.web.ratelimit import current_user, limited
from cryptofiles.web.responses import attachment, file_json, ranged_response, reply
from cryptofiles.web.sharing import actor

DEFAULT_PAGE = 50
MAX_PAGE = 1000

bp = Blueprint("files", __name__)


@bp.post("/upload")
@token_required
def upload() -> Response:
    record = current_services().files.upload(
        g.principal.user.public_id,
        current_metrics().counted_in(request_body()),
        name=upload_name(),
        content_type=upload_content_type(),
        declared_size=request.content_length,
    )
    response = reply(record.id, 201, json=file_json(record))
    response.headers["Location"] = url_for("files.download", file_id=record.id)
    return response


@bp.get("/files/<file_id>")
@token_required
def download(file_id: str) -> Response:
    services = current_services()
    files = services.files
    record = files.get(file_id)
    services.history.record(record.id, sharing.DOWNLOAD, actor())
    return ranged_response(
        record.stored_size,
        etag=record.id,  # files never change, so the id is a strong validator
        body=lambda span: files.ciphertext(record, span),
        mimetype="application/octet-stream",
        filename=f"{record.name or record.id}.enc",
    )


@bp.get("/files/<file_id>/plaintext")
@token_required
def plaintext(file_id: str) -> Response:
    services = current_services()
    files = services.files
    record = files.get(file_id, owner=g.principal.user.public_id)
    services.history.record(record.id, sharing.PLAINTEXT, actor())
    response = ranged_response(
        record.size,
        etag=f"{record.id}.plain",
        body=lambda span: files.plaintext(record, span),
        mimetype=record.content_type or "application/octet-stream",
        filename=record.name or record.id,
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/files")
@token_required
def list_files() -> Response:
    services = current_services()
    user = g.principal.user.public_id
    limit = int_arg("limit", DEFAULT_PAGE, 1, MAX_PAGE)
    cursor = request.args.get("cursor")
    if shared_arg() == "with-me":
        shared, next_cursor = services.sharing.shared_with(user, limit=limit, cursor=cursor)
        items = [{**file_json(r), "owner_name": owner} for r, owner in shared]
        return jsonify(files=items, next_cursor=next_cursor)
    records, next_cursor = services.files.list(user, limit=limit, cursor=cursor)
    return jsonify(files=[file_json(r) for r in records], next_cursor=next_cursor)


@bp.get("/files/<file_id>/info")
@token_required
def file_info(file_id: str) -> Response:
    # The owner, and the users granted the key (they may name and size what they decrypt).
    record = current_services().sharing.info_record(file_id, g.principal.user.public_id)
    return jsonify(file_json(record))


@bp.delete("/files/<file_id>")
@token_required
def delete_file(file_id: str) -> Response:
    files = current_services().files
    record = files.get(file_id, owner=g.principal.user.public_id)
    files.delete(record)
    return Response(status=204)


@bp.get("/files/<file_id>/key")
@token_required
@limited("keys", by=current_user)
def file_key(file_id: str) -> Response:
    plain, form = plain_key_asked(), key_form()
    record = current_services().sharing.key_record(file_id, g.principal.user.public_id)
    return key_response(record, g.principal.user, plain=plain, form=form)


def key_response(record: FileRecord, user: User, *, plain: bool, form: str) -> Response:
    """The key of ``record`` as it goes to ``user``, its owner or a grantee (``KeyCustody.deliver``
    decides): the seed's base64 text or JSON when plain; when sealed to the user's age recipients,
    armored age text by default, the binary age file for ``Accept: application/octet-stream``, or
    JSON holding the armored text. Recorded in the file's history before it is answered; never
    cached."""
    services = current_services()
    key = services.files.key(record)
    delivery = services.keys.deliver(key, user, plain=plain, armor=form != "binary")
    # No record, no key: RecordingFailed answers 503 (a refused plain key above is no delivery).
    services.history.record(record.id, sharing.KEY, actor(), sealed=delivery.sealed is not None)
    details = {
        "algorithm": crypto.ALGORITHM,
        "format": crypto.FORMAT,
        "segment_size": crypto.SEGMENT_SIZE,
    }
    if delivery.sealed is None:
        text = base64.b64encode(key).decode()
        json = {"id": record.id, "key": text, "encoding": "base64", **details}
        response = reply(text, json=json)
    elif form == "binary":
        response = Response(delivery.sealed, mimetype="application/octet-stream")
        response.headers["Content-Disposition"] = attachment(f"{record.id}.key.age")
        response.headers["X-Content-Type-Options"] = "nosniff"
    else:
        armored = delivery.sealed.decode("ascii")
        json = {
            "id": record.id,
            "sealed": armored,
            "sealing": "age",
            "recipients": list(delivery.recipients),
            **details,
        }
        response = reply(armored, json=json)
    response.headers["Cache-Control"] = "no-store"
    return response
