"""Accounts and tokens at the service level (TokenService, PasswordHasher, Authenticator), plus the
HTTP answers that depend on them: forged tokens, password re-hashing, the hashing concurrency bound.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import select
import socket
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.security import check_password_hash, generate_password_hash

from cryptofiles import accounts as auth
from cryptofiles.accounts import Authenticator, Busy, InvalidToken, PasswordHasher, TokenService
from cryptofiles.config import DEFAULT_PASSWORD_HASH, Settings
from cryptofiles.crypto import KeyRing
from cryptofiles.web import create_app, services_of
from tests.support.api import PASSWORD, Accounts
from tests.support.settings import TEST_PASSWORD_HASH, fresh_settings_values

CHEAP_HASH = "scrypt:1024:8:1"  # for tests about the hasher's plumbing, not its cost
INVALID_TOKEN_TEXT = "Token is invalid or expired.\n"


def login(client: FlaskClient, name: str, password: str, **headers: str) -> Any:
    return client.get("/login", headers={"User_Name": name, "User_Password": password, **headers})


def whoami(client: FlaskClient, token: str) -> Any:
    """GET /test_login with ``token``."""
    return client.get("/test_login", headers={"x-access-tokens": token})


def authenticator_of(app: Flask) -> Authenticator:
    return services_of(app).accounts


# -- crafting tokens by hand --------------------------------------------------------------------------


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def segment(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


HMACS = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


def make_token(
    claims: dict[str, Any],
    key: str | bytes,
    *,
    alg: str = "HS256",
    header: dict[str, Any] | None = None,
) -> str:
    """A JWS compact token signed with HMAC ``alg`` (no library in the way of odd claims)."""
    signing_input = f"{segment({'alg': alg, 'typ': 'JWT', **(header or {})})}.{segment(claims)}"
    key_bytes = key.encode() if isinstance(key, str) else key
    signature = hmac.new(key_bytes, signing_input.encode(), HMACS[alg]).digest()
    return f"{signing_input}.{b64url(signature)}"


def unsigned(claims: dict[str, Any], alg: str, signature: str = "") -> str:
    return f"{segment({'alg': alg, 'typ': 'JWT'})}.{segment(claims)}.{signature}"


def with_payload(token: str, claims: dict[str, Any]) -> str:
    """``token`` with its payload replaced and its header and signature kept."""
    header, _, signature = token.split(".")
    return f"{header}.{segment(claims)}.{signature}"


DROP = object()


@dataclass
class Forge:
    """Material for tokens about ``sub`` (the victim); ``other_sub`` is another existing user.

    ``app`` is shared by the token tests of this module: none of them changes what it stores.
    """

    app: Flask
    sub: str
    other_sub: str
    now: int = field(default_factory=lambda: int(time.time()))

    @property
    def secret(self) -> str:
        return services_of(self.app).settings.secret_key

    @property
    def tokens(self) -> TokenService:
        return TokenService(self.secret, timedelta(minutes=30))

    @property
    def client(self) -> FlaskClient:
        return self.app.test_client()

    def claims(self, **changes: Any) -> dict[str, Any]:
        claims = {"sub": self.sub, "iat": self.now, "exp": self.now + 600, "jti": uuid.uuid4().hex}
        for name, value in changes.items():
            if value is DROP:
                del claims[name]
            else:
                claims[name] = value
        return claims

    def token(self, **changes: Any) -> str:
        return make_token(self.claims(**changes), self.secret)


@pytest.fixture(scope="module")
def token_app(mongodb_uri: str, master_keys: str) -> Iterator[tuple[Flask, str, str]]:
    """One app for the read-only token tests, with two users: (app, victim id, other id)."""
    settings = Settings.from_mapping(fresh_settings_values(mongodb_uri, master_keys))
    app = create_app(settings)
    storage = services_of(app).storage
    now = datetime.now(UTC)
    victim = storage.users.create("victim", "not-a-usable-hash", now)
    other = storage.users.create("other", "not-a-usable-hash", now)
    yield app, victim.public_id, other.public_id
    storage.client.drop_database(settings.mongodb_db)
    storage.close()


@pytest.fixture
def forge(token_app: tuple[Flask, str, str]) -> Forge:
    return Forge(*token_app)


def expired_by_clock(f: Forge) -> str:
    past = datetime.now(UTC) - timedelta(minutes=31)
    return TokenService(f.secret, timedelta(minutes=30), clock=lambda: past).issue(f.sub).token


def sub_swapped(f: Forge) -> str:
    claims = f.claims()
    return with_payload(make_token(claims, f.secret), {**claims, "sub": f.other_sub})


def exp_extended(f: Forge) -> str:
    claims = f.claims(iat=f.now - 1900, exp=f.now - 100)
    return with_payload(make_token(claims, f.secret), {**claims, "exp": f.now + 86400})


FORGERIES: dict[str, Callable[[Forge], str]] = {
    "alg-none": lambda f: unsigned(f.claims(), "none"),
    "alg-None": lambda f: unsigned(f.claims(), "None"),
    "alg-NONE": lambda f: unsigned(f.claims(), "NONE"),
    "alg-none-with-real-signature": lambda f: unsigned(
        f.claims(), "none", f.token().rpartition(".")[2]
    ),
    "HS384-same-secret": lambda f: make_token(f.claims(), f.secret, alg="HS384"),
    "HS512-same-secret": lambda f: make_token(f.claims(), f.secret, alg="HS512"),
    "signature-stripped": lambda f: f.token().rpartition(".")[0] + ".",
    "sub-swapped-after-signing": sub_swapped,
    "exp-extended-after-signing": exp_extended,
    "wrong-secret": lambda f: make_token(f.claims(), secrets.token_urlsafe(32)),
    "secret-prefix": lambda f: make_token(f.claims(), f.secret[:-1]),
    "expired-by-clock": expired_by_clock,
    "expired-exp": lambda f: f.token(iat=f.now - 1900, exp=f.now - 100),
    "missing-sub": lambda f: f.token(sub=DROP),
    "missing-iat": lambda f: f.token(iat=DROP),
    "missing-exp": lambda f: f.token(exp=DROP),
    "missing-jti": lambda f: f.token(jti=DROP),
    "sub-null": lambda f: f.token(sub=None),
    "sub-number": lambda f: f.token(sub=12345),
    "sub-empty": lambda f: f.token(sub=""),
    "sub-list": lambda f: f.token(sub=[f.sub]),
    "jti-number": lambda f: f.token(jti=7),
    "jti-empty": lambda f: f.token(jti=""),
    "jti-object": lambda f: f.token(jti={"$ne": ""}),
    "iat-not-a-number": lambda f: f.token(iat="yesterday"),
    "exp-not-a-number": lambda f: f.token(exp="tomorrow"),
    "nbf-in-future": lambda f: f.token(nbf=f.now + 600),
    "key-in-jwk-header": lambda f: make_token(
        f.claims(),
        b"attacker-key-attacker-key-attack",
        header={"jwk": {"kty": "oct", "k": b64url(b"attacker-key-attacker-key-attack")}},
    ),
}


@pytest.mark.parametrize("make", FORGERIES.values(), ids=FORGERIES.keys())
def test_forged_token_is_refused(forge: Forge, make: Callable[[Forge], str]) -> None:
    token = make(forge)
    with pytest.raises(InvalidToken):
        forge.tokens.decode(token)
    response = whoami(forge.client, token)
    assert response.status_code == 401
    assert response.text == INVALID_TOKEN_TEXT  # one answer, whatever the reason


def test_hand_made_token_is_accepted(forge: Forge) -> None:
    """The control for the forgeries: the same crafting, done right, passes."""
    claims = forge.claims()
    token = make_token(claims, forge.secret)
    assert forge.tokens.decode(token) == claims
    assert authenticator_of(forge.app).authenticate(token).user.name == "victim"
    response = whoami(forge.client, token)
    assert response.status_code == 200
    assert response.text == "Login is OK, your name: victim"


def test_key_headers_are_never_followed(forge: Forge) -> None:
    """kid/jku/x5u/jwk are ignored: a token is judged on its HS256 signature and claims only."""
    with socket.socket() as key_server:
        key_server.bind(("127.0.0.1", 0))
        key_server.listen()
        url = f"http://127.0.0.1:{key_server.getsockname()[1]}/keys.json"
        attacker_key = b"attacker-key-attacker-key-attack"
        headers = {
            "kid": "../../../../dev/null",
            "jku": url,
            "x5u": url,
            "jwk": {"kty": "oct", "k": b64url(attacker_key)},
        }
        genuine = make_token(forge.claims(), forge.secret, header=headers)
        assert forge.tokens.decode(genuine)["sub"] == forge.sub
        assert whoami(forge.client, genuine).status_code == 200

        forged = make_token(forge.claims(), attacker_key, header=headers)
        with pytest.raises(InvalidToken):
            forge.tokens.decode(forged)
        assert whoami(forge.client, forged).status_code == 401

        ready, _, _ = select.select([key_server], [], [], 0.1)
        assert ready == [], "something connected to the URL named in the token's header"


def test_token_of_user_that_never_existed(forge: Forge) -> None:
    token = forge.tokens.issue(str(uuid.uuid4())).token
    assert forge.tokens.decode(token)  # well signed and in date...
    with pytest.raises(InvalidToken):
        authenticator_of(forge.app).authenticate(token)  # ...but nobody to speak for
    response = whoami(forge.client, token)
    assert response.status_code == 401
    assert response.text == INVALID_TOKEN_TEXT


# -- issued tokens --------------------------------------------------------------------------------


def test_issued_token_claims(
    client: FlaskClient, accounts: Accounts, settings: Settings, db: Any
) -> None:
    accounts.register("User1")
    public_id = db.users.find_one({"name": "User1"})["public_id"]
    bodies = [login(client, "User1", PASSWORD, Accept="application/json").json for _ in range(2)]
    jtis = set()
    for body in bodies:
        token = body["token"]
        assert jwt.get_unverified_header(token)["alg"] == "HS256"
        claims = jwt.decode(token, settings.secret_key, algorithms=["HS256"])
        assert set(claims) == {"sub", "iat", "exp", "jti"}
        assert claims["sub"] == public_id
        assert str(uuid.UUID(claims["sub"])) == claims["sub"] != "User1"
        assert abs(claims["iat"] - time.time()) < 60
        assert claims["exp"] - claims["iat"] == settings.token_life_minutes * 60 == 30 * 60
        expires_at = datetime.fromisoformat(body["expires_at"])
        assert expires_at == datetime.fromtimestamp(claims["exp"], UTC)
        jtis.add(claims["jti"])
    assert len(jtis) == 2


def test_token_life_setting_is_used(
    make_app: Callable[..., Flask], accounts: Accounts, settings: Settings
) -> None:
    accounts.register("User1")
    short_lived = make_app(TOKEN_LIFE_MINUTES="7").test_client()
    token = login(short_lived, "User1", PASSWORD).text
    claims = jwt.decode(token, settings.secret_key, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 7 * 60


@pytest.mark.parametrize("minutes", [1, 30, 24 * 60])
def test_token_service_issue(settings: Settings, minutes: int) -> None:
    now = datetime.now(UTC).replace(microsecond=123456)
    service = TokenService(settings.secret_key, timedelta(minutes=minutes), clock=lambda: now)
    issued = [service.issue("subject-1") for _ in range(3)]
    for token in issued:
        claims = service.decode(token.token)
        assert claims["sub"] == "subject-1"
        assert claims["jti"] == token.jti
        assert claims["iat"] == int(now.timestamp())
        assert claims["exp"] == claims["iat"] + minutes * 60
        assert token.expires_at == datetime.fromtimestamp(claims["exp"], UTC)
        assert token.token not in repr(token)
    assert len({token.jti for token in issued}) == 3


def test_expired_login_token_is_refused(
    app: Flask, accounts: Accounts, client: FlaskClient
) -> None:
    accounts.register("User1")
    past = datetime.now(UTC) - timedelta(minutes=31)
    settings = services_of(app).settings
    stale_app = create_app(settings, clock=lambda: past)
    try:
        token = login(stale_app.test_client(), "User1", PASSWORD).text
    finally:
        services_of(stale_app).storage.close()
    assert whoami(client, token).status_code == 401


# -- password hashing -----------------------------------------------------------------------------


@pytest.mark.parametrize("method", [CHEAP_HASH, "scrypt:2048:4:2", TEST_PASSWORD_HASH])
def test_hash_and_verify(method: str) -> None:
    hasher = PasswordHasher(method, concurrency=1)
    stored = hasher.hash(PASSWORD)
    assert stored.startswith(method + "$")
    assert PASSWORD not in stored
    assert hasher.hash(PASSWORD) != stored  # salted
    assert hasher.verify(stored, PASSWORD) is True
    assert hasher.verify(stored, PASSWORD + " ") is False
    assert hasher.verify(stored, "") is False
    assert hasher.needs_rehash(stored) is False


@pytest.mark.parametrize("password", [PASSWORD, "", "x" * 1024])
def test_verify_without_a_stored_hash_is_false(password: str) -> None:
    assert PasswordHasher(CHEAP_HASH, concurrency=1).verify(None, password) is False


def test_verify_accepts_hashes_of_another_cost() -> None:
    """What makes re-hashing on login possible: an old-cost hash still verifies."""
    old = PasswordHasher(CHEAP_HASH, concurrency=1).hash(PASSWORD)
    new_hasher = PasswordHasher("scrypt:2048:8:1", concurrency=1)
    assert new_hasher.verify(old, PASSWORD) is True
    assert new_hasher.needs_rehash(old) is True


@pytest.mark.parametrize(
    ("stored_prefix", "needs"),
    [
        ("scrypt:16384:8:1$", False),
        ("scrypt:32768:8:1$", True),
        ("scrypt:16384:8:2$", True),
        ("scrypt:16384:8:10$", True),  # the configured method is a prefix of this one
        ("scrypt:1638:8:1$", True),
        ("pbkdf2:sha256:600000$", True),
    ],
)
def test_needs_rehash(stored_prefix: str, needs: bool) -> None:
    hasher = PasswordHasher("scrypt:16384:8:1", concurrency=1)
    assert hasher.needs_rehash(stored_prefix + "c2FsdA$" + "ab" * 32) is needs


@pytest.mark.parametrize("method", ["scrypt:16384:8:01", "scrypt:016384:8:1"])
def test_fresh_hash_never_needs_rehash(method: str) -> None:
    Settings.from_mapping(  # a spelling the configuration accepts
        {
            "SECRET_KEY": "k" * 32,
            "MASTER_KEYS": KeyRing.generate_entry("k1"),
            "MONGODB_URI": "mongodb://db.example/",
            "PASSWORD_HASH": method,
        }
    )
    hasher = PasswordHasher(method, concurrency=1)
    assert hasher.needs_rehash(hasher.hash(PASSWORD)) is False


def cost_ratio(action: Callable[[], object], baseline: Callable[[], object]) -> float:
    """Median time of ``action`` over median time of ``baseline``, 5 timings each.

    The two are timed in turn, so that a load spike on a busy machine hits both alike.
    """
    action(), baseline()  # warm up
    timings: dict[Callable[[], object], list[float]] = {action: [], baseline: []}
    for _ in range(5):
        for function, spent in timings.items():
            started = time.perf_counter()
            function()
            spent.append(time.perf_counter() - started)
    return statistics.median(timings[action]) / statistics.median(timings[baseline])


def assert_similar_cost(action: Callable[[], object], baseline: Callable[[], object]) -> None:
    """The cost ratio is between 0.5 and 2. A busy machine can skew one measurement, so up to
    three are made; a real difference (a skipped or cheaper hash) shows in all of them."""
    ratios = []
    for _ in range(3):
        ratios.append(cost_ratio(action, baseline))
        if 0.5 < ratios[-1] < 2:
            return
    pytest.fail(f"cost ratios {ratios} are not between 0.5 and 2")


def test_verify_without_hash_costs_as_much_as_a_real_verify() -> None:
    # A cost well below werkzeug's default, so a dummy hash made at the default would show too.
    hasher = PasswordHasher("scrypt:8192:8:1", concurrency=1)
    stored = hasher.hash(PASSWORD)
    assert_similar_cost(
        lambda: hasher.verify(None, "not the password"),
        lambda: hasher.verify(stored, "not the password"),
    )


@pytest.mark.parametrize("name", ["Nobody", "no such name!"])
def test_unknown_user_costs_as_much_as_a_wrong_password(
    client: FlaskClient, accounts: Accounts, name: str
) -> None:
    accounts.register("User1")
    assert_similar_cost(
        lambda: login(client, name, "not the password"),
        lambda: login(client, "User1", "not the password"),
    )


def methods_checked(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The method of every hash that check_password_hash computes from now on, in order."""
    seen: list[str] = []

    def recording(pwhash: str, password: str) -> bool:
        seen.append(pwhash.split("$", 1)[0])
        return check_password_hash(pwhash, password)

    monkeypatch.setattr(auth, "check_password_hash", recording)
    return seen


