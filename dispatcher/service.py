"""The dispatcher loop: sleep until the earliest send_at (or a NOTIFY, or the backstop poll),
claim what is due, send each claimed preview concurrently."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Callable

import psycopg
from psycopg.rows import class_row
from psycopg_pool import AsyncConnectionPool

from precall import sql
from precall.dispatcher.config import Config
from precall.dispatcher.listener import listen
from precall.dispatcher.providers import factory
from precall.dispatcher.providers.base import PushSender, SmsSender
from precall.dispatcher.render import Renderer
from precall.dispatcher.send_preview import ClaimedPreview, PreviewSender

log = logging.getLogger("precall.dispatcher")

# A due row we could not claim (locked by another dispatcher for a moment) must not spin the loop.
MIN_RECHECK_S = 0.05


def default_worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Dispatcher:
    def __init__(self, config: Config, push: PushSender | None = None, sms: SmsSender | None = None,
                 renderer: Renderer | None = None, shutdown_grace_s: float = 10.0) -> None:
        self.config = config
        # Built here so a missing credential fails before anything starts.
        self.push = push or factory.push_sender(config)
        self.sms = sms or factory.sms_sender(config)
        self.renderer = renderer or Renderer(french_typography=os.environ.get("PRECALL_FR_TYPOGRAPHY") == "1")
        self.worker = config.worker_name or default_worker_name()
        self.shutdown_grace_s = shutdown_grace_s
        self.listening = asyncio.Event()
        self._wake = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event, on_ready: Callable[[], None] | None = None,
                  on_tick: Callable[[], None] | None = None) -> None:
        pool = AsyncConnectionPool(
            self.config.database_url, min_size=self.config.pool_min, max_size=self.config.pool_max,
            # No per-checkout check: it would double the idle query rate. A connection broken by a
            # server restart raises OperationalError once, and the pool discards it.
            kwargs={"autocommit": True}, open=False,
            reconnect_timeout=0,  # keep trying for ever: PostgreSQL restarts must not kill us
        )
        await pool.open(wait=False)
        await self.push.start()
        await self.sms.start()
        sender = PreviewSender(pool, self.push, self.sms, self.renderer, self.config, self.worker)

        def connected() -> None:
            first = not self.listening.is_set()
            self.listening.set()
            self._wake.set()  # catch up on whatever became due while we were not listening
            log.info("listening on precall_due", extra={"worker": self.worker})
            if first and on_ready:
                on_ready()

        listener = asyncio.create_task(
            listen(self.config.database_url, self._wake.set, connected, stop, self.config.poll_interval_s))
        log.info("dispatcher started", extra={"worker": self.worker})
        backoff = 0.2
        try:
            while not stop.is_set():
                if on_tick:
                    on_tick()
                self._wake.clear()
                try:
                    claimed, delay = await self._drain(pool, sender, stop)
                    backoff = 0.2
                except (psycopg.OperationalError, psycopg.errors.AdminShutdown) as exc:
                    log.warning("database unavailable (%s); retrying in %.1fs", str(exc).strip()[:200], backoff)
                    claimed, delay = 0, backoff
                    backoff = min(backoff * 2, 5)
                timeout = self.config.poll_interval_s if delay is None else min(delay, self.config.poll_interval_s)
                if timeout <= 0:
                    timeout = 0 if claimed else MIN_RECHECK_S
                await self._wait(stop, timeout)
        finally:
            await self._shutdown(pool, listener)

    async def _wait(self, stop: asyncio.Event, timeout: float) -> None:
        waiters = [asyncio.create_task(self._wake.wait()), asyncio.create_task(stop.wait())]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    async def _drain(self, pool: AsyncConnectionPool, sender: PreviewSender,
                     stop: asyncio.Event) -> tuple[int, float | None]:
        """Claims and starts everything due; returns (claimed, seconds until the next due row)."""
        total = 0
        while not stop.is_set():
            free = self.config.max_in_flight - len(self._inflight)
            if free <= 0:
                await asyncio.wait(self._inflight, return_when=asyncio.FIRST_COMPLETED)
                continue
            limit = min(self.config.claim_batch, free)
            async with pool.connection() as conn:
                cur = conn.cursor(row_factory=class_row(ClaimedPreview))
                await cur.execute(sql.query("claim_due_previews"), {"worker": self.worker, "limit": limit})
                rows = await cur.fetchall()
                if len(rows) < limit:
                    # Same connection, one checkout: an idle tick costs two statements.
                    nxt = await (await conn.execute(sql.query("seconds_until_next_due"))).fetchone()
            for row in rows:
                task = asyncio.create_task(sender.process(row))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
            total += len(rows)
            if len(rows) < limit:
                return total, None if nxt is None or nxt[0] is None else float(nxt[0])
        return total, None

    async def _shutdown(self, pool: AsyncConnectionPool, listener: asyncio.Task[None]) -> None:
        log.info("dispatcher stopping: no new claims, finishing %d in-flight preview(s)", len(self._inflight),
                 extra={"worker": self.worker})
        if self._inflight:
            _, pending = await asyncio.wait(self._inflight, timeout=self.shutdown_grace_s)
            for task in pending:
                task.cancel()  # their leases expire and another dispatcher takes over
            if pending:
                await asyncio.wait(pending, timeout=1)
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        await self.push.close()
        await self.sms.close()
        await pool.close()
        log.info("dispatcher stopped", extra={"worker": self.worker})
