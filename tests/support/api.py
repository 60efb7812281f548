"""The client's side of the API through Flask's test client: register, log in, upload, as a client
would, asserting that each step worked so that the test's own assertions start from a known state."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient

PASSWORD = "correct horse battery"
JSON = {"Accept": "application/json"}


def auth(token: str) -> dict[str, str]:
    return {"x-access-tokens": token}


class Accounts:
    """Register and log in through the HTTP API, as a client would."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client

    def register(self, name: str = "User1", password: str = PASSWORD) -> None:
        response = self.client.post(
            "/registration", headers={"New_User_Name": name, "New_User_Password": password}
        )
        assert response.status_code == 201, response.text

    def login(self, name: str = "User1", password: str = PASSWORD) -> str:
        response = self.client.get("/login", headers={"User_Name": name, "User_Password": password})
        assert response.status_code == 200, response.text
        return response.text

    def token(self, name: str = "User1") -> str:
        """A fresh user and a token for it."""
        self.register(name)
        return self.login(name)

    @staticmethod
    def headers(token: str) -> dict[str, str]:
        return auth(token)


def register(client: FlaskClient, name: str, password: str) -> str:
    """Register through the API; returns the new user's public id."""
    response = client.post(
        "/registration",
        headers={"New_User_Name": name, "New_User_Password": password, **JSON},
    )
    assert response.status_code == 201, response.text
    return str(response.json["id"])  # type: ignore[index]


def login(client: FlaskClient, name: str, password: str) -> str:
    response = client.get("/login", headers={"User_Name": name, "User_Password": password})
    assert response.status_code == 200, response.text
    return response.text


def upload(client: FlaskClient, token: str, body: bytes, **headers: str) -> dict[str, Any]:
    """Upload ``body``; returns the JSON answer (id, name, size, ...)."""
    response = client.post("/upload", data=body, headers={**auth(token), **JSON, **headers})
    assert response.status_code == 201, response.text
    return response.json  # type: ignore[return-value]
