"""The dashboard: a public, data-free page at ``/dashboard`` whose script polls
``/dashboard/data`` with the workspace's API key."""

from __future__ import annotations

from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse

from api.deps import SessionDep, WorkspaceDep
from shared.batches import views as service
from shared.schemas import DashboardResponse

router = APIRouter(tags=["dashboard"])

_PAGE = resources.files("api").joinpath("dashboard.html").read_text(encoding="utf-8")
# The page only talks to this API: no other origin for scripts, styles, fetches or frames,
# and the address (never the key in its fragment, but still) is not sent as a referrer.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


@router.get("/dashboard", response_class=HTMLResponse, summary="The dashboard page")
def dashboard_page() -> HTMLResponse:
    """The page itself: public and without data; its script reads the key from the URL
    fragment (``#key=...``) or a form, and polls ``/dashboard/data`` with it."""
    return HTMLResponse(_PAGE, headers=_PAGE_HEADERS)


@router.get("/dashboard/data", response_model=DashboardResponse, summary="Dashboard data")
def dashboard_data(
    session: SessionDep,
    workspace_id: WorkspaceDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> DashboardResponse:
    """The newest ``limit`` batches: counters, total and final recipients, recipients by status."""
    return service.dashboard_batches(session, workspace_id, limit)
