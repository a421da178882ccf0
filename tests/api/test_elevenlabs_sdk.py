"""The official ElevenLabs Python SDK, unchanged, against the running stack's batch-calling API."""

from __future__ import annotations

import csv
import io
import time

import httpx
import pytest
from elevenlabs import ElevenLabs
from elevenlabs.core.api_error import ApiError

from tests.factories import create_agent, recipients, register_number
from tests.support import Stack, wait_for


@pytest.fixture
def sdk(stack: Stack, api_key: str) -> ElevenLabs:
    return ElevenLabs(api_key=api_key, base_url=stack.api_url, timeout=60)


def test_sdk_drives_every_batch_call_method(
    stack: Stack, client: httpx.Client, sdk: ElevenLabs
) -> None:
    batch_calls = sdk.conversational_ai.batch_calls
    number_id = register_number(client)
    first_agent, second_agent = create_agent(client), create_agent(client)

    created = batch_calls.create(
        call_name="sdk batch",
        agent_id=first_agent,
        agent_phone_number_id=number_id,
        recipients=recipients(3, prefix="+1332555", start=0),
    )
    assert created.total_calls_scheduled == 3
    assert created.telephony_call_config.ringing_timeout_secs is not None

    def finished() -> bool:
        return batch_calls.get(created.id).status == "completed"

    wait_for(finished, 60, what="the SDK's batch to complete")
    detail = batch_calls.get(created.id)
    assert len(detail.recipients) == 3 and detail.total_calls_finished == 3
    retried = batch_calls.retry(created.id)  # nothing failed: the batch stays as it was
    assert retried.id == created.id and retried.status == "completed"

    later = batch_calls.create(
        call_name="sdk later",
        agent_id=second_agent,
        agent_phone_number_id=number_id,
        recipients=recipients(2, prefix="+1332555", start=10),
        scheduled_time_unix=int(time.time()) + 3600,
        telephony_call_config={"ringing_timeout_secs": 25},
    )
    assert later.status == "pending"
    assert later.telephony_call_config.ringing_timeout_secs == 25

    page = batch_calls.list(limit=1)
    assert [b.id for b in page.batch_calls] == [later.id] and page.has_more
    rest = batch_calls.list(limit=1, last_doc=page.next_doc)
    assert [b.id for b in rest.batch_calls] == [created.id] and not rest.has_more
    only_second = batch_calls.list(agent_id=second_agent)
    assert [b.id for b in only_second.batch_calls] == [later.id]

    assert batch_calls.cancel(later.id).status == "cancelled"

    exported = b"".join(batch_calls.export(created.id, limit=2)).decode()
    rows = list(csv.reader(io.StringIO(exported)))
    assert rows[0][:2] == ["recipient_id", "phone_number"]
    assert [row[1] for row in rows[1:]] == ["+13325550000", "+13325550001"]
    everything = b"".join(batch_calls.export(created.id)).decode()
    assert len(list(csv.reader(io.StringIO(everything)))) == 4

    assert batch_calls.delete(created.id) is None
    assert batch_calls.delete(later.id) is None
    with pytest.raises(ApiError) as missing:
        batch_calls.get(created.id)
    assert missing.value.status_code == 404
    assert batch_calls.list().batch_calls == []
