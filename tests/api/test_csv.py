"""CSV in and out against a running stack: submit-csv and export.csv."""

from __future__ import annotations

import csv
import http.client
import io
import json
from typing import Any

import httpx

from shared.batches.csv import EXPORT_COLUMNS
from tests.conftest import new_api_key
from tests.factories import create_agent, register_number
from tests.support import Stack, wait_for

BATCHES = "/v1/voiceai/batch-calling"


def upload(
    client: httpx.Client,
    text: str | bytes,
    agent_id: str,
    number_id: str | None = None,
    prefix: str = BATCHES,
    headers: dict[str, str] | None = None,
    **fields: str,
) -> httpx.Response:
    data = {"call_name": "csv batch", "agent_id": agent_id, **fields}
    if number_id is not None:
        data["agent_phone_number_id"] = number_id
    content = text.encode() if isinstance(text, str) else text
    return client.post(
        f"{prefix}/submit-csv",
        data=data,
        files={"file": ("people.csv", content, "text/csv")},
        headers=headers or {},
    )


def batch_count(client: httpx.Client) -> int:
    response = client.get(f"{BATCHES}/workspace")
    assert response.status_code == 200, response.text
    return len(response.json()["batch_calls"])


def call_count(stack: Stack) -> int:
    return int(stack.sql("SELECT count(*) FROM calls")[0][0])


def wait_final(client: httpx.Client, batch_id: str, timeout: float = 60) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        body: dict[str, Any] = client.get(f"{BATCHES}/{batch_id}").json()
        return body if body["status"] in ("completed", "failed", "cancelled") else None

    return wait_for(done, timeout, what=f"batch {batch_id} to end")  # type: ignore[no-any-return]


def locs(response: httpx.Response) -> list[list[Any]]:
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert all(set(item) == {"loc", "msg", "type"} for item in detail)
    return [item["loc"] for item in detail]


def test_csv_with_bom_and_mangled_plus_completes_and_exports(stack: Stack, client: httpx.Client):
    agent_id = create_agent(client)
    number_id = register_number(client)
    # A BOM, CRLF line ends, a '+' a spreadsheet dropped, and one in scientific notation.
    text = (
        "\ufeffphone_number,id,first_name,amount\r\n"
        "+17185550701,cust-1,Ada,$1.00\r\n"
        "17185550702,,Grace,$2.00\r\n"
        "1.7185550703E+10,cust-3,Alan,$3.00\r\n"
    )
    response = upload(client, text, agent_id, number_id, timezone="UTC")
    assert response.status_code == 200, response.text
    batch = response.json()
    assert batch["total_calls_scheduled"] == 3
    assert batch["name"] == "csv batch" and batch["phone_number_id"] == number_id
    assert batch["timezone"] == "UTC"

    final = wait_final(client, batch["id"])
    assert final["status"] == "completed"
    people = final["recipients"]
    assert [p["phone_number"] for p in people] == ["+17185550701", "+17185550702", "+17185550703"]
    assert people[0]["id"] == "cust-1" and people[2]["id"] == "cust-3"
    assert people[1]["id"] and people[1]["id"] not in ("cust-1", "cust-3")
    assert [p["conversation_initiation_client_data"]["dynamic_variables"] for p in people] == [
        {"first_name": "Ada", "amount": "$1.00"},
        {"first_name": "Grace", "amount": "$2.00"},
        {"first_name": "Alan", "amount": "$3.00"},
    ]

    # The export, here through the convai prefix, has one row per recipient in order.
    exported = client.get(f"/v1/convai/batch-calling/{batch['id']}/export.csv")
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("text/csv")
    reader = csv.DictReader(io.StringIO(exported.text))
    assert tuple(reader.fieldnames or ()) == EXPORT_COLUMNS
    rows = list(reader)
    assert [r["recipient_id"] for r in rows] == [p["id"] for p in people]
    assert [r["phone_number"] for r in rows] == [p["phone_number"] for p in people]
    assert [r["status"] for r in rows] == ["completed"] * 3
    assert [r["provider_call_sid"] for r in rows] == [p["provider_call_sid"] for p in people]
    assert all(r["provider_call_sid"].startswith("CA") for r in rows)
    assert all(r["outcome"] == "answered" and r["attempts"] == "1" for r in rows)
    assert all(r["caller_number"] == "+12025550100" for r in rows)
    assert all(r["duration_s"].isdigit() for r in rows)
    assert [r["requestMetadata"] for r in rows] == ["", "", ""]

    # Another workspace cannot see it.
    with stack.client(new_api_key(stack)) as stranger:
        assert stranger.get(f"{BATCHES}/{batch['id']}/export.csv").status_code == 404


def test_export_writes_request_metadata_as_compact_json(stack: Stack, client: httpx.Client):
    agent_id = create_agent(client)
    number_id = register_number(client)
    text = "phone_number,first_name,amount\n+17185550711,Ada,$1\n+17185550712,Bob,$2\n"
    batch = upload(client, text, agent_id, number_id).json()
    wait_final(client, batch["id"])
    # request_metadata is written by call-bulk; set it directly to see how the export shows it.
    stack.sql(
        "UPDATE calls SET request_metadata = %s::jsonb WHERE batch_id = %s AND position = 0",
        '{"crm": {"lead": 7}, "source": "q3"}',
        batch["id"],
    )
    rows = list(csv.DictReader(io.StringIO(client.get(f"{BATCHES}/{batch['id']}/export.csv").text)))
    assert [r["requestMetadata"] for r in rows] == ['{"crm":{"lead":7},"source":"q3"}', ""]


