"""Provider connections through the API: stored with their secrets encrypted, never shown,
named by phone numbers; the secrets key, its absence and its rotation; callbacks verified
against the account they name."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet, InvalidToken

from shared.settings import SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN
from shared.telephony.twilio import request_signature
from tests.conftest import new_api_key
from tests.support import ROOT, Stack

TOKEN = "twilio-secret-" + "f" * 18
VOBIZ_TOKEN = "vobiz-secret-" + "e" * 19


def twilio_sid() -> str:
    return "AC" + uuid.uuid4().hex


def create_twilio(
    client: httpx.Client, sid: str, token: str = TOKEN, name: str | None = None
) -> httpx.Response:
    return client.post(
        "/v1/provider-connections",
        json={
            "provider": "twilio",
            "name": name or f"twilio {sid[-6:]}",
            "account_sid": sid,
            "auth_token": token,
        },
    )


def register(client: httpx.Client, number: str, credentials_ref: str, provider: str = "twilio"):
    return client.post(
        "/v1/voiceai/phone-numbers",
        json={"phone_number": number, "provider": provider, "credentials_ref": credentials_ref},
    )


def only_error(response: httpx.Response) -> dict[str, Any]:
    detail = response.json()["detail"]
    assert len(detail) == 1, detail
    return dict(detail[0])


def test_connections_are_created_listed_read_and_deleted_without_their_secrets(
    stack: Stack, client: httpx.Client
):
    sid = twilio_sid()
    created = create_twilio(client, sid, name="main twilio")
    vobiz = client.post(
        "/v1/provider-connections",
        json={
            "provider": "vobiz",
            "name": "vobiz",
            "auth_id": "MA_TEST_1",
            "auth_token": VOBIZ_TOKEN,
        },
    )
    assert created.status_code == 201, created.text
    assert vobiz.status_code == 201, vobiz.text
    body = created.json()
    assert set(body) == {"id", "provider", "name", "account_id", "config", "created_at_unix"}
    assert (body["provider"], body["name"], body["account_id"]) == ("twilio", "main twilio", sid)
    listed = client.get("/v1/provider-connections")
    one = client.get(f"/v1/provider-connections/{body['id']}")
    assert [c["id"] for c in listed.json()["connections"]] == [body["id"], vobiz.json()["id"]]
    assert one.json() == body
    assert vobiz.json()["account_id"] == "MA_TEST_1"
    for response in (created, vobiz, listed, one):
        assert TOKEN not in response.text and VOBIZ_TOKEN not in response.text
        assert "auth_token" not in response.text

    # At rest: a Fernet token under the stack's key, never the token itself.
    [(stored,)] = stack.sql("SELECT secret FROM provider_connections WHERE id = %s", body["id"])
    assert TOKEN not in stored
    assert TOKEN in Fernet(stack.secrets_key.encode()).decrypt(stored.encode()).decode()

    # Another workspace sees none of it.
    with stack.client(new_api_key(stack)) as other:
        assert other.get(f"/v1/provider-connections/{body['id']}").status_code == 404
        assert other.get("/v1/provider-connections").json() == {"connections": []}
        assert other.delete(f"/v1/provider-connections/{body['id']}").status_code == 404

    # Without a key: 401, the body never read.
    with stack.raw_client() as anonymous:
        assert anonymous.get("/v1/provider-connections").status_code == 401
        refused = anonymous.post("/v1/provider-connections", json={"provider": "twilio"})
        assert refused.status_code == 401

    assert client.delete(f"/v1/provider-connections/{body['id']}").status_code == 204
    assert client.get(f"/v1/provider-connections/{body['id']}").status_code == 404
    assert client.delete(f"/v1/provider-connections/{body['id']}").status_code == 404


@pytest.mark.parametrize(
    ("body", "loc", "type_"),
    [
        ({"provider": "twilio", "account_sid": "AC123", "auth_token": "t"}, "account_sid", None),
        ({"provider": "twilio", "auth_token": "t"}, "account_sid", "missing"),
        ({"provider": "twilio", "account_sid": "AC" + "a" * 32}, "auth_token", "missing"),
        ({"provider": "vobiz", "auth_token": "t"}, "auth_id", "missing"),
        ({"provider": "vobiz", "auth_id": "MA1", "auth_token": " "}, "auth_token", "missing"),
        (
            {"provider": "vobiz", "auth_id": "MA1", "auth_token": "t", "account_sid": "AC1"},
            "account_sid",
            "extra",
        ),
        ({"provider": "sip_trunk", "auth_token": "t"}, "provider", None),
        ({"provider": "plivo", "auth_token": "t"}, "provider", None),
        ({"provider": "twilio", "name": "", "account_sid": "AC" + "a" * 32}, "name", None),
    ],
)
def test_a_connection_missing_or_misnaming_its_credentials_is_a_422_naming_the_field(
    client: httpx.Client, body: dict[str, Any], loc: str, type_: str | None
):
    response = client.post("/v1/provider-connections", json={"name": "bad", **body})
    assert response.status_code == 422, response.text
    error = response.json()["detail"][0]
    assert error["loc"] == ["body", loc], response.json()
    if type_ is not None:
        assert error["type"] == type_
    assert client.get("/v1/provider-connections").json() == {"connections": []}


def test_a_second_connection_of_the_same_name_is_a_409(client: httpx.Client):
    assert create_twilio(client, twilio_sid(), name="same").status_code == 201
    response = create_twilio(client, twilio_sid(), name="same")
    assert response.status_code == 409
    assert only_error(response)["loc"] == ["body", "name"]


def test_a_number_names_a_connection_of_its_workspace_and_provider_or_default(
    stack: Stack, client: httpx.Client
):
    connection = create_twilio(client, twilio_sid()).json()["id"]
    vobiz = client.post(
        "/v1/provider-connections",
        json={"provider": "vobiz", "name": "v", "auth_id": "MA_X", "auth_token": VOBIZ_TOKEN},
    ).json()["id"]
    with stack.client(new_api_key(stack)) as other:
        foreign = create_twilio(other, twilio_sid()).json()["id"]

    for ref, kind in (
        ("conn_nope", "unknown_connection"),
        (foreign, "unknown_connection"),  # another workspace's: as good as unknown
        (vobiz, "provider_mismatch"),  # a Vobiz account for a Twilio number
    ):
        response = register(client, "+12025550170", ref)
        assert response.status_code == 422, response.text
        error = only_error(response)
        assert (error["loc"], error["type"]) == (["body", "credentials_ref"], kind)
    assert client.get("/v1/voiceai/phone-numbers").json() == []

    number = register(client, "+12025550170", connection)
    assert number.status_code == 201, number.text
    assert number.json()["credentials_ref"] == connection
    assert register(client, "+12025550171", "default").status_code == 201

    # The number holds its connection: deleting it is a 409 until the number is gone.
    response = client.delete(f"/v1/provider-connections/{connection}")
    assert response.status_code == 409
    assert "credentials_ref" in only_error(response)["msg"]
    assert client.get(f"/v1/provider-connections/{connection}").status_code == 200


def test_without_a_secrets_key_no_connection_can_be_stored(make_stack):
    stack = make_stack(workers=0, beat=False, settings_env={"SWITCHBOARD_SECRETS_KEY": ""})
    with stack.client(new_api_key(stack)) as client:
        response = create_twilio(client, twilio_sid())
        assert response.status_code == 503, response.text
        error = only_error(response)
        assert error["loc"] == ["settings", "SWITCHBOARD_SECRETS_KEY"]
        assert error["type"] == "secrets_key_missing"
        assert "SWITCHBOARD_SECRETS_KEY is not set" in error["msg"]
        assert client.get("/v1/provider-connections").json() == {"connections": []}
        # Numbers on the environment's account need no key.
        assert register(client, "+12025550172", "default").status_code == 201


def _secrets(stack: Stack, command: str, key: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": stack.database_url, "SWITCHBOARD_SECRETS_KEY": key}
    return subprocess.run(
        [sys.executable, "-m", "cli.main", "secrets", command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_rotation_re_encrypts_every_connection_under_the_new_key(make_stack):
    # A stack of its own: rotation rewrites every connection of the database.
    stack = make_stack(workers=0, beat=False)
    with stack.client(new_api_key(stack)) as client:
        ids = sorted(create_twilio(client, twilio_sid()).json()["id"] for _ in range(3))
    old = Fernet(stack.secrets_key.encode())
    new_key = Fernet.generate_key().decode()

    missing = _secrets(stack, "rotate", "")
    assert missing.returncode == 1
    assert "SWITCHBOARD_SECRETS_KEY is not set" in missing.stderr
    # The new key alone opens nothing yet: check names every connection.
    unopened = _secrets(stack, "check", new_key)
    assert unopened.returncode == 1
    assert all(connection_id in unopened.stderr for connection_id in ids)

    # The new key first, the old one after it: everything is re-encrypted under the new one.
    rotated = _secrets(stack, "rotate", f"{new_key},{stack.secrets_key}")
    assert rotated.returncode == 0, rotated.stderr
    assert "3 provider connection(s) re-encrypted" in rotated.stderr
    rows = dict(stack.sql("SELECT id, secret FROM provider_connections"))
    assert sorted(rows) == ids
    for token in rows.values():
        assert TOKEN in Fernet(new_key.encode()).decrypt(token.encode()).decode()
        with pytest.raises(InvalidToken):
            old.decrypt(token.encode())
    # So the old key can go: the new one alone opens all, and rotates them again.
    checked = _secrets(stack, "check", new_key)
    assert checked.returncode == 0, checked.stderr
    assert "open all 3 provider connection(s)" in checked.stderr
    assert _secrets(stack, "check", stack.secrets_key).returncode == 1
    assert _secrets(stack, "rotate", new_key).returncode == 0


def _post_status(stack: Stack, form: dict[str, str], token: str) -> httpx.Response:
    path = f"/v1/telephony/twilio/status/call_{uuid.uuid4().hex}"
    with stack.raw_client() as raw:
        return raw.post(
            path,
            data=form,
            headers={"X-Twilio-Signature": request_signature(token, stack.api_url + path, form)},
        )


def test_a_callback_is_verified_with_the_token_of_the_account_it_names(
    stack: Stack, client: httpx.Client
):
    sid, other_sid = twilio_sid(), twilio_sid()
    assert create_twilio(client, sid, token="first-token").status_code == 201
    assert create_twilio(client, other_sid, token="second-token").status_code == 201

    def form(account: str) -> dict[str, str]:
        # A status that queues nothing: only the signature decides the answer.
        return {"AccountSid": account, "CallSid": "CA" + uuid.uuid4().hex, "CallStatus": "ringing"}

    assert _post_status(stack, form(sid), "first-token").status_code == 204
    assert _post_status(stack, form(other_sid), "second-token").status_code == 204
    assert _post_status(stack, form(SANDBOX_ACCOUNT_SID), SANDBOX_AUTH_TOKEN).status_code == 204
    # Another account's token, the environment's token for a connection's account, an
    # account nobody has: 403.
    for account, token in (
        (sid, "second-token"),
        (other_sid, "first-token"),
        (sid, SANDBOX_AUTH_TOKEN),
        (SANDBOX_ACCOUNT_SID, "first-token"),
        (twilio_sid(), "first-token"),
    ):
        response = _post_status(stack, form(account), token)
        assert response.status_code == 403, (account, token)
        assert only_error(response)["loc"] == ["header", "X-Twilio-Signature"]
