"""What the tests and the benchmarks share: a real Switchboard stack in child processes
(``harness.stack``), API request builders (``harness.factories``) and the schemathesis run over
the API's OpenAPI document (``harness.openapi_fuzz``). Development only: not packaged."""
