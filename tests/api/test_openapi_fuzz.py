"""Schemathesis over /openapi.json against the shared stack's API: no server error, no answer
that breaks the document, with the key in x-api-key and in Authorization: Bearer."""

from __future__ import annotations

from harness.openapi_fuzz import fuzz_openapi
from tests.support import Stack


def test_the_api_answers_as_its_openapi_document_says(stack: Stack, api_key: str) -> None:
    result = fuzz_openapi(stack.api_url, api_key, max_examples=5)
    print(result.output)
    assert result.failures == [], result.output[-20000:]