LOGINS = {
    "known-wrong": ("User1", "not the password"),
    "unknown": ("Nobody", "not the password"),
    "known-right": ("User1", PASSWORD),
}


def test_every_check_computes_one_hash_per_method_in_use(
    accounts: Accounts, make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a cost change, a login of any kind verifies with the old and the new method."""
    accounts.register("User1")  # at TEST_PASSWORD_HASH; the new instance reads it at start-up
    client = make_app(PASSWORD_HASH=CHEAP_HASH).test_client()
    seen = methods_checked(monkeypatch)
    methods = {}
    for label, (name, password) in LOGINS.items():
        seen.clear()
        login(client, name, password)
        methods[label] = sorted(seen)
    assert methods == {label: sorted([CHEAP_HASH, TEST_PASSWORD_HASH]) for label in LOGINS}


def test_a_method_met_later_joins_every_check(
    accounts: Accounts, make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_app(PASSWORD_HASH=CHEAP_HASH).test_client()  # started before any hash existed
    accounts.register("User1")  # by the other instance, at TEST_PASSWORD_HASH
    seen = methods_checked(monkeypatch)
    assert login(client, "User1", "not the password").status_code == 401
    seen.clear()
    login(client, "Nobody", "not the password")
    assert sorted(seen) == sorted([CHEAP_HASH, TEST_PASSWORD_HASH])


def test_an_unusable_stored_method_does_not_stop_the_start() -> None:
    """A hand-edited hash in the database must not keep the service from starting."""
    hasher = PasswordHasher(CHEAP_HASH, concurrency=1, methods_in_use=["md5", TEST_PASSWORD_HASH])
    assert hasher.verify(None, PASSWORD) is False


def test_unknown_user_costs_as_much_as_a_user_of_a_dearer_older_cost(
    accounts: Accounts, make_app: Callable[..., Flask]
) -> None:
    """The attack pass: hashes of an older, 16 times dearer cost stored, a cheap cost configured."""
    accounts.register("User1")  # scrypt:16384:8:1
    client = make_app(PASSWORD_HASH=CHEAP_HASH).test_client()  # scrypt:1024:8:1
    assert_similar_cost(
        lambda: login(client, "Nobody", "not the password"),
        lambda: login(client, "User1", "not the password"),
    )


def test_default_cost_is_owasp_scrypt() -> None:
    method, n, r, p = DEFAULT_PASSWORD_HASH.split(":")
    assert method == "scrypt"
    assert int(n) >= 2**15 and int(n) & (int(n) - 1) == 0
    assert int(r) == 8
    assert int(p) >= 3
    settings = Settings.from_mapping(
        {
            "SECRET_KEY": "k" * 32,
            "MASTER_KEYS": KeyRing.generate_entry("k1"),
            "MONGODB_URI": "mongodb://db.example/",
        }
    )
    assert settings.password_hash == DEFAULT_PASSWORD_HASH
    # werkzeug accepts it as written, and what it writes is recognised as current.
    hasher = PasswordHasher(settings.password_hash, concurrency=1)
    stored = hasher.hash(PASSWORD)
    assert stored.startswith(DEFAULT_PASSWORD_HASH + "$")
    assert not hasher.needs_rehash(stored)


def test_login_rehashes_when_the_cost_changed(
    accounts: Accounts, db: Any, make_app: Callable[..., Flask], client: FlaskClient
) -> None:
    stronger_method = "scrypt:32768:8:1"
    accounts.register("User1")

    def stored() -> str:
        return db.users.find_one({"name": "User1"})["password_hash"]

    old_hash = stored()
    assert old_hash.startswith(TEST_PASSWORD_HASH + "$")
    stronger = make_app(PASSWORD_HASH=stronger_method).test_client()

    assert login(stronger, "User1", "not the password").status_code == 401
    assert stored() == old_hash  # a wrong password changes nothing

    assert login(stronger, "User1", PASSWORD).status_code == 200
    new_hash = stored()
    assert new_hash.startswith(stronger_method + "$")

    assert login(stronger, "User1", PASSWORD).status_code == 200
    assert stored() == new_hash  # current now: not re-hashed again
    assert login(stronger, "User1", "not the password").status_code == 401


def test_a_rehash_never_undoes_a_password_change(
    accounts: Accounts, make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race of the attack pass, made deterministic: the password change lands between the
    login's verify (old password, old cost) and its re-hash write."""
    accounts.register("User1")
    cheaper = make_app(PASSWORD_HASH=CHEAP_HASH)  # another cost: a login re-hashes
    authenticator = authenticator_of(cheaper)
    user = authenticator.storage.users.by_name("User1")
    assert user is not None
    new_password = "a brand new password"
    real_hash = authenticator.hasher.hash

    def change_then_hash(password: str) -> str:
        authenticator.storage.users.change_password(user.public_id, real_hash(new_password))
        return real_hash(password)

    client = cheaper.test_client()
    with monkeypatch.context() as patch:
        patch.setattr(authenticator.hasher, "hash", change_then_hash)
        raced = login(client, "User1", PASSWORD)
    if raced.status_code == 200:  # a token from before the change is dead like all the others
        assert whoami(client, raced.text).status_code == 401
    assert login(client, "User1", PASSWORD).status_code == 401
    assert login(client, "User1", new_password).status_code == 200


# -- how many hashes run at once ------------------------------------------------------------------


class Gauge:
    """Counts calls of the wrapped functions that are running at the same time."""

    def __init__(self, hold_seconds: float = 0.05) -> None:
        self.hold_seconds = hold_seconds
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0
        self.calls = 0

    def wrap(self, function: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any) -> Any:
            with self.lock:
                self.running += 1
                self.calls += 1
                self.peak = max(self.peak, self.running)
            try:
                time.sleep(self.hold_seconds)
                return function(*args)
            finally:
                with self.lock:
                    self.running -= 1

        return wrapper


@pytest.mark.parametrize("concurrency", [1, 2, 3])
def test_hashes_in_flight_are_bounded(monkeypatch: pytest.MonkeyPatch, concurrency: int) -> None:
    hasher = PasswordHasher(CHEAP_HASH, concurrency=concurrency, queue=8)  # everyone may wait
    stored = hasher.hash(PASSWORD)
    gauge = Gauge()
    monkeypatch.setattr(auth, "generate_password_hash", gauge.wrap(generate_password_hash))
    monkeypatch.setattr(auth, "check_password_hash", gauge.wrap(check_password_hash))
    jobs: list[Callable[[], object]] = [lambda: hasher.hash(PASSWORD)] * 4
    jobs += [lambda: hasher.verify(stored, PASSWORD), lambda: hasher.verify(None, PASSWORD)] * 2
    with ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(lambda job: job(), jobs))
    assert gauge.calls == len(jobs)
    assert gauge.peak == concurrency
    assert results[4:] == [True, False, True, False]


