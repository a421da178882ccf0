"""Input that once answered 500 (or a body of another shape): now a 4xx in the seeds' shape,
with nothing written."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from api import metrics as metrics_api
from api.main import app
from api.transport import BATCH_BODY_MAX_BYTES, DEFAULT_BODY_MAX_BYTES
from shared.storable import (
    MAX_FREE_JSON_CHARS,
    MAX_URL_CHARS,
    MAX_VARIABLE_NAME_CHARS,
    MAX_VARIABLE_VALUE_CHARS,
    MAX_VARIABLES,
    MAX_VARIABLES_TOTAL_CHARS,
)
from tests.factories import create_agent, recipients, register_number, submit
from tests.support import Stack, free_port, wait_for

SUBMIT = "/v1/convai/batch-calling/submit"


def assert_seed_error(response: httpx.Response, status: int, loc: list[object]) -> None:
    assert response.status_code == status, response.text
    [error] = response.json()["detail"]
    assert set(error) == {"loc", "msg", "type"} and error["loc"] == loc, error


@pytest.mark.parametrize("field", ["name", "prompt", "first_message", "language", "llm"])
def test_an_agent_field_set_to_null_is_a_422_and_changes_nothing(
    client: httpx.Client, field: str
) -> None:
    agent_id = create_agent(client)
    before = client.get(f"/v1/voiceai/agents/{agent_id}").json()
    response = client.patch(f"/v1/voiceai/agents/{agent_id}", json={field: None})
    assert response.status_code == 422, response.text
    assert ["body", field] in [error["loc"] for error in response.json()["detail"]]
    assert client.get(f"/v1/voiceai/agents/{agent_id}").json() == before


@pytest.mark.parametrize("when", [253_402_300_800, -1, -1_000_000_000_000, 2**63])
def test_a_schedule_outside_what_a_timestamp_holds_is_a_422(
    stack: Stack, client: httpx.Client, when: int
) -> None:
    agent_id, number_id = create_agent(client), register_number(client)
    response = submit(client, agent_id, number_id, recipients(1), scheduled_time_unix=when)
    assert_seed_error(response, 422, ["body", "scheduled_time_unix"])
    # The same through the CSV upload's form field.
    response = client.post(
        "/v1/voiceai/batch-calling/submit-csv",
        data={
            "call_name": "csv",
            "agent_id": agent_id,
            "agent_phone_number_id": number_id,
            "scheduled_time_unix": str(when),
        },
        files={"file": ("people.csv", b"phone_number\n+12125550100\n", "text/csv")},
    )
    assert response.status_code == 422, response.text
    locs = [error["loc"] for error in response.json()["detail"]]
    assert ["body", "scheduled_time_unix"] in locs, response.text
    assert client.get("/v1/voiceai/batch-calling/workspace").json()["batch_calls"] == []


def test_a_concurrency_limit_beyond_what_is_stored_is_a_422(
    stack: Stack, client: httpx.Client
) -> None:
    agent_id, number_id = create_agent(client), register_number(client)
    response = submit(client, agent_id, number_id, recipients(1), target_concurrency_limit=2**31)
    assert_seed_error(response, 422, ["body", "target_concurrency_limit"])
    assert client.get("/v1/voiceai/batch-calling/workspace").json()["batch_calls"] == []


def test_unknown_routes_and_methods_answer_in_the_seeds_shape(client: httpx.Client) -> None:
    assert_seed_error(client.get("/v1/voiceai/no-such-thing"), 404, ["path"])
    wrong_method = client.put("/v1/voiceai/batch-calling/submit", json={})
    assert_seed_error(wrong_method, 405, ["path"])
    assert "POST" in wrong_method.headers["allow"]


def _raw_exchange(stack: Stack, head: bytes, body: bytes = b"") -> tuple[int, dict[str, object]]:
    """Send a request head (and ``body``) on a socket of its own; the status and JSON body of
    the answer, read without sending anything more."""
    with socket.create_connection(("127.0.0.1", stack.api_port), timeout=10) as sock:
        sock.sendall(head + body)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, json.loads(response.read())


def _head(path: str, *headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    return ("\r\n".join([*lines, *headers]) + "\r\n\r\n").encode()


def test_a_body_without_an_api_key_is_a_401_before_it_is_read(stack: Stack) -> None:
    # 50 MB announced, one byte sent: answered at once, the body never waited for.
    status, body = _raw_exchange(stack, _head(SUBMIT, "Content-Length: 52428800"), b"{")
    assert status == 401
    assert body["detail"] == [
        {"loc": ["header", "x-api-key"], "msg": body["detail"][0]["msg"], "type": "unauthorized"}
    ]


def test_a_large_body_with_a_made_up_key_is_a_401_before_it_is_read(
    stack: Stack, api_key: str
) -> None:
    # Within the batch limit, one byte sent: a key that exists is waited for, a made-up one is
    # refused on its headers (it must not buy 16 MiB of buffering per request).
    length = "Content-Length: 10485760"
    status, body = _raw_exchange(stack, _head(SUBMIT, "x-api-key: sb_made_up", length), b"{")
    assert status == 401
    assert body["detail"][0]["type"] == "unauthorized"
    status, _ = _raw_exchange(
        stack, _head(SUBMIT, "Authorization: Bearer sb_made_up", "Transfer-Encoding: chunked")
    )
    assert status == 401


def test_a_content_length_over_the_routes_limit_is_a_413_at_once(
    stack: Stack, api_key: str
) -> None:
    over = BATCH_BODY_MAX_BYTES + 1
    status, body = _raw_exchange(
        stack, _head(SUBMIT, f"x-api-key: {api_key}", f"Content-Length: {over}")
    )
    assert status == 413
    [error] = body["detail"]  # type: ignore[misc]
    assert error["loc"] == ["header", "Content-Length"] and error["type"] == "too_large"
    # Every other route takes far less than a batch.
    status, _ = _raw_exchange(
        stack,
        _head("/v1/voiceai/agents", f"x-api-key: {api_key}", f"Content-Length: {2 * 1024 * 1024}"),
    )
    assert status == 413


def test_a_chunked_body_over_the_limit_is_a_413_once_it_passes_it(
    stack: Stack, client: httpx.Client
) -> None:
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        chunk = b" " * 65536
        # Twice the limit at most: the answer comes before the client has sent it all.
        while sent < 2 * DEFAULT_BODY_MAX_BYTES:
            sent += len(chunk)
            yield chunk

    try:
        response = client.post(
            "/v1/voiceai/agents", content=chunks(), headers={"content-type": "application/json"}
        )
    except httpx.TransportError:  # the server closed while the rest was being sent
        pytest.fail("the 413 was not read before the connection closed")
    assert_seed_error(response, 413, ["body"])
    assert response.json()["detail"][0]["type"] == "too_large"
    assert client.get("/v1/voiceai/agents").json()["agents"] == []


def test_undecodable_bodies_are_422s_in_the_seeds_shape(client: httpx.Client) -> None:
    not_json = client.post(
        SUBMIT, content=b"{not json", headers={"content-type": "application/json"}
    )
    assert not_json.status_code == 422 and not_json.json()["detail"][0]["loc"][0] == "body"
    not_utf8 = client.post(
        "/v1/voiceai/agents",
        content=b'{"name": "\xff"}',
        headers={"content-type": "application/json"},
    )
    assert_seed_error(not_utf8, 422, ["body"])
    wrong_type = client.post(
        "/v1/voiceai/agents", content=b"name=x", headers={"content-type": "text/plain"}
    )
    assert wrong_type.status_code == 422, wrong_type.text
    assert all(set(error) == {"loc", "msg", "type"} for error in wrong_type.json()["detail"])
    broken_form = client.post(
        "/v1/voiceai/batch-calling/submit-csv",
        content=b"--b\r\nContent-Disposition: form-data\r\n\r\nx",
        headers={"content-type": "multipart/form-data; boundary=b"},
    )
    assert broken_form.status_code == 422, broken_form.text
    assert all(set(error) == {"loc", "msg", "type"} for error in broken_form.json()["detail"])


@pytest.fixture
def api_in_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """The API in a uvicorn server of this process (its port), so a test can break a part."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=free_port(), lifespan="off", log_level="error")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 10, interval=0.02, what="the API in a thread to start")
    yield server.config.port
    server.should_exit = True
    thread.join(timeout=10)


