"""The HTTP API: ``uvicorn api.main:app``: the FastAPI ``application``, behind the provider's
status callbacks (``telephony.StatusCallbacks``)."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import text
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from api import (
    agents,
    batch_calling,
    call_bulk,
    connections,
    contacts,
    dashboard,
    dnc,
    metrics,
    settings_templates,
    telephony,
    webhooks,
)
from api.deps import storable_parameters
from api.docs_ui import serve_docs_offline
from api.responses import declare_error_responses, error_responses
from api.transport import TransportGuard
from shared import heap, messaging
from shared.db import get_engine
from shared.errors import ErrorItem, SwitchboardError
from shared.settings import get_settings, refuse_unsafe_start

log = logging.getLogger(__name__)


@asynccontextmanager
async def _lifespan(_: FastAPI) -> AsyncIterator[None]:
    # Before serving anything: a default signing secret would let anyone forge agent-config URLs.
    refuse_unsafe_start(get_settings())
    heap.settle()  # everything imported and built by now lives as long as the process
    yield


application = FastAPI(
    lifespan=_lifespan,
    title="Switchboard",
    version="0.1.0",
    description="Batch calling for AI voice agents: submit recipients, watch every call end.",
    # Metrics are Prometheus's (/metrics). FastAPI's own OpenTelemetry hooks would otherwise
    # look for configured providers on every request, the provider's callbacks included.
    telemetry={"tracing": False, "metrics": False, "logs": False},
    dependencies=[Depends(storable_parameters)],
    # Served from local assets by api/docs_ui.py: FastAPI's own pages load them from a CDN.
    docs_url=None,
    redoc_url=None,
)
serve_docs_offline(application)

# Each route declares the errors it can answer; done before inclusion, which builds from it.
for router in (
    telephony.router,
    batch_calling.router,
    agents.router,
    connections.router,
    dnc.router,
    webhooks.router,
    dashboard.router,
    call_bulk.router,
    contacts.router,
    settings_templates.router,
    metrics.router,
):
    declare_error_responses(router)

# The provider's callbacks are most requests (several per call): their routes are matched first.
application.include_router(telephony.router)
for prefix in ("/v1/voiceai", "/v1/convai"):
    application.include_router(batch_calling.router, prefix=f"{prefix}/batch-calling")
    application.include_router(agents.router, prefix=prefix)
    application.include_router(dnc.router, prefix=prefix)
    application.include_router(webhooks.router, prefix=prefix)
application.include_router(connections.router, prefix="/v1")
application.include_router(dashboard.router)
for router in (call_bulk.router, contacts.router, settings_templates.router):
    application.include_router(router, prefix="/ai")
application.include_router(metrics.router)


# Body limits and the API key's presence, on the headers before anything is parsed, and the
# last answer for an unhandled error (api/transport.py).
application.add_middleware(TransportGuard)


@application.exception_handler(SwitchboardError)
async def _domain_error(_: Request, exc: SwitchboardError) -> JSONResponse:
    return JSONResponse({"detail": exc.detail()}, status_code=exc.status_code)


# The framework's own errors (an unknown route, a method the route does not take) in the
# seeds' shape too: what a client gets is always {"detail": [{"loc", "msg", "type"}]}.
_HTTP_ERROR_TYPES = {404: "not_found", 405: "method_not_allowed"}


@application.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    if exc.status_code == 400:
        # The framework's only 400: a body it could not decode (not UTF-8 JSON, a broken
        # multipart form). Routes and services never raise HTTPException.
        undecodable = [{"loc": ["body"], "msg": str(exc.detail), "type": "body_invalid"}]
        return JSONResponse({"detail": undecodable}, status_code=422)
    kind = _HTTP_ERROR_TYPES.get(exc.status_code, "http_error")
    detail = [{"loc": ["path"], "msg": str(exc.detail), "type": kind}]
    headers = exc.headers
    if exc.status_code == 405:
        # The router's Allow names the methods of the first route matching the path only.
        headers = {"Allow": ", ".join(_methods_at(request.url.path))}
    return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=headers)


@functools.cache
def _documented_methods() -> list[tuple[re.Pattern[str], int, frozenset[str]]]:
    methods: dict[str, set[str]] = {}
    for path, operations in application.openapi()["paths"].items():
        methods.setdefault(path, set()).update(method.upper() for method in operations)
    return [
        (
            compile_path(path)[0],
            path.count("{"),
            frozenset(taken | ({"HEAD"} if "GET" in taken else set())),
        )
        for path, taken in methods.items()
    ]


def _methods_at(path: str) -> list[str]:
    """The methods the OpenAPI document lists at ``path``: those of its most literal matching
    paths (``.../batch-calling/submit`` is not also ``.../batch-calling/{batch_id}``)."""
    matching = [
        (params, taken) for pattern, params, taken in _documented_methods() if pattern.match(path)
    ]
    fewest = min((params for params, _ in matching), default=0)
    return sorted({method for params, taken in matching if params == fewest for method in taken})


@application.exception_handler(RequestValidationError)
async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    # The seeds' shape exactly: loc, msg, type (no echo of the input, which may be 10k rows).
    detail = [
        ErrorItem(error.get("loc", []), error.get("msg", ""), error.get("type", "")).as_dict()
        for error in exc.errors()
    ]
    return JSONResponse({"detail": detail}, status_code=422)


@application.get("/healthz", tags=["health"], responses=error_responses(500))
async def healthz() -> dict[str, str]:
    """Liveness: the process answers (on the event loop itself: a busy thread pool, where
    the routes that touch the database run, does not delay it)."""
    return {"status": "ok"}


@application.get(
    "/readyz",
    tags=["health"],
    responses={
        **error_responses(500),
        503: {"description": "The database or the broker does not answer"},
    },
)
def readyz() -> JSONResponse:
    """Readiness: the database and the broker both answer."""
    checks: dict[str, str] = {}
    try:
        with get_engine().connect() as connection:
            connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {exc.__class__.__name__}"
    checks["broker"] = messaging.broker_readiness()
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
    )


# The provider's status callbacks (several per call) are answered before the framework's
# middleware and routing; every other request goes on to the application.
app = telephony.StatusCallbacks(application)