def test_a_burst_beyond_the_queue_is_refused_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """16 wrong passwords at once against 2 slots and 4 places to wait, each check slow: the 10
    that find no place are refused at once instead of holding their threads for seconds."""
    hasher = PasswordHasher(CHEAP_HASH, concurrency=2, queue=4)
    stored = hasher.hash(PASSWORD)
    gauge = Gauge(hold_seconds=0.3)
    monkeypatch.setattr(auth, "check_password_hash", gauge.wrap(check_password_hash))
    monkeypatch.setattr(auth, "HASH_SLOT_WAIT_SECONDS", 1.0)
    start = threading.Barrier(16)

    def attempt() -> tuple[str, float]:
        start.wait()
        started = time.perf_counter()
        try:
            outcome = "wrong" if not hasher.verify(stored, "not the password") else "right"
        except Busy:
            outcome = "busy"
        return outcome, time.perf_counter() - started

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda _: attempt(), range(16)))
    refused_at_once = [spent for outcome, spent in results if outcome == "busy" and spent < 0.2]
    # 2 run and 4 wait; a slow thread start may let one more in, never the whole burst.
    assert len(refused_at_once) >= 8, results
    assert {outcome for outcome, _ in results} <= {"wrong", "busy"}
    assert gauge.peak <= 2
    # No one waits longer than the bound (plus its own check and a busy machine's slack).
    assert max(spent for _, spent in results) < 1.0 + 0.3 + 1.0, results


