"""Accounts and tokens: the account rules, password hashing (werkzeug scrypt), JWTs (PyJWT).

The only module that imports PyJWT and ``werkzeug.security``; no Flask here. ``Authenticator`` is the
service that the views, the CLI and the tests call; ``web.guard.token_required`` is its thin HTTP face.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import secrets
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import jwt
from werkzeug.security import check_password_hash, generate_password_hash

from cryptofiles import blocking
from cryptofiles.audit import clip, security_event
from cryptofiles.clock import Clock, utcnow
from cryptofiles.storage import Storage, User

# Account rules (the seed's "User1" is a valid name).
NAME_RULE = "3-64 characters: letters, digits, '.', '_' or '-'"
NAME_RE = re.compile(r"[A-Za-z0-9._-]{3,64}")
MIN_PASSWORD_CHARS = 8
# scrypt's cost does not depend much on input length, but an upper bound keeps request handling
# predictable and is what OWASP ASVS asks for (allow at least 64 characters, cap the rest).
MAX_PASSWORD_BYTES = 1024
PASSWORD_RULE = f"at least {MIN_PASSWORD_CHARS} characters and at most {MAX_PASSWORD_BYTES} bytes"

# RFC 8725 §3.1: pin the algorithm; never let the token's header choose it ("none", HS384, RS256...).
JWT_ALGORITHM = "HS256"
REQUIRED_CLAIMS = ["sub", "iat", "exp", "jti"]

# A burst of password checks must neither allocate 32 MiB of scrypt memory each nor hold every
# worker thread: at most `concurrency` hashes run, at most `queue` requests wait for a slot, each
# for at most this long (a few hashes' time); anyone beyond that is answered 503 at once.
HASH_SLOT_WAIT_SECONDS = 2.0
# Waiting requests per running hash when PASSWORD_HASH_QUEUE is not set.
DEFAULT_QUEUE_PER_SLOT = 4

log = logging.getLogger(__name__)

_T = TypeVar("_T")


class AuthError(Exception):
    """Base of this module's errors; the message is safe to show to the client."""


class InvalidAccountData(AuthError):
    """A name or password breaks the account rules."""


class InvalidCredentials(AuthError):
    """Unknown user or wrong password: deliberately indistinguishable."""


class InvalidToken(AuthError):
    """Missing, malformed, expired, wrongly signed, revoked, or of a user that no longer exists."""


class Busy(AuthError):
    """Too many password hashes are being computed; try again shortly."""


def check_name(name: str) -> None:
    if not NAME_RE.fullmatch(name):
        raise InvalidAccountData(f"User name must be {NAME_RULE}.")


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_CHARS or len(password.encode()) > MAX_PASSWORD_BYTES:
        raise InvalidAccountData(f"Password must be {PASSWORD_RULE}.")


class PasswordHasher:
    """werkzeug scrypt hashing with a bounded number of hashes in flight and waiting per process."""

    def __init__(
        self,
        method: str,
        concurrency: int,
        queue: int | None = None,
        methods_in_use: Iterable[str] = (),
    ) -> None:
        self._slots = threading.BoundedSemaphore(concurrency)
        self._queue = DEFAULT_QUEUE_PER_SLOT * concurrency if queue is None else queue
        self._waiting = 0
        self._waiting_lock = threading.Lock()
        # A dummy hash per method in use ("scrypt:16384:8:1", as hashes carry it): see verify().
        self._dummies: dict[str, str] = {}
        self._dummies_lock = threading.Lock()
        # The method as werkzeug writes it into hashes ("scrypt:016384:8:1" becomes
        # "scrypt:16384:8:1"), so that needs_rehash compares like with like.
        self.method = self._add_method(method)
        for stored_method in methods_in_use:
            try:
                self._add_method(stored_method)
            except ValueError:
                # Not a method werkzeug knows (a hand-edited hash): such a hash never verifies.
                log.warning("ignoring unusable password hash method %r", clip(stored_method))

    def hash(self, password: str) -> str:
        with self._slot():
            return self._run(generate_password_hash, password, self.method)

    def verify(self, stored_hash: str | None, password: str) -> bool:
        """Whether ``password`` matches ``stored_hash`` (None: no such user, always False).

        Every check computes one hash per method in use: the stored hash's own method against the
        stored hash, every other method against its dummy hash (an unknown user: dummies only).
        So every check costs the same sum, whoever it is for: a user whose hash still has an
        older, dearer cost takes as long as a name that does not exist. (A dummy of the dearest
        method alone would leave users of cheaper methods faster than unknown names.) Methods
        only join the set: it is read from the stored hashes at start-up, plus any met later
        (another instance's cost), and lasts until restart.
        """
        own_method = stored_hash.split("$", 1)[0] if stored_hash else None
        with self._slot():
            if own_method is not None and own_method not in self._dummies:
                own_method = self._add_method(own_method)
            with self._dummies_lock:
                dummies = list(self._dummies.items())
            matches = False
            for method, dummy in dummies:
                if method == own_method:
                    matches = self._run(check_password_hash, stored_hash, password)
                else:
                    self._run(check_password_hash, dummy, password)
        return matches

    def _add_method(self, method: str) -> str:
        """Make a dummy hash for ``method`` if there is none; the method as werkzeug writes it.

        Raises ValueError for a method werkzeug does not know.
        """
        dummy = self._run(generate_password_hash, secrets.token_urlsafe(16), method)
        method = dummy.split("$", 1)[0]
        with self._dummies_lock:
            self._dummies.setdefault(method, dummy)
        return method

    def needs_rehash(self, stored_hash: str) -> bool:
        return not stored_hash.startswith(self.method + "$")

    def _run(self, function: Callable[..., _T], *args: Any) -> _T:
        """Every hash computation goes through here: off the event loop under gevent."""
        return blocking.run(function, *args)

    @contextlib.contextmanager
    def _slot(self) -> Iterator[None]:
        if not self._slots.acquire(blocking=False):
            with self._waiting_lock:
                if self._waiting >= self._queue:
                    # Waiting would only hold this worker thread too: say so at once.
                    raise Busy("The server is busy; try again shortly.")
                self._waiting += 1
            try:
                acquired = self._slots.acquire(timeout=HASH_SLOT_WAIT_SECONDS)
            finally:
                with self._waiting_lock:
                    self._waiting -= 1
            if not acquired:
                raise Busy("The server is busy; try again shortly.")
        try:
            yield
        finally:
            self._slots.release()


