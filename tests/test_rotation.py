"""Master-key rotation: re-wrapping file keys under a new active key, safe to interrupt and re-run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cryptofiles.config import Settings
from cryptofiles.crypto import KeyRing
from cryptofiles.web import create_app, services_of
from tests.support.api import Accounts


@pytest.fixture
def rotated(settings_values: dict[str, str], make_app: Callable[..., Flask]) -> Flask:
    """A second app on the same database whose ring has a new active key before the old one."""
    return make_app(MASTER_KEYS=f"{KeyRing.generate_entry('new')},{settings_values['MASTER_KEYS']}")


def upload_files(client: FlaskClient, token: str, count: int) -> dict[str, str]:
    """id -> key, as the owner sees them before rotation."""
    keys = {}
    for i in range(count):
        file_id = client.post(
            "/upload", data=f"file {i}".encode(), headers={"x-access-tokens": token}
        ).text
        keys[file_id] = client.get(f"/files/{file_id}/key", headers={"x-access-tokens": token}).text
    return keys


def test_rewrap_moves_every_key_and_keeps_it(
    client: FlaskClient, accounts: Accounts, rotated: Flask, db: Any
) -> None:
    token = accounts.token()
    keys = upload_files(client, token, 3)
    report = services_of(rotated).files.rewrap_all()
    assert (report.rewrapped, report.skipped, report.failed) == (3, 0, 0)
    assert {doc["kek_id"] for doc in db.files.find()} == {"new"}
    other = rotated.test_client()
    for file_id, key in keys.items():
        assert other.get(f"/files/{file_id}/key", headers={"x-access-tokens": token}).text == key
    again = services_of(rotated).files.rewrap_all()
    assert again.rewrapped == 0


def test_rewrap_interrupted_then_rerun(
    client: FlaskClient,
    accounts: Accounts,
    rotated: Flask,
    db: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = accounts.token()
    keys = upload_files(client, token, 4)
    storage = services_of(rotated).storage
    replace = storage.files.replace_wrapped_key
    calls = {"n": 0}

    def dies_after_two(*args: Any) -> bool:
        if calls["n"] == 2:
            raise KeyboardInterrupt  # the process is killed halfway
        calls["n"] += 1
        return bool(replace(*args))

    monkeypatch.setattr(storage.files, "replace_wrapped_key", dies_after_two)
    with pytest.raises(KeyboardInterrupt):
        services_of(rotated).files.rewrap_all()
    assert sorted(doc["kek_id"] for doc in db.files.find()) == ["new", "new", "test1", "test1"]
    # Every record still unwraps, through either key of the ring.
    other = rotated.test_client()
    for file_id, key in keys.items():
        assert other.get(f"/files/{file_id}/key", headers={"x-access-tokens": token}).text == key
    monkeypatch.setattr(storage.files, "replace_wrapped_key", replace)
    report = services_of(rotated).files.rewrap_all()
    assert report.rewrapped == 2
    assert {doc["kek_id"] for doc in db.files.find()} == {"new"}


def test_key_wrapped_under_a_key_missing_from_the_ring_is_a_generic_500(
    client: FlaskClient, accounts: Accounts, settings_values: dict[str, str]
) -> None:
    token = accounts.token()
    (file_id,) = upload_files(client, token, 1)
    values = {**settings_values, "MASTER_KEYS": KeyRing.generate_entry("other")}
    app = create_app(Settings.from_mapping(values))
    try:
        response = app.test_client().get(
            f"/files/{file_id}/key", headers={"x-access-tokens": token}
        )
        assert response.status_code == 500
        assert response.text == "Internal server error.\n"
        report = services_of(app).files.rewrap_all()
        assert report.failed == 1
    finally:
        services_of(app).storage.close()
