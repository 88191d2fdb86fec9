"""`precall api`: the HTTP API for the mobile app and Twilio's callbacks (uvicorn)."""

from __future__ import annotations

import typer
import uvicorn

from precall.api.app import create_app
from precall import config as settings
from precall.config import ApiConfig


def api_cmd(
    host: str | None = typer.Option(None, help="Interface to bind (PRECALL_API_HOST, default 127.0.0.1)."),
    port: int | None = typer.Option(None, min=1, max=65535, help="TCP port (PRECALL_API_PORT, default 8080)."),
    log_level: str | None = typer.Option(None, help="uvicorn log level (PRECALL_LOG_LEVEL, default info)."),
    workers: int | None = typer.Option(None, min=1, max=64, help="Worker processes sharing the port "
                                       "(PRECALL_API_WORKERS, default 1); each has its own connection pool."),
) -> None:
    """Serve the API (OpenAPI at /openapi.json).

    One process answers ~500 receipts/s on one core; with --workers N, uvicorn runs N processes
    on the same socket (a receipt must be in before the Path C fallback wait runs out: make
    bench-receipts measures receipts/s against the dispatcher's pushes/s).

    Example: DATABASE_URL=postgresql:///app PRECALL_JWT_SECRET=... precall api --port 8080 --workers 2
    """
    config = ApiConfig.from_env()  # one line on a missing JWT key
    default_host, default_port = settings.api_listen()
    for name in settings.unknown_variables():
        typer.echo(f"precall: warning: {name} is set but precall does not read it (a typo?)", err=True)
    count = workers or settings.api_workers()
    # h11, even where httptools is installed (uvicorn would pick it): under httptools a client that
    # leaves no longer cancels its request's statement (tests/test_api_limits.py,
    # test_clients_that_leave_free_their_slot), for ~10% more receipts/s (bench/receipts.py).
    level = (log_level or settings.log_level("info")).lower()
    if count == 1:
        uvicorn.run(create_app(config), host=host or default_host, port=port or default_port,
                    log_level=level, proxy_headers=True, http="h11")
        return
    # Several processes: uvicorn imports the app in each (the factory reads the same environment,
    # already checked above, so a bad setting fails here in one line and not N times).
    uvicorn.run("precall.api.app:app_from_env", factory=True, workers=count, host=host or default_host,
                port=port or default_port, log_level=level, proxy_headers=True, http="h11")