@dataclass
class SlotHolder:
    """Keeps one hashing slot busy (a hash() stuck inside scrypt) until release()."""

    hasher: PasswordHasher
    monkeypatch: pytest.MonkeyPatch
    entered: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        def stuck(*args: Any) -> str:
            self.entered.set()
            self.released.wait(10)
            return generate_password_hash(*args)

        self.monkeypatch.setattr(auth, "generate_password_hash", stuck)
        self.thread = threading.Thread(target=self.hasher.hash, args=(PASSWORD,))

    def __enter__(self) -> SlotHolder:
        self.thread.start()
        assert self.entered.wait(5)
        return self

    def release(self) -> None:
        self.released.set()

    def __exit__(self, *exc: object) -> None:
        self.release()
        self.thread.join(10)
        assert not self.thread.is_alive()


def test_busy_when_no_slot_frees(monkeypatch: pytest.MonkeyPatch) -> None:
    hasher = PasswordHasher(CHEAP_HASH, concurrency=1)
    stored = hasher.hash(PASSWORD)
    monkeypatch.setattr(auth, "HASH_SLOT_WAIT_SECONDS", 0.2)
    with SlotHolder(hasher, monkeypatch):
        for attempt in (
            lambda: hasher.hash(PASSWORD),
            lambda: hasher.verify(stored, PASSWORD),
            lambda: hasher.verify(None, PASSWORD),
        ):
            started = time.perf_counter()
            with pytest.raises(Busy):
                attempt()
            assert 0.15 < time.perf_counter() - started < 2  # it waited, then gave up
    # Failed attempts took no slot with them.
    assert hasher.verify(stored, PASSWORD) is True


