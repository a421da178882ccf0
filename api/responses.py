"""The error answers every route declares in the OpenAPI document, in the seeds' shape."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import get_flat_params
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field

from api.deps import authenticated_workspace_id


class ErrorItem(BaseModel):
    """One problem, located in the request."""

    loc: list[str | int] = Field(
        description='Where: e.g. ["body", "recipients", 3, "phone_number"]'
    )
    msg: str
    type: str


class ErrorResponse(BaseModel):
    """Every error the API answers: ``{"detail": [{"loc", "msg", "type"}]}``."""

    detail: list[ErrorItem]


ERROR_DESCRIPTIONS = {
    401: "No API key, or an unknown one",
    403: "The request's signature does not verify",
    404: "No such resource in the caller's workspace",
    409: "The request conflicts with the resource's current state",
    413: "The body is larger than the route takes",
    422: "The request does not validate, or its body does not decode",
    500: "An unexpected error (logged on the server)",
    503: "A setting the request needs is missing on the server (named in the error)",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route that can answer these errors."""
    return {
        status: {"model": ErrorResponse, "description": ERROR_DESCRIPTIONS[status]}
        for status in statuses
    }


CONFLICT = error_responses(409)
FORBIDDEN = error_responses(403)


def _authenticated(dependant: Dependant) -> bool:
    return any(
        dependency.call is authenticated_workspace_id or _authenticated(dependency)
        for dependency in dependant.dependencies
    )


def declare_error_responses(router: APIRouter) -> None:
    """Add to every route of ``router`` the errors any route of its kind can answer: 500
    everywhere; 401 where the API key is needed; 404 for a resource named in the path; 413
    where a body is taken; 422 where parameters or a body are (in the seeds' shape, not the
    framework's own). Call it before the router is included: inclusion builds the routes'
    response models from these declarations."""
    for route in router.routes:
        if not isinstance(route, APIRoute):
            continue
        statuses = [500]
        if _authenticated(route.dependant):
            statuses.append(401)
        if route.dependant.path_params:
            statuses.append(404)
        if route.body_field is not None:
            statuses.append(413)
        if route.body_field is not None or get_flat_params(route.dependant):
            statuses.append(422)
        for status, response in error_responses(*statuses).items():
            route.responses.setdefault(status, response)