def test_an_unhandled_error_is_a_500_in_the_seeds_shape_and_the_connection_lives_on(
    api_in_thread: int, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> bytes:
        raise RuntimeError("the metrics store is unreadable")

    monkeypatch.setattr(metrics_api, "render_metrics", broken)
    connection = http.client.HTTPConnection("127.0.0.1", api_in_thread, timeout=10)
    try:
        with caplog.at_level(logging.ERROR):
            connection.request("GET", "/metrics")
            failed = connection.getresponse()
            assert failed.status == 500
            assert json.loads(failed.read()) == {
                "detail": [{"loc": [], "msg": "internal server error", "type": "internal_error"}]
            }
        # The same keep-alive connection answers the next request.
        connection.request("GET", "/healthz")
        healthy = connection.getresponse()
        assert healthy.status == 200 and json.loads(healthy.read()) == {"status": "ok"}
    finally:
        connection.close()
    [record] = [r for r in caplog.records if r.exc_info]
    assert "the metrics store is unreadable" in str(record.exc_info[1])


def test_the_openapi_document_names_the_key_schemes_and_every_routes_errors(
    stack: Stack,
) -> None:
    document = httpx.get(f"{stack.api_url}/openapi.json").json()
    schemes = document["components"]["securitySchemes"]
    assert {(s["type"], s.get("in"), s.get("name"), s.get("scheme")) for s in schemes.values()} == {
        ("apiKey", "header", "x-api-key", None),
        ("apiKey", "header", "xi-api-key", None),
        ("http", None, None, "bearer"),
    }
    error_ref = "#/components/schemas/ErrorResponse"
    submit_op = document["paths"][SUBMIT]["post"]
    assert {tuple(r) for r in submit_op["security"]} == {(name,) for name in schemes}
    for status in ("401", "409", "413", "422", "500"):
        schema = submit_op["responses"][status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": error_ref}, (status, schema)
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert "500" in operation["responses"], (method, path)
            if "security" in operation:
                assert "401" in operation["responses"], (method, path)
            if "{" in path:
                assert "404" in operation["responses"] or "telephony" in path, (method, path)


BATCHES = "/v1/voiceai/batch-calling"
CALL_BULK = "/ai/phone-calls/action/call-bulk"
NUL, SURROGATE = "\u0000", "\ud800"
DYNAMIC = ["body", "recipients", 0, "conversation_initiation_client_data", "dynamic_variables"]
OVERRIDE = ["body", "recipients", 0, "conversation_initiation_client_data"]
CONTACT = ["body", "contacts", 0]


def post_json(
    client: httpx.Client, path: str, body: object, method: str = "POST"
) -> httpx.Response:
    """Send ``body`` as ASCII JSON, so NUL and lone surrogates travel as \\u escapes (valid
    JSON), as a fuzzer sends them."""
    return client.request(
        method, path, content=json.dumps(body), headers={"content-type": "application/json"}
    )


def _person(**data: Any) -> dict[str, Any]:
    variables = {"first_name": "Ada", "amount": "$1.00"}
    variables.update(data.pop("variables", {}))
    return {
        "phone_number": "+12125550100",
        "conversation_initiation_client_data": {"dynamic_variables": variables, **data},
    }


def _submit_body(agent_id: str, number_id: str, fields: dict[str, Any]) -> dict[str, Any]:
    body = {"call_name": "hostile", "agent_id": agent_id, "agent_phone_number_id": number_id}
    body.update(fields)
    body["recipients"] = [body.pop("person", _person())]
    return body


def _contact(**fields: Any) -> dict[str, Any]:
    return {"contacts": [{"numberToCall": "+12125550100", **fields}]}


def _nothing_written(client: httpx.Client, agent_id: str) -> None:
    assert client.get(f"{BATCHES}/workspace").json()["batch_calls"] == []
    assert [a["agent_id"] for a in client.get("/v1/voiceai/agents").json()["agents"]] == [agent_id]
    assert len(client.get("/v1/voiceai/phone-numbers").json()) == 1
    assert client.get("/v1/voiceai/dnc").json()["numbers"] == []
    assert client.get("/v1/voiceai/webhooks").json()["webhooks"] == []
    assert client.get("/ai/contacts").json()["contacts"] == []


@pytest.mark.parametrize("bad", [NUL, SURROGATE], ids=["nul", "lone-surrogate"])
def test_text_that_cannot_be_stored_is_a_422_naming_the_field(
    stack: Stack, client: httpx.Client, bad: str
) -> None:
    agent_id, number_id = create_agent(client), register_number(client)
    agent_before = client.get(f"/v1/voiceai/agents/{agent_id}").json()
    text = f"a{bad}b"
    submit_cases: list[tuple[dict[str, Any], list[Any]]] = [
        ({"call_name": text}, ["body", "call_name"]),
        ({"agent_id": text}, ["body", "agent_id"]),
        ({"agent_phone_number_id": text}, ["body", "agent_phone_number_id"]),
        ({"agent_phone_number_ids": [number_id, text]}, ["body", "agent_phone_number_ids", 1]),
        ({"timezone": text}, ["body", "timezone"]),
        (
            {"whatsapp_params": {"whatsapp_phone_number_id": text}},
            ["body", "whatsapp_params", "whatsapp_phone_number_id"],
        ),
        ({"person": {**_person(), "id": text}}, ["body", "recipients", 0, "id"]),
        ({"person": _person(variables={"first_name": text})}, [*DYNAMIC, "first_name"]),
        ({"person": _person(variables={text: "x"})}, [*DYNAMIC, text, "[key]"]),
        (
            {"person": _person(conversation_config_override={"agent": {"first_message": text}})},
            [*OVERRIDE, "conversation_config_override", "agent", "first_message"],
        ),
        (
            {"person": _person(conversation_config_override={"custom": {"deep": [1, text]}})},
            [*OVERRIDE, "conversation_config_override", "custom"],
        ),
        (
            {"person": _person(custom_llm_extra_body={text: 1})},
            [*OVERRIDE, "custom_llm_extra_body"],
        ),
    ]
    cases: list[tuple[str, str, object, list[Any]]] = [
        ("POST", f"{BATCHES}/submit", _submit_body(agent_id, number_id, fields), loc)
        for fields, loc in submit_cases
    ]
    cases += [
        ("POST", "/v1/voiceai/agents", {"name": text}, ["body", "name"]),
        (
            "POST",
            "/v1/voiceai/agents",
            {"name": "n", "voice": {"voice_id": text}},
            ["body", "voice", "voice_id"],
        ),
        (
            "POST",
            "/v1/voiceai/agents",
            {"name": "n", "voice": {"style": {text: 1}}},
            ["body", "voice", "style"],
        ),
        ("PATCH", f"/v1/voiceai/agents/{agent_id}", {"prompt": text}, ["body", "prompt"]),
        (
            "POST",
            "/v1/voiceai/phone-numbers",
            {"phone_number": "+12025550111", "label": text},
            ["body", "label"],
        ),
        ("POST", "/v1/voiceai/dnc", {"phone_number": text}, ["body", "phone_number"]),
        (
            "POST",
            "/v1/voiceai/dnc/import",
            {"phone_numbers": ["+12125550100", text]},
            ["body", "phone_numbers", 1],
        ),
        (
            "POST",
            "/v1/voiceai/webhooks",
            {"url": "https://example.com/hook", "secret": text * 8},
            ["body", "secret"],
        ),
        ("POST", CALL_BULK, _contact(firstName=text), [*CONTACT, "firstName"]),
        (
            "POST",
            CALL_BULK,
            _contact(metadata={"invoice": {"lines": [text]}}),
            [*CONTACT, "metadata"],
        ),
        ("POST", CALL_BULK, _contact(metadata={text: 1}), [*CONTACT, "metadata"]),
        (
            "POST",
            CALL_BULK,
            _contact(promptTags={"amount": text}),
            [*CONTACT, "promptTags", "amount"],
        ),
    ]
    for method, path, body, loc in cases:
        response = post_json(client, path, body, method)
        assert response.status_code == 422, (path, body, response.text)
        [error] = response.json()["detail"]
        # A key that is not Unicode text is named in the loc as far as it can be.
        named = [p.encode(errors="surrogatepass").decode(errors="replace") for p in map(str, loc)]
        assert list(map(str, error["loc"])) == named, (body, error)
        assert error["type"] in ("value_error.nul", "value_error.surrogate"), error
    assert client.get(f"/v1/voiceai/agents/{agent_id}").json() == agent_before
    _nothing_written(client, agent_id)


def test_nul_in_a_csv_cell_or_form_field_is_a_422_naming_row_and_column(
    stack: Stack, client: httpx.Client
) -> None:
    agent_id, number_id = create_agent(client), register_number(client)
    good = "phone_number,id,first_name,amount\n+12125550100,r1,Ada,$1\n"
    cases: list[tuple[str, dict[str, str], list[Any]]] = [
        (good.replace("Ada", "A\x00da"), {}, ["body", "file", "row", 2, "first_name"]),
        (good.replace("r1", "r\x001"), {}, ["body", "file", "row", 2, "id"]),
        (good.replace("amount", "am\x00ount"), {}, ["body", "file", "row", 2, "am\x00ount"]),
        (good, {"call_name": "csv\x00batch"}, ["body", "call_name"]),
        (good, {"timezone": "Europe/\x00Paris"}, ["body", "timezone"]),
    ]
    for content, fields, loc in cases:
        response = client.post(
            f"{BATCHES}/submit-csv",
            data={
                "call_name": "csv",
                "agent_id": agent_id,
                "agent_phone_number_id": number_id,
                **fields,
            },
            files={"file": ("people.csv", content.encode(), "text/csv")},
        )
        assert response.status_code == 422, (content, fields, response.text)
        assert loc in [error["loc"] for error in response.json()["detail"]], response.text
    assert client.get(f"{BATCHES}/workspace").json()["batch_calls"] == []


def test_nul_in_a_path_or_query_parameter_is_a_422_naming_it(client: httpx.Client) -> None:
    cases: list[tuple[str, str, dict[str, str], list[Any]]] = [
        ("GET", f"{BATCHES}/batch%00x", {}, ["path", "batch_id"]),
        ("GET", f"{BATCHES}/batch%00x/export.csv", {}, ["path", "batch_id"]),
        ("POST", f"{BATCHES}/batch%00x/cancel", {}, ["path", "batch_id"]),
        ("DELETE", f"{BATCHES}/batch%00x", {}, ["path", "batch_id"]),
        ("GET", "/v1/voiceai/agents/agent%00x", {}, ["path", "agent_id"]),
        ("DELETE", "/v1/voiceai/dnc/%2B1212%0055501", {}, ["path", "phone_number"]),
        ("DELETE", "/v1/voiceai/webhooks/wh%00x", {}, ["path", "endpoint_id"]),
        ("GET", "/ai/contacts/c%00x", {}, ["path", "contact_id"]),
        ("GET", "/ai/settings-templates/t%00x", {}, ["path", "template_id"]),
        ("GET", f"{BATCHES}/workspace", {"last_doc": "b\x00"}, ["query", "last_doc"]),
        ("GET", f"{BATCHES}/workspace", {"agent_id": "a\x00"}, ["query", "agent_id"]),
        ("GET", "/v1/voiceai/agents", {"cursor": "a\x00"}, ["query", "cursor"]),
        ("GET", "/v1/voiceai/dnc", {"cursor": "+1\x00"}, ["query", "cursor"]),
        ("GET", "/v1/voiceai/webhooks/deliveries", {"last_doc": "d\x00"}, ["query", "last_doc"]),
        ("GET", "/ai/contacts", {"last_doc": "c\x00"}, ["query", "last_doc"]),
        ("GET", "/ai/settings-templates", {"cursor": "t\x00"}, ["query", "cursor"]),
    ]
    for method, path, params, loc in cases:
        assert_seed_error(client.request(method, path, params=params), 422, loc)


def test_a_boolean_for_a_numeric_voice_setting_is_a_422(stack: Stack, client: httpx.Client) -> None:
    agent_id, number_id = create_agent(client), register_number(client)
    before = client.get(f"/v1/voiceai/agents/{agent_id}").json()
    for setting in ("stability", "speed", "similarity_boost"):
        voice = {"voice": {setting: False}}
        create = client.post("/v1/voiceai/agents", json={"name": "n", **voice})
        assert_seed_error(create, 422, ["body", "voice", setting])
        patch = client.patch(f"/v1/voiceai/agents/{agent_id}", json=voice)
        assert_seed_error(patch, 422, ["body", "voice", setting])
        person = _person(conversation_config_override={"tts": {setting: True}})
        response = submit(client, agent_id, number_id, [person])
        assert_seed_error(
            response, 422, [*OVERRIDE, "conversation_config_override", "tts", setting]
        )
    assert client.get(f"/v1/voiceai/agents/{agent_id}").json() == before
    _nothing_written(client, agent_id)


def test_a_boolean_for_a_whole_number_is_a_422(stack: Stack, client: httpx.Client) -> None:
    agent_id, number_id = create_agent(client), register_number(client)
    cases = [
        ({"target_concurrency_limit": True}, ["body", "target_concurrency_limit"]),
        ({"scheduled_time_unix": True}, ["body", "scheduled_time_unix"]),
        (
            {"telephony_call_config": {"ringing_timeout_secs": True}},
            ["body", "telephony_call_config", "ringing_timeout_secs"],
        ),
        ({"retry_policy": {"max_attempts": True}}, ["body", "retry_policy", "max_attempts"]),
        (
            {"retry_policy": {"max_attempts": 2, "delays_s": [True]}},
            ["body", "retry_policy", "delays_s", 0],
        ),
    ]
    for fields, loc in cases:
        response = submit(client, agent_id, number_id, recipients(1), **fields)
        assert_seed_error(response, 422, loc)
    _nothing_written(client, agent_id)


def test_sizes_over_the_limits_are_422s_naming_the_field(
    stack: Stack, client: httpx.Client
) -> None:
    agent_id, number_id = create_agent(client), register_number(client)
    many = {f"v{i}": "x" for i in range(MAX_VARIABLES + 1)}
    long_name = "n" * (MAX_VARIABLE_NAME_CHARS + 1)
    half = "x" * (MAX_VARIABLES_TOTAL_CHARS // 2)
    submit_cases: list[tuple[dict[str, Any], list[Any], str]] = [
        (many, DYNAMIC, "too_long"),
        ({long_name: "x"}, [*DYNAMIC, long_name, "[key]"], "string_too_long"),
        (
            {"first_name": "x" * (MAX_VARIABLE_VALUE_CHARS + 1)},
            [*DYNAMIC, "first_name"],
            "string_too_long",
        ),
        ({"a": half, "b": half}, DYNAMIC, "too_large"),
    ]
    for variables, loc, kind in submit_cases:
        response = submit(client, agent_id, number_id, [_person(variables=variables)])
        assert_seed_error(response, 422, loc)
        assert response.json()["detail"][0]["type"] == kind, response.text
    big = {"blob": "x" * MAX_FREE_JSON_CHARS}
    bulk_cases: list[tuple[dict[str, Any], list[Any], str]] = [
        (_contact(metadata=big), [*CONTACT, "metadata"], "too_large"),
        (_contact(promptTags=many), [*CONTACT, "promptTags"], "too_long"),
        (_contact(promptTags={"a": half, "b": half}), [*CONTACT, "promptTags"], "too_large"),
        (
            _contact(promptTags={"amount": "x" * (MAX_VARIABLE_VALUE_CHARS + 1)}),
            [*CONTACT, "promptTags", "amount"],
            "string_too_long",
        ),
    ]
    for body, loc, kind in bulk_cases:
        response = client.post(CALL_BULK, json=body)
        assert_seed_error(response, 422, loc)
        assert response.json()["detail"][0]["type"] == kind, response.text
    too_long_url = "https://example.com/" + "a" * (MAX_URL_CHARS - len("https://example.com/") + 1)
    response = client.post("/v1/voiceai/webhooks", json={"url": too_long_url})
    assert_seed_error(response, 422, ["body", "url"])
    _nothing_written(client, agent_id)
    # At the limit is accepted.
    response = client.post("/v1/voiceai/webhooks", json={"url": too_long_url[:-1]})
    assert response.status_code == 201, response.text


def test_a_wrong_method_names_every_method_the_path_takes(client: httpx.Client) -> None:
    # Two routes share the path (GET lists, POST creates): Allow names both.
    response = client.request("OPTIONS", "/ai/settings-templates")
    assert_seed_error(response, 405, ["path"])
    assert set(response.headers["allow"].split(", ")) >= {"GET", "POST"}


def test_a_forged_agent_config_signature_outside_ascii_is_a_403(client: httpx.Client) -> None:
    response = client.get(
        "/v1/voiceai/calls/call_x/agent-config",
        params={"signature": "[Á\U000f38d2", "expires": 288689113991},
    )
    assert_seed_error(response, 403, ["query", "signature"])