def test_waits_for_a_slot_that_frees_in_time(monkeypatch: pytest.MonkeyPatch) -> None:
    hasher = PasswordHasher(CHEAP_HASH, concurrency=1)
    stored = hasher.hash(PASSWORD)
    monkeypatch.setattr(auth, "HASH_SLOT_WAIT_SECONDS", 5)
    with SlotHolder(hasher, monkeypatch) as holder:
        timer = threading.Timer(0.2, holder.release)
        timer.start()
        started = time.perf_counter()
        assert hasher.verify(stored, PASSWORD) is True
        assert time.perf_counter() - started >= 0.15
        timer.join()


def test_busy_is_503_with_retry_after(
    make_app: Callable[..., Flask], db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    busy_app = make_app(PASSWORD_HASH_CONCURRENCY="1")
    client = busy_app.test_client()
    Accounts(client).register("User1")
    monkeypatch.setattr(auth, "HASH_SLOT_WAIT_SECONDS", 0.1)
    with SlotHolder(authenticator_of(busy_app).hasher, monkeypatch):
        response = login(client, "User1", PASSWORD)
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "5"
        assert response.text == "The server is busy; try again shortly.\n"

        response = login(client, "User1", PASSWORD, Accept="application/json")
        assert response.status_code == 503
        assert response.json["status"] == 503

        response = client.post(
            "/registration", headers={"New_User_Name": "User2", "New_User_Password": PASSWORD}
        )
        assert response.status_code == 503
        assert db.users.count_documents({"name": "User2"}) == 0
    assert login(client, "User1", PASSWORD).status_code == 200


def test_busy_beyond_the_queue_is_503_at_once_while_other_routes_answer(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    busy_app = make_app(PASSWORD_HASH_CONCURRENCY="1", PASSWORD_HASH_QUEUE="0")
    client = busy_app.test_client()
    Accounts(client).register("User1")
    with SlotHolder(authenticator_of(busy_app).hasher, monkeypatch):
        started = time.perf_counter()
        response = login(client, "User1", PASSWORD)
        assert time.perf_counter() - started < 0.5  # no place to wait: answered at once
        assert response.status_code == 503
        assert int(response.headers["Retry-After"]) > 0
        assert client.get("/healthz").status_code == 200
    assert login(client, "User1", PASSWORD).status_code == 200
