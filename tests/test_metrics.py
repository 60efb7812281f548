"""Prometheus metrics: guarded by METRICS_TOKEN, counting requests, bytes and uploads in flight."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.support.api import Accounts
from tests.support.server import Server, new_token

TOKEN = "metrics-token-for-tests"


@pytest.fixture
def metered(make_app: Callable[..., Flask]) -> Flask:
    return make_app(METRICS_TOKEN=TOKEN)


def value(text: str, name: str, **labels: str) -> float:
    """The sample ``name{labels}`` in a Prometheus text page (0 when absent)."""
    total = 0.0
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if match and all(f'{k}="{v}"' in (match.group(1) or "") for k, v in labels.items()):
            total += float(match.group(2))
    return total


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong-token-entirely"}, {"Authorization": TOKEN}]
)
def test_metrics_need_the_metrics_token(metered: Flask, headers: dict[str, str]) -> None:
    assert metered.test_client().get("/metrics", headers=headers).status_code == 401


def test_user_token_is_not_a_metrics_token(metered: Flask) -> None:
    client = metered.test_client()
    token = Accounts(client).token()
    assert client.get("/metrics", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_metrics_off_without_a_configured_token(client: FlaskClient) -> None:
    assert client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 401


def test_metrics_count_requests_and_bytes(metered: Flask) -> None:
    client: FlaskClient = metered.test_client()
    accounts = Accounts(client)
    headers = accounts.headers(accounts.token())
    data = os.urandom(3000)
    file_id = client.post("/upload", data=data, headers=headers).text
    stored = client.get(f"/files/{file_id}", headers=headers).data
    client.get("/files/not-a-file", headers=headers)
    page = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
    assert value(page, "cryptofiles_requests_total", route="/upload", status="201") == 1
    assert value(page, "cryptofiles_requests_total", route="/files/<file_id>", status="200") == 1
    assert value(page, "cryptofiles_requests_total", route="/files/<file_id>", status="404") == 1
    assert file_id not in page  # routes, never URLs
    assert value(page, "cryptofiles_upload_bytes_total") == len(data)
    assert value(page, "cryptofiles_download_bytes_total") == len(stored)
    assert value(page, "cryptofiles_uploads_in_flight") == 0
    assert value(page, "cryptofiles_request_seconds_count", route="/upload") == 1


@pytest.mark.e2e
def test_metrics_add_up_across_workers(tmp_path: Path) -> None:
    server = Server(tmp_path / "var", {"METRICS_TOKEN": TOKEN})  # two workers
    try:
        token = new_token(server, "metered")
        for _ in range(6):  # new connections: spread over both workers
            response, _ = server.request("POST", "/upload", b"x" * 100, {"x-access-tokens": token})
            assert response.status == 201
        _, page = server.request("GET", "/metrics", None, {"Authorization": f"Bearer {TOKEN}"})
        text = page.decode()
        assert value(text, "cryptofiles_requests_total", route="/upload", status="201") == 6
        assert value(text, "cryptofiles_upload_bytes_total") == 600
    finally:
        server.stop()


def series(text: str, name: str) -> set[str]:
    """The label sets of ``name`` in a Prometheus text page: one per series."""
    return {
        match.group(1)
        for line in text.splitlines()
        if (match := re.fullmatch(rf"{name}\{{(.*)\}} \S+", line))
    }


def test_invented_methods_and_paths_make_no_new_series(metered: Flask) -> None:
    client: FlaskClient = metered.test_client()
    for n in range(200):
        client.open("/healthz", method=f"INVENTED{n}")
        client.open(f"/no-such-route-{n}/{os.urandom(4).hex()}", method="GET")
        client.open(f"/no-such-route-{n}", method=f"X{n}")
    page = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
    requests = series(page, "cryptofiles_requests_total")
    # A method no rule takes matches no route either (405): all 600 requests are "unmatched",
    # in three series: (other, 405), (GET, 404), (other, 404).
    assert len(requests) == 3, requests
    assert value(page, "cryptofiles_requests_total", method="other") == 400
    assert value(page, "cryptofiles_requests_total", route="unmatched") == 600
    assert "INVENTED" not in page and "no-such-route" not in page
    buckets = series(page, "cryptofiles_request_seconds_bucket")
    assert {re.search(r'route="[^"]*"', labels)[0] for labels in buckets} == {'route="unmatched"'}
