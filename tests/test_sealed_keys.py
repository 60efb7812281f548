"""Sealed key delivery: an account's age recipients (``GET /account``, ``PUT /account/recipients``)
and the key route's answers sealed to them, against the real database.

The sealed answers are opened here with ``pyrage`` directly (not our ``crypto.unseal``) where the
point is what the server sent; tests/test_age_interop.py opens them with the stock ``age`` CLI.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pyrage
import pytest
from flask.testing import FlaskClient
from pyrage import x25519

from cryptofiles import crypto
from cryptofiles.keys import MAX_RECIPIENTS
from tests.support.api import JSON, Accounts, auth, upload

BINARY = {"Accept": "application/octet-stream"}
ARMOR_BEGIN = "-----BEGIN AGE ENCRYPTED FILE-----"


def new_identity() -> tuple[x25519.Identity, str]:
    identity = x25519.Identity.generate()
    return identity, str(identity.to_public())


def put_recipients(client: FlaskClient, token: str, body: Any) -> Any:
    return client.put("/account/recipients", json=body, headers=auth(token))


def account(client: FlaskClient, token: str) -> dict[str, Any]:
    response = client.get("/account", headers=auth(token))
    assert response.status_code == 200, response.text
    assert response.mimetype == "application/json"  # whatever the Accept header
    return response.json  # type: ignore[no-any-return]


def fetch_key(
    client: FlaskClient, token: str, file_id: str, query: str = "", **headers: str
) -> Any:
    response = client.get(f"/files/{file_id}/key{query}", headers={**auth(token), **headers})
    assert response.headers.get("Cache-Control") == "no-store" or response.status_code != 200
    return response


def plain_key(client: FlaskClient, token: str, file_id: str) -> bytes:
    response = fetch_key(client, token, file_id, "?plain=1")
    assert response.status_code == 200, response.text
    return base64.b64decode(response.text)


def key_forms(key: bytes) -> list[bytes]:
    """Every way the plain key could show up in an answer."""
    return [
        key,
        base64.b64encode(key),
        base64.b64encode(key).rstrip(b"="),
        base64.urlsafe_b64encode(key).rstrip(b"="),
        key.hex().encode(),
        key.hex().upper().encode(),
    ]


def answer_bytes(response: Any) -> bytes:
    headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
    return headers.encode() + b"\n\n" + response.data


# -- the recipient list ---------------------------------------------------------------------------


def test_account_shows_the_recipients_in_canonical_form(
    client: FlaskClient, accounts: Accounts
) -> None:
    token = accounts.token("alice")
    before = account(client, token)
    assert before["recipients"] == [] and before["require_sealed"] is False
    assert before["name"] == "alice" and set(before) == {
        "name",
        "id",
        "created_at",
        "recipients",
        "require_sealed",
    }
    (_, first), (_, second) = new_identity(), new_identity()
    # Bech32 may be written in upper case, and a pasted line may carry whitespace.
    response = put_recipients(
        client, token, {"recipients": [first.upper(), f" {second}\n"], "require_sealed": True}
    )
    assert response.status_code == 200, response.text
    assert response.json["recipients"] == [first, second]
    assert response.json["require_sealed"] is True
    assert account(client, token) == response.json
    assert account(client, token)["id"] == before["id"]


LONG = "age1" + "q" * 5000


@pytest.mark.parametrize(
    ("label", "body", "says"),
    [
        ("not a recipient", {"recipients": ["age1notakey"]}, "recipients[0] is not an age"),
        ("long", {"recipients": [LONG]}, "recipients[0] is not an age"),
        ("identity", {"recipients": ["AGE-SECRET-KEY-1" + "Q" * 58]}, "is not an age"),
        ("ssh key", {"recipients": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA"]}, "is not an age"),
        ("not a list", {"recipients": "age1..."}, "must be a list"),
        ("not strings", {"recipients": [{"$ne": None}]}, "must be a list"),
        ("no list", {"require_sealed": False}, "Send a JSON object"),
        ("unknown field", {"recipients": [], "require_seal": True}, "no other field"),
        ("not a bool", {"recipients": [], "require_sealed": "yes"}, "true or false"),
        ("sealing, none", {"recipients": [], "require_sealed": True}, "at least one recipient"),
        ("not an object", ["age1"], "must be a JSON object"),
    ],
)
def test_bad_recipient_lists_are_400_and_change_nothing(
    client: FlaskClient, accounts: Accounts, label: str, body: Any, says: str
) -> None:
    token = accounts.token("alice")
    _, kept = new_identity()
    assert put_recipients(client, token, {"recipients": [kept]}).status_code == 200
    before = account(client, token)
    for accept in ({}, JSON):
        response = client.put("/account/recipients", json=body, headers={**auth(token), **accept})
        assert response.status_code == 400, (label, response.text)
        assert says in (response.json["detail"] if accept else response.text), response.text
        assert "q" * 100 not in response.text and "AAAAC3" not in response.text  # not echoed
    assert account(client, token) == before


def test_duplicates_and_too_many_are_400(client: FlaskClient, accounts: Accounts) -> None:
    token = accounts.token("alice")
    recipients = [new_identity()[1] for _ in range(MAX_RECIPIENTS + 1)]
    too_many = put_recipients(client, token, {"recipients": recipients})
    assert too_many.status_code == 400 and f"At most {MAX_RECIPIENTS}" in too_many.text
    twice = put_recipients(client, token, {"recipients": [recipients[0], recipients[0].upper()]})
    assert twice.status_code == 400 and "recipients[1] is listed twice" in twice.text
    assert account(client, token)["recipients"] == []
    at_most = put_recipients(client, token, {"recipients": recipients[:MAX_RECIPIENTS]})
    assert at_most.status_code == 200 and at_most.json["recipients"] == recipients[:MAX_RECIPIENTS]


def test_the_recipient_routes_need_a_json_body_and_a_token(
    client: FlaskClient, accounts: Accounts
) -> None:
    token = accounts.token("alice")
    form = client.put("/account/recipients", data="recipients=age1", headers=auth(token))
    assert form.status_code == 400
    assert client.get("/account").status_code == 401
    assert put_recipients(client, "nonsense", {"recipients": []}).status_code == 401


def test_require_sealed_left_out_keeps_the_current_rule(
    client: FlaskClient, accounts: Accounts
) -> None:
    token = accounts.token("alice")
    (_, first), (_, second) = new_identity(), new_identity()
    put_recipients(client, token, {"recipients": [first], "require_sealed": True})
    changed = put_recipients(client, token, {"recipients": [second]})
    assert changed.json["require_sealed"] is True and changed.json["recipients"] == [second]
    # So emptying the list while sealing is required is refused: the rule must be turned off.
    assert put_recipients(client, token, {"recipients": []}).status_code == 400
    assert account(client, token)["recipients"] == [second]


# -- the key route --------------------------------------------------------------------------------


def test_without_recipients_the_answer_is_the_seeds(
    client: FlaskClient, accounts: Accounts
) -> None:
    token = accounts.token("alice")
    file_id = upload(client, token, b"plain old answer")["id"]
    text = fetch_key(client, token, file_id)
    assert text.status_code == 200 and text.mimetype == "text/plain"
    key = base64.b64decode(text.text, validate=True)
    assert len(key) == 32
    as_json = fetch_key(client, token, file_id, **JSON).json
    assert as_json == {
        "id": file_id,
        "key": text.text,
        "encoding": "base64",
        "algorithm": "AES256_GCM_HKDF_1MB",
        "format": "tink-aes-gcm-hkdf-streaming",
        "segment_size": 1 << 20,
    }
    # Asking for the binary form or for plain changes nothing without recipients.
    for query, headers in (("", BINARY), ("?plain=1", {}), ("?plain=0", {})):
        again = fetch_key(client, token, file_id, query, **headers)
        assert (again.status_code, again.mimetype, again.text) == (200, "text/plain", text.text)


def test_sealed_answers_open_with_every_recipient_and_never_hold_the_key(
    client: FlaskClient, accounts: Accounts
) -> None:
    token = accounts.token("alice")
    file_id = upload(client, token, b"sealed away")["id"]
    key = plain_key(client, token, file_id)
    identities = [new_identity() for _ in range(2)]
    recipients = [r for _, r in identities]
    assert put_recipients(client, token, {"recipients": recipients}).status_code == 200

    text = fetch_key(client, token, file_id)  # curl's */*: armored age text
    assert text.status_code == 200 and text.mimetype == "text/plain"
    assert text.text.startswith(ARMOR_BEGIN)
    as_json = fetch_key(client, token, file_id, **JSON)
    assert as_json.status_code == 200 and as_json.mimetype == "application/json"
    doc = as_json.json
    assert doc["sealed"].startswith(ARMOR_BEGIN) and "key" not in doc
    assert doc["recipients"] == recipients and doc["sealing"] == "age"
    assert doc["id"] == file_id and doc["algorithm"] == "AES256_GCM_HKDF_1MB"
    binary = fetch_key(client, token, file_id, **BINARY)
    assert binary.status_code == 200 and binary.mimetype == "application/octet-stream"
    assert binary.data.startswith(b"age-encryption.org/v1\n")
    assert binary.headers["X-Content-Type-Options"] == "nosniff"

    for sealed in (text.data, doc["sealed"].encode(), binary.data):
        for identity, _ in identities:  # every recipient can open it, alone
            assert pyrage.decrypt(sealed, [identity]) == key
    for response in (text, as_json, binary):
        for form in key_forms(key):
            assert form not in answer_bytes(response)
    # Each answer is sealed afresh: two fetches differ.
    assert fetch_key(client, token, file_id).data != text.data


def test_require_sealed_refuses_the_plain_key_with_a_clear_403(
    client: FlaskClient, accounts: Accounts
) -> None:
    token = accounts.token("alice")
    file_id = upload(client, token, b"only sealed")["id"]
    identity, recipient = new_identity()
    body = {"recipients": [recipient], "require_sealed": True}
    assert put_recipients(client, token, body).status_code == 200
    refused = fetch_key(client, token, file_id, "?plain=1")
    assert refused.status_code == 403
    assert refused.text.startswith("This account requires sealed key delivery")
    problem = fetch_key(client, token, file_id, "?plain=1", **JSON)
    assert problem.status_code == 403 and problem.mimetype == "application/problem+json"
    assert "requires sealed key delivery" in problem.json["detail"]
    key = pyrage.decrypt(fetch_key(client, token, file_id).data, [identity])
    for response in (refused, problem):
        for form in key_forms(key):
            assert form not in answer_bytes(response)
    assert fetch_key(client, token, file_id, "?plain=yes").status_code == 400


def test_removing_every_recipient_returns_to_the_plain_key(
    client: FlaskClient, accounts: Accounts
) -> None:
    token = accounts.token("alice")
    file_id = upload(client, token, b"back to plain")["id"]
    identity, recipient = new_identity()
    put_recipients(client, token, {"recipients": [recipient], "require_sealed": True})
    key = pyrage.decrypt(fetch_key(client, token, file_id).data, [identity])
    off = put_recipients(client, token, {"recipients": [], "require_sealed": False})
    assert off.status_code == 200 and off.json["recipients"] == []
    answer = fetch_key(client, token, file_id)
    assert answer.mimetype == "text/plain" and base64.b64decode(answer.text) == key


def test_recipients_are_per_user(client: FlaskClient, accounts: Accounts) -> None:
    alice, bob = accounts.token("alice"), accounts.token("bob")
    (alice_identity, alice_recipient), (bob_identity, bob_recipient) = (
        new_identity(),
        new_identity(),
    )
    put_recipients(client, alice, {"recipients": [alice_recipient]})
    put_recipients(client, bob, {"recipients": [bob_recipient], "require_sealed": True})
    alices_file = upload(client, alice, b"alice's")["id"]
    carol = accounts.token("carol")  # no recipients: her keys stay plain
    carols_file = upload(client, carol, b"carol's")["id"]

    sealed = fetch_key(client, alice, alices_file, **JSON).json
    assert sealed["recipients"] == [alice_recipient]
    pyrage.decrypt(sealed["sealed"].encode(), [alice_identity])
    with pytest.raises(pyrage.DecryptError):
        pyrage.decrypt(sealed["sealed"].encode(), [bob_identity])
    # Alice's plain key is still hers to ask for: Bob's rule is not hers.
    assert fetch_key(client, alice, alices_file, "?plain=1").status_code == 200
    assert fetch_key(client, carol, carols_file).mimetype == "text/plain"
    assert account(client, carol)["recipients"] == []
    # And nobody's recipients open another user's key to them: Bob still gets the unknown id 404.
    stranger = fetch_key(client, bob, alices_file)
    assert (stranger.status_code, stranger.text) == (404, "No such file.\n")


def test_account_answers_hold_no_secret(client: FlaskClient, accounts: Accounts) -> None:
    token = accounts.token("alice")
    _, recipient = new_identity()
    put = put_recipients(client, token, {"recipients": [recipient]})
    doc = json.loads(put.data)
    assert "password_hash" not in doc and token not in put.text
    assert "scrypt" not in client.get("/account", headers=auth(token)).text


def test_a_sealing_rule_without_recipients_in_the_database_refuses_the_plain_key(
    client: FlaskClient, accounts: Accounts, db: Any
) -> None:
    """Fail closed: the routes never store require_sealed without a recipient, but a record edited
    by hand (or by a later bug) must not turn "sealed only" into "plain"."""
    token = accounts.token("alice")
    file_id = upload(client, token, b"fail closed")["id"]
    db.users.update_one({"name": "alice"}, {"$set": {"require_sealed": True, "recipients": []}})
    for query in ("", "?plain=1"):
        refused = fetch_key(client, token, file_id, query)
        assert refused.status_code == 403, query
        assert refused.text.startswith("This account requires sealed key delivery")


# -- crypto.sealing on its own ---------------------------------------------------------------------


def test_parse_recipient_takes_x25519_recipients_only() -> None:
    _, recipient = new_identity()
    assert crypto.parse_recipient(recipient.upper()) == recipient
    assert crypto.parse_recipient(f"\t{recipient} \n") == recipient
    broken = recipient[:-1] + ("q" if recipient[-1] != "q" else "p")  # a wrong checksum
    identity = str(x25519.Identity.generate())
    for text in ("", "age1", broken, identity, "ssh-ed25519 AAAA", recipient + recipient, LONG):
        with pytest.raises(crypto.RecipientError) as caught:
            crypto.parse_recipient(text)
        assert text[5:] not in str(caught.value) or not text[5:]  # never repeated


def test_seal_and_unseal_round_trip_and_refusals() -> None:
    (first, first_recipient), (second, second_recipient) = new_identity(), new_identity()
    data = bytes(range(32))
    for armor in (True, False):
        sealed = crypto.seal(data, [first_recipient, second_recipient], armor=armor)
        assert sealed.startswith(b"-----BEGIN AGE" if armor else b"age-encryption.org/v1\n")
        for identity in (first, second):
            file_text = f"# created: now\n# public key: x\n\n{identity}\n"
            assert crypto.unseal(sealed, file_text) == data
    with pytest.raises(crypto.RecipientError):
        crypto.seal(data, [], armor=True)
    sealed = crypto.seal(data, [first_recipient], armor=False)
    with pytest.raises(crypto.DecryptionError):
        crypto.unseal(sealed, str(second))
    altered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(crypto.DecryptionError):
        crypto.unseal(altered, str(first))
    for bad in ("", "# only comments\n", "AGE-SECRET-KEY-1QQQ\n", first_recipient, "x" * 70000):
        with pytest.raises(crypto.IdentityError) as caught:
            crypto.unseal(sealed, bad)
        assert "QQQ" not in str(caught.value)


def test_a_grantees_key_is_sealed_to_the_grantee_and_recorded_as_sealed(
    client: FlaskClient, accounts: Accounts
) -> None:
    owner, grantee = accounts.token("owner1"), accounts.token("grantee1")
    owner_identity, owner_recipient = new_identity()
    grantee_identity, grantee_recipient = new_identity()
    assert put_recipients(client, owner, {"recipients": [owner_recipient]}).status_code == 200
    assert put_recipients(client, grantee, {"recipients": [grantee_recipient]}).status_code == 200
    file_id = upload(client, owner, b"shared and sealed")["id"]
    granted = client.post(
        f"/files/{file_id}/grants", json={"user": "grantee1"}, headers=auth(owner)
    )
    assert granted.status_code == 201

    sealed = fetch_key(client, grantee, file_id)
    assert sealed.status_code == 200
    key = pyrage.decrypt(sealed.data, [grantee_identity])  # the grantee's identity opens it...
    with pytest.raises(pyrage.DecryptError):
        pyrage.decrypt(sealed.data, [owner_identity])  # ...the owner's does not
    assert key == plain_key(client, owner, file_id)
    events = client.get(f"/files/{file_id}/events", headers=auth(owner)).json["events"]
    keys = [(e["user"]["name"], e["sealed"]) for e in events if e["action"] == "key"]
    assert keys == [("owner1", False), ("grantee1", True)]  # newest first
