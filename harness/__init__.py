"""What the tests and the benchmarks share beside the stack launcher (``cli.stack``, which
``harness.stack`` re-exports under the names they import): API request builders
(``harness.factories``) and the schemathesis run over the API's OpenAPI document
(``harness.openapi_fuzz``). Development only: not packaged."""
