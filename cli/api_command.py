"""`precall api`: the HTTP API for the mobile app and Twilio's callbacks (uvicorn)."""

from __future__ import annotations

import typer
import uvicorn

from precall.api.app import create_app
from precall.api.settings import ApiConfig


def api_cmd(
    host: str = typer.Option("127.0.0.1", envvar="PRECALL_API_HOST", help="Interface to bind."),
    port: int = typer.Option(8080, envvar="PRECALL_API_PORT", min=1, max=65535, help="TCP port."),
    log_level: str = typer.Option("info", envvar="PRECALL_LOG_LEVEL", help="uvicorn log level."),
) -> None:
    """Serve the API (OpenAPI at /openapi.json).

    Example: DATABASE_URL=postgresql:///app PRECALL_JWT_SECRET=... precall api --port 8080
    """
    config = ApiConfig.from_env()  # one line on a missing JWT key
    uvicorn.run(create_app(config), host=host, port=port, log_level=log_level.lower(), proxy_headers=True)