@dataclasses.dataclass(frozen=True)
class IssuedToken:
    token: str = dataclasses.field(repr=False)
    jti: str
    expires_at: datetime


@dataclasses.dataclass(frozen=True)
class Principal:
    """Who a valid token speaks for."""

    user: User
    jti: str
    expires_at: datetime


class TokenService:
    def __init__(self, secret: str, life: timedelta, clock: Clock = utcnow) -> None:
        self._secret = secret
        self._life = life
        self._clock = clock

    def issue(self, subject: str, generation: int = 0) -> IssuedToken:
        now = self._clock().replace(microsecond=0)
        expires_at = now + self._life
        jti = uuid.uuid4().hex
        claims: dict[str, Any] = {"sub": subject, "iat": now, "exp": expires_at, "jti": jti}
        if generation:
            # The user's token generation (see User.token_generation); absent means 0.
            claims["gen"] = generation
        token = jwt.encode(claims, self._secret, algorithm=JWT_ALGORITHM)
        return IssuedToken(token, jti, expires_at)

    def decode(self, token: str) -> dict[str, Any]:
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[JWT_ALGORITHM],
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.PyJWTError:
            # The reason (expired, bad signature...) stays out of the answer: one message for all.
            raise InvalidToken("Token is invalid or expired.") from None
        if not all(isinstance(claims[c], str) and claims[c] for c in ("sub", "jti")):
            raise InvalidToken("Token is invalid or expired.")
        return claims


def _always() -> bool:
    return True


class Authenticator:
    """Registration, login, logout and token checks: the account rules in one place.

    ``password_check_allowed`` says whether a password may be checked now. Outside the web (the
    CLI's admin commands, tests) it always may; the web app sets it to refuse a check in a request
    that did not spend the login budget (``web.ratelimit.password_checked``): such a route would be
    an unlimited guessing oracle, and the refusal (a 500) makes its first test show the omission.
    """

    def __init__(
        self,
        storage: Storage,
        hasher: PasswordHasher,
        tokens: TokenService,
        clock: Clock = utcnow,
        password_check_allowed: Callable[[], bool] = _always,
    ) -> None:
        self.storage = storage
        self.hasher = hasher
        self.tokens = tokens
        self.clock = clock
        self.password_check_allowed = password_check_allowed

    def register(self, name: str, password: str) -> User:
        check_name(name)
        check_password(password)
        return self.storage.users.create(name, self.hasher.hash(password), self.clock())

    def login(self, name: str, password: str) -> IssuedToken:
        if len(password.encode()) > MAX_PASSWORD_BYTES:
            raise InvalidAccountData(f"Password must be {PASSWORD_RULE}.")
        user = self.storage.users.by_name(name) if NAME_RE.fullmatch(name) else None
        if not self._check(user.password_hash if user else None, password):
            security_event("login.failed", user_name=clip(name), known_user=user is not None)
            raise InvalidCredentials("Wrong user name or password.")
        assert user is not None  # verify() is False without a stored hash
        if self.hasher.needs_rehash(user.password_hash):
            # The configured cost changed since this hash was made: upgrade it while we hold the
            # plaintext, the only moment we can. If the password changed since we verified it,
            # the write does not happen, and the token below carries the old generation: refused.
            self.storage.users.set_password_hash(
                user.public_id, user.password_hash, self.hasher.hash(password)
            )
        return self.tokens.issue(user.public_id, user.token_generation)

    def verify_password(self, user: User, password: str) -> None:
        """Re-authentication before a sensitive change: the current password must match."""
        if not self._check(user.password_hash, password):
            security_event("password.confirmation_failed")
            raise InvalidCredentials("Wrong password.")

    def _check(self, stored_hash: str | None, password: str) -> bool:
        if not self.password_check_allowed():
            raise RuntimeError("this route checks a password without ratelimit.password_checked")
        return self.hasher.verify(stored_hash, password)

    def change_password(self, principal: Principal, current: str, new: str) -> None:
        self.verify_password(principal.user, current)
        check_password(new)
        self.storage.users.change_password(principal.user.public_id, self.hasher.hash(new))

    def authenticate(self, token: str) -> Principal:
        claims = self.tokens.decode(token)
        if self.storage.revocations.is_revoked(claims["jti"]):
            raise InvalidToken("Token is invalid or expired.")
        user = self.storage.users.by_public_id(claims["sub"])
        if user is None or claims.get("gen", 0) != user.token_generation:
            # No such user any more, or the password changed after this token was issued.
            raise InvalidToken("Token is invalid or expired.")
        return Principal(user, claims["jti"], datetime.fromtimestamp(claims["exp"], UTC))

    def logout(self, principal: Principal) -> None:
        self.storage.revocations.revoke(principal.jti, principal.expires_at, self.clock())
