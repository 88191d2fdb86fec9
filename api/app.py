"""The ASGI application: `precall api` serves it with uvicorn; OpenAPI at /openapi.json."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from precall.api import app_routes, call_outcomes, errors, store, twilio_inbound, twilio_status
from precall.api.errors import ApiError, responses
from precall.api.limits import RequestLimits
from precall.api.models import Health
from precall.config import ApiConfig


def create_app(config: ApiConfig) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def bounded(conn: AsyncConnection) -> None:
            await store.bound_session(conn, config.statement_timeout_ms, config.lock_timeout_ms)

        # check: a connection the server ended (restart, pg_terminate_backend) is replaced on
        # checkout instead of failing the request that drew it.
        pool = AsyncConnectionPool(config.database_url, min_size=1, max_size=config.pool_max, open=False,
                                   timeout=5, kwargs={"autocommit": True, "application_name": "precall-api"},
                                   configure=bounded, check=AsyncConnectionPool.check_connection)
        await pool.open(wait=False)
        app.state.pool = pool
        try:
            yield
        finally:
            await pool.close()

    app = FastAPI(title="precall", version="1", lifespan=lifespan,
                  description="The mobile app's notification API, Twilio's webhooks and the call system's outcome reports.")
    app.state.config = config
    errors.install(app)
    app.add_middleware(RequestLimits, max_body_bytes=config.max_body_bytes, read_timeout_s=config.read_timeout_s)
    app.include_router(app_routes.router)
    app.include_router(twilio_status.router)
    app.include_router(twilio_inbound.router)
    app.include_router(call_outcomes.router)

    @app.get("/healthz", responses=responses(), tags=["ops"])
    async def healthz(request: Request) -> Health:
        """200 when the database answers."""
        try:
            async with request.app.state.pool.connection() as conn:
                await store.ping(conn)
        except Exception as exc:  # noqa: BLE001 - any failure means "not healthy"
            raise ApiError(503, "database_unavailable", f"the database is not answering: {type(exc).__name__}") from None
        return Health()

    return app


def app_from_env() -> FastAPI:
    """The app as `precall api --workers N` starts it in each worker process."""
    return create_app(ApiConfig.from_env())
