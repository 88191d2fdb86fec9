"""`precall dispatcher`: the long-running sender (run it under systemd, see deploy/)."""

from __future__ import annotations

import asyncio
import logging
import signal

import typer

from precall import logs
from precall import config as settings
from precall.config import Config
from precall.dispatcher.service import Dispatcher


def dispatcher_cmd(
    log_level: str | None = typer.Option(None, help="DEBUG, INFO, WARNING… (PRECALL_LOG_LEVEL, default INFO)."),
    plain_logs: bool = typer.Option(False, "--plain-logs", help="Human-readable logs instead of JSON lines."),
) -> None:
    """Send every planned preview at its send_at; runs until SIGTERM/SIGINT (exit 0).

    Example: PRECALL_METRICS_PORT=9464 precall dispatcher
    """
    logs.configure(log_level or settings.log_level("INFO"), json_lines=not plain_logs)
    for name in settings.unknown_variables():
        logging.getLogger("precall.dispatcher").warning("%s is set but precall does not read it (a typo?)", name)
    for line in settings.deprecated_variables():
        logging.getLogger("precall.dispatcher").warning("%s", line)
    config = Config.from_env()
    dispatcher = Dispatcher(config)  # fails here, in one line, on missing credentials
    asyncio.run(_run(dispatcher))


async def _run(dispatcher: Dispatcher) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await dispatcher.run(stop)
