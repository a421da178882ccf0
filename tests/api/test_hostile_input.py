"""Input that once answered 500 (or a body of another shape): now a 4xx in the seeds' shape,
with nothing written."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
from collections.abc import Iterator

import httpx
import pytest
import uvicorn

from api import metrics as metrics_api
from api.main import app
from api.transport import BATCH_BODY_MAX_BYTES, DEFAULT_BODY_MAX_BYTES
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


def test_a_wrong_method_names_every_method_the_path_takes(client: httpx.Client) -> None:
    # Two routes share the path (GET lists, POST creates): Allow names both.
    response = client.request("OPTIONS", "/ai/settings-templates")
    assert_seed_error(response, 405, ["path"])
    assert set(response.headers["allow"].split(", ")) >= {"GET", "POST"}
