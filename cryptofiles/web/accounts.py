"""Accounts over HTTP: registration, login, the token check, logout, password change, deletion, and
the account's age recipients (``GET /account``, ``PUT /account/recipients``).

The work is ``accounts.Authenticator``'s; every route that checks a password spends the login
budget (``ratelimit.password_checked``).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, g, jsonify

from cryptofiles.storage import User
from cryptofiles.web.context import current_services
from cryptofiles.web.guard import token_required
from cryptofiles.web.inputs import credentials, recipients_update
from cryptofiles.web.ratelimit import client_address, limited, password_checked
from cryptofiles.web.responses import reply

bp = Blueprint("accounts", __name__)


@bp.post("/registration")
@limited("registration", by=client_address)
def registration() -> Response:
    name, password = credentials("New_User_Name", "New_User_Password")
    user = current_services().accounts.register(name, password)
    return reply(
        f"Registration is OK, your name: {user.name}",
        201,
        {"name": user.name, "id": user.public_id, "created_at": user.created_at.isoformat()},
    )


# GET is the seed's; POST is the same for browsers, whose fetch() sends no body with GET.
@bp.route("/login", methods=["GET", "POST"])
@password_checked
def login() -> Response:
    name, password = credentials("User_Name", "User_Password")
    issued = current_services().accounts.login(name, password)
    response = reply(
        issued.token,
        json={
            "token": issued.token,
            "token_type": "Bearer",
            "expires_at": issued.expires_at.isoformat(),
        },
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/test_login")
@token_required
def test_login() -> Response:
    name = g.principal.user.name
    return reply(f"Login is OK, your name: {name}", json={"message": "Login is OK", "name": name})


@bp.post("/logout")
@token_required
def logout() -> Response:
    current_services().accounts.logout(g.principal)
    return reply("Logged out: this token is revoked.", json={"revoked": True})


@bp.put("/account/password")
@token_required
@password_checked
def change_password() -> Response:
    current, new = credentials("User_Password", "New_User_Password")
    current_services().accounts.change_password(g.principal, current, new)
    return reply("Password changed; every token of this account is revoked: log in again.")


@bp.delete("/account")
@token_required
@password_checked
def delete_account() -> Response:
    (password,) = credentials("User_Password")
    user = g.principal.user
    services = current_services()
    services.accounts.verify_password(user, password)
    # In this order, so that an upload of this user finishing meanwhile leaves nothing behind
    # (FileService._check_owner says why): mark, remove every file, then the user.
    services.storage.users.mark_deleting(user.public_id)
    deleted = services.files.delete_all(user.public_id)  # with their grants and events
    services.sharing.forget_user(user.public_id)  # the grants others gave this user
    services.storage.users.delete(user.public_id)
    services.storage.usage.remove(user.public_id)
    return reply(
        f"Account {user.name} deleted with {deleted} file(s).", json={"deleted_files": deleted}
    )


def account_json(user: User) -> dict[str, Any]:
    return {
        "name": user.name,
        "id": user.public_id,
        "created_at": user.created_at.isoformat(),
        "recipients": list(user.recipients),
        "require_sealed": user.require_sealed,
    }


# Both answer JSON whatever the Accept header: an account is a document, like a file's /info.
@bp.get("/account")
@token_required
def account() -> Response:
    return jsonify(account_json(g.principal.user))


# No password needed: recipients only decide how keys are wrapped on the way to this account's own
# token holder, who could fetch them plain anyway unless sealing is required (SECURITY.md).
@bp.put("/account/recipients")
@token_required
def set_recipients() -> Response:
    recipients, require_sealed = recipients_update()
    user = current_services().keys.set_recipients(g.principal.user, recipients, require_sealed)
    return jsonify(account_json(user))
