"""The dispatcher loop: sleep until the earliest send_at or call time (or a NOTIFY, or the
backstop poll), claim what is due, send each claimed preview and fire each due call concurrently."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import psycopg
from psycopg.rows import class_row

from precall import retry, sql
from precall.dispatcher.db import Database
from precall.dispatcher.call_hand_off import CallEvent, CallHandOff, DueCall
from precall.config import Config
from precall.errors import ConfigError
from precall.dispatcher.listener import listen
from precall.dispatcher.liveness import Liveness
from precall.dispatcher.metrics import Metrics
from precall.dispatcher.providers import factory
from precall.dispatcher.providers.base import PushSender, SmsSender
from precall.templates.render import Renderer
from precall.dispatcher import experiment_arms, push_targets
from precall.dispatcher.send_preview import ClaimedPreview, PreviewSender
from precall.dispatcher.systemd import SystemdNotifier

log = logging.getLogger("precall.dispatcher")

# A due row we could not claim (locked by another dispatcher for a moment) must not spin the loop.
MIN_RECHECK_S = 0.05
HEARTBEAT_EVERY_S = 15.0
METRICS_REFRESH_S = 5.0  # the database-derived gauges; only while metrics are served
MAX_TASKS_PER_SLOT = 8  # sending or backing off, per PRECALL_MAX_IN_FLIGHT slot
# With every provider paced, claim no more previews than the pacers let out in this long.
PACED_CLAIM_HORIZON_S = 2.0
# How often an awake dispatcher asks whether a gone dispatcher left rows behind (an idle one asks
# at every poll): a dead dispatcher's rows are taken over within about this long.
GONE_CHECK_S = 1.0


def default_worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Dispatcher:
    def __init__(self, config: Config, push: PushSender | None = None, sms: SmsSender | None = None,
                 renderer: Renderer | None = None, shutdown_grace_s: float = 10.0,
                 notifier: SystemdNotifier | None = None) -> None:
        if config.call_webhook_url and not config.webhook_secret:
            raise ConfigError("PRECALL_CALL_WEBHOOK_URL is set but PRECALL_WEBHOOK_SECRET is not: the call webhook is always signed")
        self.config = config
        # Built here so a missing credential fails before anything starts.
        self.push = push or factory.push_sender(config)
        self.sms = sms or factory.sms_sender(config)
        self.renderer = renderer or Renderer.from_env()
        self.worker = config.worker_name or default_worker_name()
        self.shutdown_grace_s = shutdown_grace_s
        self.notifier = notifier or SystemdNotifier()
        self.listening = asyncio.Event()
        self._wake = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()
        self._last_heartbeat = 0.0
        self._last_metrics = 0.0
        self._last_gone_check = 0.0
        self._gone: list[str] = []
        self._events_due = True  # call events to look for: at start, on NOTIFY precall_call_changed, ~1/s
        self._sender: PreviewSender | None = None
        self.metrics = Metrics()
        self.liveness = Liveness(config.database_url, self.worker, config.session_options)
        self._liveness_stop = asyncio.Event()  # set last: our rows stay ours while in-flight sends finish

    async def run(self, stop: asyncio.Event) -> None:
        # No per-checkout connection check: it would double the idle query rate. A connection
        # broken by a server restart raises OperationalError once and is discarded.
        pool = Database(self.config.database_url, self.config.pool_min, self.config.pool_max, "precall-dispatcher",
                        self.config.session_options)
        await pool.open()
        await self.push.start()
        await self.sms.start()
        calls = CallHandOff(pool, self.worker, self.config.call_webhook_url, self.config.webhook_secret)
        await calls.start()
        liveness = asyncio.create_task(self.liveness.run(self._liveness_stop))
        sender = PreviewSender(pool, self.push, self.sms, self.renderer, self.config, self.worker, self.metrics,
                               self.liveness)
        self._sender = sender
        if self.config.metrics_port:
            self.metrics.serve(self.config.metrics_port, self.config.metrics_addr)
            log.info("metrics on http://%s:%d/metrics", self.config.metrics_addr, self.config.metrics_port)

        def connected() -> None:
            first = not self.listening.is_set()
            self.listening.set()
            self._wake.set()  # catch up on whatever became due while we were not listening
            log.info("listening on precall_due", extra={"worker": self.worker})
            if first:
                self.notifier.ready()

        def call_changed() -> None:
            self._events_due = True

        listener = asyncio.create_task(
            listen(self.config.database_url, self._wake.set, connected, stop, self.config.poll_interval_s,
                   call_changed))
        log.info("dispatcher started", extra={"worker": self.worker})
        backoff = retry.RECONNECT.attempts()
        try:
            while not stop.is_set():
                if self.listening.is_set():  # systemd hears READY=1 first
                    self.notifier.watchdog()
                self._wake.clear()
                try:
                    await self._heartbeat(pool)
                    await self._refresh_metrics(pool)
                    claimed, delay = await self._tick(pool, sender, calls, stop)
                    backoff.reset()
                except psycopg.OperationalError as exc:  # PoolTimeout included
                    claimed, delay = 0, backoff.next_delay()
                    log.warning("database unavailable (%s); retrying in %.1fs", str(exc).strip()[:200], delay)
                    # A fresh pool retries at once instead of inheriting the old one's long backoff.
                    await pool.reset()
                except Exception as exc:  # noqa: BLE001 - one bad tick must not end the daemon
                    # E.g. a function an adopted schema broke, a statement timeout, a bug: under
                    # systemd an exit would be a restart loop with no preview for anyone.
                    claimed, delay = 0, backoff.next_delay()
                    log.exception("dispatcher tick failed (%s); retrying in %.1fs", str(exc).strip()[:200], delay)
                if claimed:
                    continue  # look again at once: more may be due
                timeout = self.config.poll_interval_s if delay is None else min(delay, self.config.poll_interval_s)
                await self._wait(stop, max(timeout, MIN_RECHECK_S) if timeout <= 0 else timeout)
        finally:
            self.notifier.stopping()
            await self._shutdown(pool, listener, calls, liveness)

    async def _tick(self, pool: Database, sender: PreviewSender, calls: CallHandOff,
                    stop: asyncio.Event) -> tuple[int, float | None]:
        """One look at the schedule: claims whatever is due; returns (claimed, seconds to the next due)."""
        if not self.liveness.registered.is_set():
            # No claim before the database knows this process: a send would wait for it after its
            # pacer slot (two sends closer than the rate), and its rows would look orphaned.
            return 0, MIN_RECHECK_S
        check_gone = time.monotonic() - self._last_gone_check >= GONE_CHECK_S
        async with pool.connection() as conn:
            if not check_gone:
                row = await (await conn.execute(sql.query("next_due"))).fetchone()
                preview_in, call_in = row if row else (None, None)
            else:
                self._last_gone_check = time.monotonic()
                preview_in, call_in, owners, previews_left, calls_left, events = await (await conn.execute(
                    sql.query("next_due_and_gone"))).fetchone() or (None, None, [], False, False, False)
                self._gone = list(owners or [])  # the claims check these again, and only these
                self._events_due = self._events_due or bool(events)
                if previews_left:
                    preview_in = 0.0
                if calls_left:
                    call_in = 0.0
        claimed = 0
        if preview_in is not None and preview_in <= 0:
            # Rows due within claim_ahead come too: their requests are built now and leave at
            # send_at (PreviewSender waits for it), not a claim round trip after it.
            claimed += await self._claim(pool, "claim_due_previews_v3", ClaimedPreview, sender.process, stop)
        if self._events_due:
            # Events before call jobs: a call's call.rescheduled leaves before its call.due (the
            # claim of a call job also waits while its call has an undelivered event). Claimed
            # when a change was NOTIFYed, or the once-a-second look found some (retries,
            # taken-over leases): an idle dispatcher's query rate stays where it was.
            self._events_due = False
            events = await self._claim(pool, "claim_call_events", CallEvent, calls.deliver, stop)
            self._events_due = events > 0  # more may be waiting behind a full batch or a call's order
            claimed += events
        if call_in is not None and call_in <= 0:
            claimed += await self._claim(pool, "claim_due_calls", DueCall, calls.fire, stop)
        upcoming = [s for s in (preview_in, call_in) if s is not None]
        return claimed, (min(upcoming) if upcoming else None)

    def _free_slots(self) -> int:
        # Tasks backing off between retries hold no provider call: they leave their slot free,
        # within a hard cap on tasks so a long outage cannot grow them without bound.
        busy = len(self._inflight) - (self._sender.backing_off if self._sender else 0)
        return min(self.config.max_in_flight - busy, MAX_TASKS_PER_SLOT * self.config.max_in_flight - len(self._inflight))

    async def _claim(self, pool: Database, query: str, row_type: type, handle: Callable[..., Coroutine[Any, Any, None]],
                     stop: asyncio.Event) -> int:
        while self._free_slots() <= 0 and not stop.is_set():
            # Short timeout: a task starting to back off frees a slot without finishing.
            await asyncio.wait(self._inflight, timeout=0.05, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            return 0
        limit = min(self.config.claim_batch, self._free_slots())
        if row_type is ClaimedPreview and self._sender is not None:
            # Pace before claiming: rows held waiting for a pacer are rows another dispatcher could
            # send now. Bounded only when every channel is paced (the channel is known after the claim).
            limit = min(limit, self._sender.paced_capacity(PACED_CLAIM_HORIZON_S))
            if limit <= 0:
                return 0
        async with pool.connection() as conn:
            cur: psycopg.AsyncCursor[Any] = conn.cursor(row_factory=class_row(row_type))
            await cur.execute(sql.query(query), {"worker": self.worker, "limit": limit, "gone": self._gone})
            rows = await cur.fetchall()
            if row_type is ClaimedPreview and rows:
                rows = await push_targets.attach(conn, rows)
                if self._sender is not None and self._sender.policy.arm_overrides:
                    rows = await experiment_arms.attach(conn, rows)
        started = 0
        for item in rows:
            if isinstance(item, CallEvent):
                # Not held by the liveness session (its lease renewal knows previews and call
                # jobs): a delivery takes seconds against a 60 s lease, after which it is retried.
                row_id = None
            else:
                row_id = item.id if isinstance(item, ClaimedPreview) else item.call_id
            if row_id is not None and not self.liveness.hold(row_id):
                continue  # already in flight here (its lease had run out): one send, not two
            task: asyncio.Task[None] = asyncio.create_task(self._handle(handle, item, row_id))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
            started += 1
        return started

    async def _handle(self, handle: Callable[..., Coroutine[Any, Any, None]], item: Any,
                      row_id: uuid.UUID | None) -> None:
        try:
            await handle(item)
        finally:
            if row_id is not None:
                self.liveness.release(row_id)

    async def _heartbeat(self, pool: Database, stopped: bool = False) -> None:
        now = time.monotonic()
        if not stopped and now - self._last_heartbeat < HEARTBEAT_EVERY_S:
            return
        self._last_heartbeat = now
        async with pool.connection() as conn:
            # The configured rates cap the fleet's capacity that planning smooths bursts to.
            await conn.execute(sql.query("heartbeat"), {"name": self.worker, "hostname": socket.gethostname(),
                                                         "pid": os.getpid(), "stopped": stopped,
                                                         "push_rate": self.config.fcm_rate_per_s,
                                                         "sms_rate": self.config.twilio_rate_per_s})
        if self._sender is not None and not stopped:
            await self._sender.follow_policy()

    async def _refresh_metrics(self, pool: Database) -> None:
        now = time.monotonic()
        if not self.config.metrics_port or now - self._last_metrics < METRICS_REFRESH_S:
            return
        self._last_metrics = now
        async with pool.connection() as conn:
            row = await (await conn.execute(sql.query("metrics_snapshot"))).fetchone()
        if row:
            queued, overdue, fired, avoided = row
            self.metrics.queue_depth.set(queued)
            self.metrics.oldest_overdue.set(overdue)
            self.metrics.fallbacks_last_hour.labels("fired").set(fired)
            self.metrics.fallbacks_last_hour.labels("avoided").set(avoided)

    async def _wait(self, stop: asyncio.Event, timeout: float) -> None:
        waiters = [asyncio.create_task(self._wake.wait()), asyncio.create_task(stop.wait())]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    async def _shutdown(self, pool: Database, listener: asyncio.Task[None], calls: CallHandOff,
                        liveness: asyncio.Task[None]) -> None:
        log.info("dispatcher stopping: no new claims, finishing %d in-flight task(s)", len(self._inflight),
                 extra={"worker": self.worker})
        if self._inflight:
            _, pending = await asyncio.wait(self._inflight, timeout=self.shutdown_grace_s)
            for task in pending:
                task.cancel()  # their leases expire and another dispatcher takes over
            if pending:
                await asyncio.wait(pending, timeout=1)
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        try:
            await asyncio.wait_for(self._heartbeat(pool, stopped=True), 2)
        except Exception:  # noqa: BLE001 - the database may be the reason we stop
            pass
        self._liveness_stop.set()  # after the stopped heartbeat: what is left is free to take at once
        await asyncio.gather(liveness, return_exceptions=True)
        await calls.close()
        await self.push.close()
        await self.sms.close()
        await pool.close()
        self.metrics.close()
        self.notifier.close()
        log.info("dispatcher stopped", extra={"worker": self.worker})
