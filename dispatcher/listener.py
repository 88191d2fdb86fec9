"""Listens on precall_due and precall_call_changed over a dedicated autocommit connection; every
notification is only a wake-up."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

import psycopg

from precall import retry, sql

log = logging.getLogger("precall.listener")

CHANNEL = "precall_due"


CHANGED_CHANNEL = "precall_call_changed"


async def listen(dsn: str, on_wake: Callable[[], None], on_connected: Callable[[], None],
                 stop: asyncio.Event, ping_interval: float, on_call_changed: Callable[[], None] | None = None) -> None:
    """Runs until `stop`: reconnects with backoff, calls on_connected() after each LISTEN (so the
    dispatcher catches up), pings so a dead connection is noticed within ping_interval."""
    backoff = retry.LISTEN.attempts()
    while not stop.is_set():
        try:
            conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True, application_name="precall-listener")
        except psycopg.OperationalError as exc:
            delay = backoff.next_delay()
            log.warning("listener cannot connect (%s); retrying in %.1fs", str(exc).strip().splitlines()[-1], delay)
            await _sleep_or_stop(stop, delay)
            continue
        try:
            async with conn:
                await conn.execute(sql.query("listen_due"))
                backoff.reset()
                on_connected()
                while not stop.is_set():
                    async for note in conn.notifies(timeout=ping_interval):
                        _log_payload(note.payload)
                        if note.channel == CHANGED_CHANNEL and on_call_changed is not None:
                            on_call_changed()  # a call event to deliver
                        on_wake()
                        if stop.is_set():
                            break
                    await conn.execute(sql.query("ping"))
        except psycopg.OperationalError as exc:
            log.warning("listener connection lost (%s); reconnecting", str(exc).strip().splitlines()[-1] if str(exc) else exc)
            on_wake()
            await _sleep_or_stop(stop, backoff.upcoming)


def _log_payload(payload: str) -> None:
    try:
        data = json.loads(payload)
    except ValueError:
        log.warning("ignoring a malformed %s payload: %r", CHANNEL, payload[:200])
        return
    if not isinstance(data, dict) or data.get("v") != 1:
        log.info("unknown %s payload version: %r", CHANNEL, payload[:200])


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except asyncio.TimeoutError:
        pass
