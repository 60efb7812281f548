"""Rate limits: flask-limiter, with its counters in our MongoDB so limits hold across instances and
restarts.

flask-limiter's own MongoDB storage (from the ``limits`` package) needs TTL indexes and pipeline
updates, which FerretDB lacks; ``MongoCounters`` is a small ``limits`` storage on plain update
operators instead, delegating to ``Storage``. Fixed windows: a brute-forcer who hammers a name can
keep it limited only while he keeps hammering, and the real user is free again one window later.

Limits (configurable, see README): failed password checks per account name and per client address
(``password_checked``: login, password change and account deletion share them), registrations per
client address, key fetches per user. Breaches answer 429 with ``Retry-After``.

The decorators (``limited``, ``password_checked``) only declare: a view is decorated once, at import,
for every app, while each app has its own limiter on its own database (tests build many apps in one
process, some at once). So each app binds a declared limit to its limiter when a request first needs
it (``Limits.bound``) and keeps the bound view; nothing per app is kept at module level.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import math
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar, cast

from flask import Flask, Response, current_app, g, has_request_context, request
from flask_limiter import Limiter, RateLimitExceeded, RouteLimit
from limits.storage import Storage as LimitsStorage

from cryptofiles.accounts import InvalidCredentials
from cryptofiles.audit import security_event
from cryptofiles.config import Settings
from cryptofiles.services import Services
from cryptofiles.storage import Storage, StorageError
from cryptofiles.web.inputs import text_field
from cryptofiles.web.logs import logged_path
from cryptofiles.web.responses import error_response

EXTENSION_KEY = "cryptofiles.limiter"
# Set on flask.g by password_checked, the decorator of every route that checks a password; read by
# password_check_allowed, the hook create_app gives the Authenticator.
LOGIN_BUDGET_FLAG = "login_budget_applies"

F = TypeVar("F", bound=Callable[..., Any])


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
        return self.storage.counters.incr(key, int(expiry), amount, datetime.now(UTC))

    def get(self, key: str) -> int:
        return self.storage.counters.get(key, datetime.now(UTC))[0]

    def get_expiry(self, key: str) -> float:
        end = self.storage.counters.get(key, datetime.now(UTC))[1]
        return end.timestamp() if end else time.time()

    def check(self) -> bool:
        try:
            self.storage.ping()
        except StorageError:
            return False
        return True

    def reset(self) -> int | None:
        return self.storage.counters.clear()

    def clear(self, key: str) -> None:
        self.storage.counters.clear(key)


def client_address() -> str:
    # The peer address as the WSGI server saw it. Behind a load balancer that is the balancer's,
    # unless it speaks the PROXY protocol to gunicorn (--proxy-protocol, --proxy-allow-from):
    # gunicorn never takes it from X-Forwarded-For (docs/deployment.md, tests/test_instances.py).
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


class Limits:
    """An app's limiter, and the views of this app bound to it (see the module's docstring)."""

    def __init__(self, limiter: Limiter, services: Services) -> None:
        self.limiter = limiter
        self.settings: Settings = services.settings
        self.storage: Storage = services.storage
        self._bound: dict[Callable[..., Any], Callable[..., Any]] = {}
        self._binding = threading.Lock()

    def bound(
        self, view: Callable[..., Any], bind: Callable[[Limits], Callable[..., Any]]
    ) -> Callable[..., Any]:
        """``view`` under its limits on this app's limiter, bound by ``bind`` on first use."""
        checked = self._bound.get(view)
        if checked is None:
            # Once per view and app: flask-limiter adds every limit it wraps a view in to the
            # limits of that view's name, so a second binding would count each request twice.
            with self._binding:
                checked = self._bound.get(view)
                if checked is None:
                    checked = self._bound[view] = bind(self)
        return checked


def limits_of(app: Flask) -> Limits:
    return app.extensions[EXTENSION_KEY]  # type: ignore[no-any-return]


