"""Rate limits: flask-limiter, with its counters in our MongoDB so limits hold across instances and
restarts.

flask-limiter's own MongoDB storage (from the ``limits`` package) needs TTL indexes and pipeline
updates, which FerretDB lacks; ``MongoCounters`` is a small ``limits`` storage on plain update
operators instead, delegating to ``Storage``. Fixed windows: a brute-forcer who hammers a name can
keep it limited only while he keeps hammering, and the real user is free again one window later.

Limits (configurable, see README): failed password checks per account name and per client address
(``password_checked``: login, password change and account deletion share them), registrations per
client address, key fetches per user. Breaches answer 429 with ``Retry-After``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar, cast

from flask import Flask, Response, current_app, g, request
from flask_limiter import Limiter, RateLimitExceeded
from limits.storage import Storage as LimitsStorage

from cryptofiles.accounts import LOGIN_BUDGET_FLAG, InvalidCredentials
from cryptofiles.audit import security_event
from cryptofiles.storage import Storage, StorageError
from cryptofiles.web.errors import error_response
from cryptofiles.web.inputs import text_field

EXTENSION_KEY = "cryptofiles.limiter"


class MongoCounters(LimitsStorage):
    """A ``limits`` storage backed by ``Storage``'s counter methods."""

    STORAGE_SCHEME: ClassVar[list[str]] = ["cryptofiles"]  # type: ignore[misc]

    def __init__(
        self, uri: str | None = None, wrap_exceptions: bool = False, **options: Any
    ) -> None:
        super().__init__(uri, wrap_exceptions=wrap_exceptions)
        self.storage: Storage = options["storage"]

    @property
    def base_exceptions(self) -> type[Exception]:
        return StorageError

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        return self.storage.counter_incr(key, int(expiry), amount, datetime.now(UTC))

    def get(self, key: str) -> int:
        return self.storage.counter_get(key, datetime.now(UTC))[0]

    def get_expiry(self, key: str) -> float:
        end = self.storage.counter_get(key, datetime.now(UTC))[1]
        return end.timestamp() if end else time.time()

    def check(self) -> bool:
        try:
            self.storage.ping()
        except StorageError:
            return False
        return True

    def reset(self) -> int | None:
        return self.storage.counter_clear()

    def clear(self, key: str) -> None:
        self.storage.counter_clear(key)


def client_address() -> str:
    # The peer address as the WSGI server saw it; behind a proxy, configure gunicorn's
    # --forwarded-allow-ips so that it is the client's, not the proxy's.
    return request.remote_addr or "unknown"


def password_owner() -> str:
    """The account a password check is for, hashed: counters must not become a list of tried names.

    The logged-in user's name on the account routes, the name asked for on /login: a guess costs
    the same budget whichever route it goes through.
    """
    name = g.principal.user.name if "principal" in g else text_field("User_Name")
    # text_field: bad input is a 400 here already, before any counting
    return "name:" + hashlib.sha256(str(name).encode()).hexdigest()[:32]


def current_user() -> str:
    return f"user:{g.principal.user.public_id}"


def create_limiter(app: Flask, storage: Storage) -> Limiter:
    limiter = Limiter(
        key_func=client_address,
        app=app,
        storage_uri="cryptofiles://",
        storage_options={"storage": storage},  # type: ignore[dict-item]
        strategy="fixed-window",
        # Our error handler sets Retry-After on 429 (see retry_after); flask-limiter's own headers
        # would also land on every other answer, overwriting a 503's Retry-After.
        headers_enabled=False,
        key_prefix="rl",
    )
    app.extensions[EXTENSION_KEY] = limiter

    @app.errorhandler(RateLimitExceeded)
    def too_many(exc: RateLimitExceeded) -> Response:
        security_event("rate_limited", path=request.path)
        headers = {"Retry-After": str(retry_after_seconds())}
        return error_response(429, exc.description or "Too many requests.", headers)

    return limiter


def retry_after_seconds() -> int:
    """Seconds until the breached window of this request ends (at least 1)."""
    limiter: Limiter = current_app.extensions[EXTENSION_KEY]
    breached = [limit for limit in limiter.current_limits if limit.breached]
    if not breached:
        return 1
    # reset_at is rounded up to a whole second; never say more than the window itself.
    waits = [
        min(math.ceil(limit.reset_at - time.time()), limit.limit.get_expiry()) for limit in breached
    ]
    return max(*waits, 1)


def _message(limit: str) -> str:
    return f"Too many requests (limit: {limit}); retry after Retry-After seconds."


def limited(app: Flask, limit: str, key_func: Callable[[], str], scope: str) -> Callable[..., Any]:
    """A decorator applying ``limit`` (e.g. "10/minute") per ``key_func``, in its own ``scope``."""
    limiter: Limiter = app.extensions[EXTENSION_KEY]
    return limiter.limit(limit, key_func=key_func, scope=scope, error_message=_message(limit))


F = TypeVar("F", bound=Callable[..., Any])


def password_checked(app: Flask) -> Callable[[F], F]:
    """The decorator of every route that checks a password (under ``token_required``, if any).

    Such a route spends the login budget: per account name (``RATE_LIMIT_LOGIN_NAME``) and per
    client address (``RATE_LIMIT_LOGIN_ADDRESS``), counters shared by every such route. Only a
    failed check keeps its place: the budget is taken before the view runs and given back after
    any other outcome. (flask-limiter's ``deduct_when`` counts after the view but only tests
    before it, so a burst of parallel guesses would all pass the test before any of them counted.)
    ``auth.Authenticator`` refuses to check a password in a request that did not come through
    here, so a new route cannot forget the limit.
    """
    services = app.extensions["cryptofiles"]  # app.EXTENSION_KEY
    settings = services.settings
    storage: Storage = services.storage
    limiter: Limiter = app.extensions[EXTENSION_KEY]
    by_name = limiter.shared_limit(
        settings.rate_limit_login_name,
        scope="password-name",
        key_func=password_owner,
        error_message=_message(settings.rate_limit_login_name),
    )
    by_address = limiter.shared_limit(
        settings.rate_limit_login_address,
        scope="password-address",
        key_func=client_address,
        error_message=_message(settings.rate_limit_login_address),
    )

    def decorate(view: F) -> F:
        limited_view = by_name(by_address(view))

        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            setattr(g, LOGIN_BUDGET_FLAG, True)
            failed = False
            try:
                return limited_view(*args, **kwargs)
            except InvalidCredentials:
                failed = True
                raise
            finally:
                if not failed:  # right password, bad input, busy, or refused by a limit
                    give_back(limiter, storage)

        return cast(F, wrapper)

    return decorate


def give_back(limiter: Limiter, storage: Storage) -> None:
    """Return what this request took from each of its counters."""
    now = datetime.now(UTC)
    for limit in limiter.current_limits:
        # At worst, a counter the database failed to decrement keeps one attempt too many: not
        # worth turning a password change that happened into an error.
        with contextlib.suppress(StorageError):
            storage.counter_give_back(limit.key, now)
