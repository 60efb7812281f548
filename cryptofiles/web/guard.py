"""Who a request speaks for: ``token_required`` lets a view run only for a valid token and puts the
token's ``accounts.Principal`` on ``flask.g.principal``.

The token is read from ``x-access-tokens`` (the seed's header) or ``Authorization: Bearer``; the
checks themselves (signature, expiry, revocation, the user's token generation) are the
``Authenticator``'s.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

from flask import g, request

from cryptofiles.accounts import InvalidToken
from cryptofiles.audit import security_event
from cryptofiles.web.context import current_services

F = TypeVar("F", bound=Callable[..., Any])


def token_from_headers(headers: Any) -> str:
    """The token from ``x-access-tokens`` (the seed's header) or ``Authorization: Bearer``.

    Tokens in the query string are never read: URLs end up in logs and browser history.
    """
    seed_token = headers.get("x-access-tokens", "").strip()
    bearer_token = ""
    authorization = headers.get("Authorization", "").strip()
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise InvalidToken("Authorization header must be 'Bearer <token>'.")
        bearer_token = value.strip()
    if seed_token and bearer_token and seed_token != bearer_token:
        # Two different tokens: which one would a proxy or log have attributed the request to?
        raise InvalidToken("Two different tokens were sent; send one.")
    token = seed_token or bearer_token
    if not token:
        raise InvalidToken("A valid token is missing.")
    return token


def token_required(view: F) -> F:
    """Let the view run only for a valid token; ``g.principal`` is then who it speaks for."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        token = token_from_headers(request.headers)
        try:
            g.principal = current_services().accounts.authenticate(token)
        except InvalidToken:
            security_event("token.rejected", path=request.path)
            raise
        return view(*args, **kwargs)

    return cast(F, wrapper)