def test_csv_submit_keeps_idempotency_and_dedup_rules(stack: Stack, client: httpx.Client):
    agent_id = create_agent(client)
    number_id = register_number(client)
    text = "phone_number,first_name,amount\n+17185550721,Ada,$1\n17185550721,Ada,$1\n"
    key = {"Idempotency-Key": "csv-once"}
    first = upload(client, text, agent_id, number_id, headers=key)
    again = upload(client, text, agent_id, number_id, headers=key)
    assert first.status_code == 200 and again.status_code == 200, again.text
    assert first.json()["id"] == again.json()["id"]
    assert batch_count(client) == 1
    final = wait_final(client, first.json()["id"])
    # The repaired number repeats the first one: the duplicate rule still holds.
    assert [r["outcome"] for r in final["recipients"]] == ["answered", "duplicate"]


def test_bad_number_and_missing_variable_are_named_by_row_and_column(
    stack: Stack, client: httpx.Client
):
    agent_id = create_agent(client)
    number_id = register_number(client)
    text = (
        "phone_number,first_name,amount\n"
        "+17185550731,Ada,$1\n"  # row 2
        "+1 555 NOT A NUMBER,Bob,$2\n"  # row 3
        "+17185550733,Cy,$3\n"  # row 4
        "+17185550734,Di,\n"  # row 5: amount left empty
    )
    before = call_count(stack)
    response = upload(client, text, agent_id, number_id)
    assert locs(response) == [
        ["body", "file", "row", 3, "phone_number"],
        ["body", "file", "row", 5, "amount"],
    ]
    assert "'amount'" in response.json()["detail"][1]["msg"]
    assert batch_count(client) == 0
    assert call_count(stack) == before


def test_file_level_problems_are_422_and_write_nothing(stack: Stack, client: httpx.Client):
    agent_id = create_agent(client)
    number_id = register_number(client)
    no_phone = upload(client, "name,first_name\nx,Ada\n", agent_id, number_id)
    assert locs(no_phone) == [["body", "file"]]
    assert "phone_number" in no_phone.json()["detail"][0]["msg"]
    assert locs(upload(client, "", agent_id, number_id)) == [["body", "file"]]
    assert locs(upload(client, "\ufeff\r\n", agent_id, number_id)) == [["body", "file"]]
    assert locs(upload(client, "phone_number,first_name,amount\n", agent_id, number_id)) == [
        ["body", "file"]
    ]
    assert locs(upload(client, b"phone_number\n\xff\xfe\n", agent_id, number_id)) == [
        ["body", "file"]
    ]
    too_many = "phone_number,first_name,amount\n" + "+12125550100,A,1\n" * 10_001
    response = upload(client, too_many, agent_id, number_id)
    assert locs(response) == [["body", "file"]]
    assert "10000" in response.json()["detail"][0]["msg"]
    missing_form = client.post(
        f"{BATCHES}/submit-csv",
        data={"agent_id": agent_id},
        files={"file": ("p.csv", b"phone_number\n+12125550100\n", "text/csv")},
    )
    assert ["body", "call_name"] in locs(missing_form)
    assert batch_count(client) == 0


def test_unrepairable_mangled_numbers_are_rejected_clearly(stack: Stack, client: httpx.Client):
    agent_id = create_agent(client)
    number_id = register_number(client)
    text = (
        "phone_number,first_name,amount\n"
        "5550100,Ada,$1\n"  # row 2: too short to be a number with '+'
        "+17185550742,Bob,$2\n"
        "1.64656E+10,Cy,$3\n"  # row 4: the spreadsheet rounded digits away
        "2015550142,Di,$4\n"  # row 5: a US national number, and Egyptian with a '+': no guess
    )
    response = upload(client, text, agent_id, number_id)
    assert locs(response) == [
        ["body", "file", "row", 2, "phone_number"],
        ["body", "file", "row", 4, "phone_number"],
        ["body", "file", "row", 5, "phone_number"],
    ]
    first, second, third = response.json()["detail"]
    assert "leading '+'" in first["msg"] and first["type"] == "value_error.phone"
    assert "rounded" in second["msg"]
    assert "national number" in third["msg"]
    # An unknown agent stops the service before the recipients; the file's errors still show.
    response = upload(client, text, "agent_nope", number_id)
    assert locs(response) == [
        ["body", "agent_id"],
        ["body", "file", "row", 2, "phone_number"],
        ["body", "file", "row", 4, "phone_number"],
        ["body", "file", "row", 5, "phone_number"],
    ]
    assert batch_count(client) == 0


def test_uploads_are_refused_before_being_read_without_a_key_or_over_the_limit(
    stack: Stack, client: httpx.Client
):
    body = b"phone_number\n+17185550751\n"
    anonymous = httpx.post(
        f"{stack.api_url}{BATCHES}/submit-csv",
        data={"call_name": "x", "agent_id": "a"},
        files={"file": ("p.csv", body, "text/csv")},
    )
    assert anonymous.status_code == 401
    assert anonymous.json()["detail"][0]["loc"] == ["header", "x-api-key"]
    # Announced larger than the limit: refused on the header, before any byte of the body.
    connection = http.client.HTTPConnection("127.0.0.1", int(stack.api_url.rsplit(":", 1)[1]))
    try:
        connection.putrequest("POST", f"{BATCHES}/submit-csv")
        connection.putheader("x-api-key", str(client.headers["x-api-key"]))
        connection.putheader("Content-Type", "multipart/form-data; boundary=b")
        connection.putheader("Content-Length", str(64 * 1024 * 1024))
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 413
        assert json.loads(response.read())["detail"][0]["type"] == "too_large"
    finally:
        connection.close()
    assert batch_count(client) == 0
