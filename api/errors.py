"""One error shape for every 4xx/5xx: {"error": code, "detail": one readable line}."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
import psycopg.errors
from psycopg_pool import PoolTimeout
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from precall.errors import ApiError

log = logging.getLogger("precall.api")


class ErrorBody(BaseModel):
    error: str
    detail: str


# What api/limits.py answers for a route that takes a body, before the route runs.
BODY_LIMITS = (408, 413, 415)
_DESCRIPTIONS = {
    408: "The body did not arrive within PRECALL_API_READ_TIMEOUT_S (default 10 s).",
    413: "The body is larger than PRECALL_API_MAX_BODY_BYTES (default 65536 bytes).",
    415: "A multipart body: no route takes files.",
    503: "A database limit was hit (lock_timeout, statement_timeout, pool_exhausted) or it is down.",
}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI entries for the error statuses a route can return (400: a body that is not JSON
    or form data at all; 503: the database is down)."""
    out: dict[int | str, dict[str, Any]] = {}
    for s in sorted({400, 503, *statuses}):
        out[s] = {"model": ErrorBody, **({"description": _DESCRIPTIONS[s]} if s in _DESCRIPTIONS else {})}
    return out


def _describe(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "request"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def _allowed_methods(request: Request) -> list[str]:
    """Starlette's 405 names only the first route on a path; POST and PUT share one here."""
    methods: set[str] = set()
    for route in request.app.routes:
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": exc.error, "detail": exc.detail}, exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": "invalid_request", "detail": _describe(exc)}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(_allowed_methods(request))
        return JSONResponse({"error": "http_error", "detail": str(exc.detail)}, exc.status_code, headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # The one shape for what nobody foresaw; the traceback goes to the server's log only.
        log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"error": "internal_error", "detail": "an unexpected error; it has been logged"}, 500)

    @app.exception_handler(psycopg.OperationalError)
    async def _db_down(_: Request, exc: psycopg.OperationalError) -> JSONResponse:
        # Which limit was hit, so ops and the app can tell a held lock from a full pool or an outage.
        if isinstance(exc, psycopg.errors.LockNotAvailable):
            error, detail = "lock_timeout", "a row this request needs is locked by another transaction; retry later"
        elif isinstance(exc, psycopg.errors.QueryCanceled):
            error, detail = "statement_timeout", "the database did not finish in time; retry later"
        elif isinstance(exc, PoolTimeout):
            error, detail = "pool_exhausted", "every database connection is busy; retry later"
        else:
            error, detail = "database_unavailable", "the database is not answering; retry later"
        return JSONResponse({"error": error, "detail": detail}, 503, headers={"Retry-After": "5"})
