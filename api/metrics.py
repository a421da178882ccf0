"""``GET /metrics``: Prometheus text exposition, without authentication like most exporters."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from shared.metrics import render_metrics

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response)
def prometheus_metrics() -> Response:
    """Calls by status and outcome, batches by status and queue depths (read at scrape time),
    plus the workers' dial, provider-error and pacing metrics."""
    return Response(render_metrics(), media_type=CONTENT_TYPE_LATEST)
