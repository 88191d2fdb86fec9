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
) -> None:
    """Serve the API (OpenAPI at /openapi.json).

    Example: DATABASE_URL=postgresql:///app PRECALL_JWT_SECRET=... precall api --port 8080
    """
    config = ApiConfig.from_env()  # one line on a missing JWT key
    default_host, default_port = settings.api_listen()
    for name in settings.unknown_variables():
        typer.echo(f"precall: warning: {name} is set but precall does not read it (a typo?)", err=True)
    uvicorn.run(create_app(config), host=host or default_host, port=port or default_port,
                log_level=(log_level or settings.log_level("info")).lower(), proxy_headers=True)