def init_limiter(app: Flask, services: Services) -> Limits:
    limiter = Limiter(
        key_func=client_address,
        app=app,
        storage_uri="cryptofiles://",
        storage_options={"storage": services.storage},  # type: ignore[dict-item]
        strategy="fixed-window",
        # Our error handler sets Retry-After on 429 (see retry_after); flask-limiter's own headers
        # would also land on every other answer, overwriting a 503's Retry-After.
        headers_enabled=False,
        key_prefix="rl",
    )
    limits = app.extensions[EXTENSION_KEY] = Limits(limiter, services)

    @app.errorhandler(RateLimitExceeded)
    def too_many(exc: RateLimitExceeded) -> Response:
        security_event("rate_limited", path=logged_path())
        headers = {"Retry-After": str(retry_after_seconds())}
        return error_response(429, exc.description or "Too many requests.", headers)

    return limits


def retry_after_seconds() -> int:
    """Seconds until the breached window of this request ends (at least 1)."""
    limiter = limits_of(current_app).limiter
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


def limited(scope: str, *, by: Callable[[], str]) -> Callable[[F], F]:
    """A decorator applying the limit ``RATE_LIMIT_<SCOPE>`` (e.g. "10/minute") per ``by``.

    The counters' scope is "<view name>:<scope>", as flask-limiter named them when each view was
    its own endpoint: the keys, and so the counts already stored, stay the same under blueprints.
    """
    setting = f"rate_limit_{scope}"
    if setting not in {field.name for field in dataclasses.fields(Settings)}:
        raise ValueError(f"no setting {setting.upper()} for the limit {scope!r}")

    def decorate(view: F) -> F:
        counters = f"{view.__name__}:{scope}"

        def bind(limits: Limits) -> Callable[..., Any]:
            limit = getattr(limits.settings, setting)
            return limits.limiter.shared_limit(
                limit, scope=counters, key_func=by, error_message=_message(limit)
            )(view)

        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return limits_of(current_app).bound(view, bind)(*args, **kwargs)

        return cast(F, wrapper)

    return decorate


def password_checked(view: F) -> F:
    """The decorator of every route that checks a password (under ``token_required``, if any).

    Such a route spends the login budget: per account name (``RATE_LIMIT_LOGIN_NAME``) and per
    client address (``RATE_LIMIT_LOGIN_ADDRESS``), counters shared by every such route. Only a
    failed check keeps its place: the budget is taken before the view runs and given back after
    any other outcome. (flask-limiter's ``deduct_when`` counts after the view but only tests
    before it, so a burst of parallel guesses would all pass the test before any of them counted.)
    ``accounts.Authenticator`` refuses to check a password in a request that did not come through
    here (``password_check_allowed``), so a new route cannot forget the limit.
    """

    def bind(limits: Limits) -> Callable[..., Any]:
        by_name, by_address = _password_budget(limits)
        return by_name(by_address(view))

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        limits = limits_of(current_app)
        setattr(g, LOGIN_BUDGET_FLAG, True)
        failed = False
        try:
            return limits.bound(view, bind)(*args, **kwargs)
        except InvalidCredentials:
            failed = True
            raise
        finally:
            if not failed:  # right password, bad input, busy, or refused by a limit
                give_back(limits)

    return cast(F, wrapper)


def _password_budget(limits: Limits) -> tuple[RouteLimit, RouteLimit]:
    """The two shared limits of every route that checks a password, on an app's limiter."""
    settings = limits.settings
    by_name = limits.limiter.shared_limit(
        settings.rate_limit_login_name,
        scope="password-name",
        key_func=password_owner,
        error_message=_message(settings.rate_limit_login_name),
    )
    by_address = limits.limiter.shared_limit(
        settings.rate_limit_login_address,
        scope="password-address",
        key_func=client_address,
        error_message=_message(settings.rate_limit_login_address),
    )
    return by_name, by_address


def password_check_allowed() -> bool:
    """The Authenticator's hook in the web app: inside a request, only under ``password_checked``."""
    return not has_request_context() or bool(g.get(LOGIN_BUDGET_FLAG))


def give_back(limits: Limits) -> None:
    """Return what this request took from each of its counters (in one database command)."""
    keys = [limit.key for limit in limits.limiter.current_limits]
    # At worst, a counter the database failed to decrement keeps one attempt too many: not
    # worth turning a password change that happened into an error.
    with contextlib.suppress(StorageError):
        limits.storage.counters.give_back(keys, datetime.now(UTC))
