"""Settings of a test app on a database of its own, as the fixtures and the security tests make them."""

from __future__ import annotations

import secrets
import uuid

from cryptofiles.config import Settings

# Cheaper than production's scrypt cost so that the suite stays fast; tests of the cost itself
# set PASSWORD_HASH explicitly.
TEST_PASSWORD_HASH = "scrypt:16384:8:1"

# The rate limits are a control of their own (and tested elsewhere); in the security tests they
# would only turn the answers under test into 429s after a few dozen requests.
GENEROUS_LIMITS = {
    "RATE_LIMIT_LOGIN_NAME": "100000/minute",
    "RATE_LIMIT_LOGIN_ADDRESS": "100000/minute",
    "RATE_LIMIT_REGISTRATION": "100000/hour",
    "RATE_LIMIT_KEYS": "100000/minute",
}


def fresh_settings_values(mongodb_uri: str, master_keys: str) -> dict[str, str]:
    """Settings of a test app on a database of its own (fixtures of any scope build on this)."""
    return {
        "SECRET_KEY": secrets.token_urlsafe(32),
        "MASTER_KEYS": master_keys,
        "MONGODB_URI": mongodb_uri,
        "MONGODB_DB": f"test_{uuid.uuid4().hex[:16]}",
        "PASSWORD_HASH": TEST_PASSWORD_HASH,
        # Tests register and log in far more often than people; tests of the limits set their own.
        "RATE_LIMIT_LOGIN_NAME": "1000/minute",
        "RATE_LIMIT_LOGIN_ADDRESS": "1000/minute",
        "RATE_LIMIT_REGISTRATION": "1000/minute",
    }


def settings_for(mongodb_uri: str, master_keys: str, **overrides: str) -> Settings:
    """Settings on a fresh database of the session's server, rate limits out of the way."""
    values = {**fresh_settings_values(mongodb_uri, master_keys), **GENEROUS_LIMITS, **overrides}
    return Settings.from_mapping(values)
