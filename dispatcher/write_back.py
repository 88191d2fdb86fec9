"""Writes successful sends back in batches: one statement for every outcome that arrived meanwhile.

One UPDATE per send cost a pool checkout, a round trip and a commit each; under a burst that was
most of the dispatcher's database time (bench/throughput.py). Outcomes are grouped like a group
commit: the first one is written at once, and those arriving while it is in flight go together in
the next statement, so an idle dispatcher adds no delay and a busy one writes hundreds per
statement. Each sender still waits for its own row to be written before it moves on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import psycopg
import psycopg.errors

from precall import retry, sql
from precall.dispatcher.db import Database

log = logging.getLogger("precall.dispatcher")
T = TypeVar("T")

MAX_BATCH = 500
# How long a write-back is retried while PostgreSQL is unreachable (well inside the lease): the
# provider has already answered, so giving up would misreport it or, after the lease, send again.
WRITE_BACK_RETRY_S = 30.0


# A row a DBA holds locked: each attempt waits lock_timeout (2 s), then tries again. The row stays
# ours meanwhile (liveness renews its lease), so waiting longer than an outage costs nothing.
LOCKED_RETRY_S = 300.0


def blocked(exc: BaseException) -> bool:
    """A lock_timeout or statement_timeout: this row's write waits on someone, the database is up."""
    return isinstance(exc, (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled))


async def with_retry(write: Callable[[], Awaitable[T]], what: str, *, retry_blocked: bool = True,
                     ids: Mapping[str, object] | None = None) -> T:
    """Runs `write()` again while the database is away (a restart), for up to WRITE_BACK_RETRY_S,
    and while its rows are locked by another transaction, for up to LOCKED_RETRY_S."""
    backoff, waited = retry.RECONNECT.attempts(), 0.0
    while True:
        try:
            return await write()
        except psycopg.OperationalError as exc:  # also a deadlock (TransactionRollbackError)
            if blocked(exc) and not retry_blocked:
                raise
            if waited >= (LOCKED_RETRY_S if blocked(exc) else WRITE_BACK_RETRY_S):
                raise
            delay = backoff.next_delay()
            log.warning("%s failed (%s); retrying in %.1fs", what, str(exc).strip()[:120], delay, extra=dict(ids or {}))
            await asyncio.sleep(delay)
            waited += delay


def _settle(batch: list[tuple[dict[str, Any], asyncio.Future[None]]], exc: BaseException | None) -> None:
    for _, done in batch:
        if done.done():
            continue
        if exc is None:
            done.set_result(None)
        else:
            done.set_exception(exc)


class SentWriter:
    """Batches `record_sent_batch` (sql/queries/dispatcher.sql); `record()` returns once this row is written."""

    def __init__(self, pool: Database) -> None:
        self._pool = pool
        self._pending: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._writing: asyncio.Task[None] | None = None
        self._alone: set[asyncio.Task[None]] = set()

    async def record(self, params: dict[str, Any]) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((params, done))
        if self._writing is None:
            self._writing = asyncio.create_task(self._drain())
        await asyncio.shield(done)  # a cancelled sender must not cancel the others' write

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                try:
                    await with_retry(lambda: self._write([p for p, _ in batch]), "write-back", retry_blocked=False)
                except psycopg.Error as exc:
                    if (isinstance(exc, psycopg.OperationalError) or len(batch) == 1) and not blocked(exc):
                        _settle(batch, exc)
                        continue
                    # One row the database refuses, or one a DBA holds locked, must not fail or
                    # hold its neighbours, nor the rows written after them: each row on its own,
                    # in the background (a locked one keeps retrying while the others are written).
                    log.warning("write-back of %d row(s) refused (%s); writing each on its own", len(batch),
                                str(exc).strip()[:120])
                    for item in batch:
                        task = asyncio.create_task(self._write_one(item))
                        self._alone.add(task)
                        task.add_done_callback(self._alone.discard)
                except Exception as exc:  # noqa: BLE001 - handed to each sender, who records it
                    _settle(batch, exc)
                else:
                    _settle(batch, None)
        finally:
            self._writing = None

    async def _write_one(self, item: tuple[dict[str, Any], asyncio.Future[None]]) -> None:
        try:
            await with_retry(lambda: self._write([item[0]]), "write-back",
                             ids={"notification_id": str(item[0].get("id"))})
        except Exception as exc:  # noqa: BLE001 - that sender records it
            _settle([item], exc)
        else:
            _settle([item], None)

    async def _write(self, rows: list[dict[str, Any]]) -> None:
        # UUIDs, datetimes and Decimals as their str(): what jsonb_to_recordset's columns parse.
        payload = json.dumps(rows, default=str)
        async with self._pool.connection() as conn:
            await conn.execute(sql.query("record_sent_batch"), {"rows": payload})


@dataclass(frozen=True)
class SendPolicy:
    """What a sender follows from precall.settings, re-read with every heartbeat."""

    fallback_wait_s: float = 30.0
    push_enabled: bool = True
    sms_enabled: bool = True
    sms_budget_set: bool = False
    snooze_minutes: int = 10  # what the SMS hint and the push's snooze button say
    arm_overrides: bool = False  # a running experiment arm sets a channel or a variant


class OutcomeStore(Protocol):
    """Where a sender's outcomes go (the port): PostgreSQL in production (DatabaseOutcomes), a
    list in the unit tests of PreviewSender."""

    async def sent(self, row: dict[str, Any]) -> None:
        """A send the provider accepted (one object of precall.record_sent_batch's JSON)."""

    async def unsent(self, params: dict[str, Any]) -> uuid.UUID | None:
        """A preview that will not be sent (precall.record_unsent); the fallback SMS row's id when one is created."""

    async def deliveries(self, notification_id: uuid.UUID, worker: str, rows: list[dict[str, Any]]) -> int | None:
        """Per-device outcomes of a push no device took (precall.record_push_deliveries): dead
        tokens disable their device. Returns the devices the user has left (None: not our row)."""

    async def opt_out_sms(self, user_id: uuid.UUID, phone: str) -> None: ...

    async def renew_lease(self, notification_id: uuid.UUID, worker: str) -> None: ...

    async def policy(self) -> SendPolicy | None:
        """The fleet's policy from precall.settings."""

    async def sms_budget_reached(self, currency: str) -> bool:
        """Today's SMS spend in this currency has reached precall.settings.sms_daily_budget."""

    async def start_attempt(self, notification_id: uuid.UUID, worker: str) -> bool:
        """Right before the first provider call: marks the row attempted (precall.start_attempts);
        False when it was cancelled or taken over since its claim (then nothing is sent)."""


class AttemptMarks:
    """precall.start_attempts for the rows reaching their instant together: rows whose timers fire
    in the same event-loop turn (a backlog, rows planned for one instant) share one statement."""

    def __init__(self, pool: Database) -> None:
        self._pool = pool
        self._pending: dict[str, list[tuple[uuid.UUID, asyncio.Future[bool]]]] = {}
        self._flushes: set[asyncio.Task[None]] = set()  # held: the loop keeps only weak references

    async def mark(self, notification_id: uuid.UUID, worker: str) -> bool:
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        batch = self._pending.setdefault(worker, [])
        batch.append((notification_id, future))
        if len(batch) == 1:
            task = asyncio.get_running_loop().create_task(self._flush(worker))
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)
        return await future

    async def _flush(self, worker: str) -> None:
        batch: list[tuple[uuid.UUID, asyncio.Future[bool]]] = []
        try:
            await asyncio.sleep(0)  # the other rows whose timers fired in this turn join the batch
            batch = self._pending.pop(worker, [])
            ids = [nid for nid, _ in batch]

            async def run() -> set[uuid.UUID]:
                async with self._pool.connection() as conn:
                    cur = await conn.execute(sql.query("start_attempts"), {"worker": worker, "ids": ids})
                    return {r[0] for r in await cur.fetchall()}
            marked = await with_retry(run, "start_attempts")
        except asyncio.CancelledError:
            for _, future in batch or self._pending.pop(worker, []):
                future.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - each waiting sender fails its own row with it
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for nid, future in batch:
            if not future.done():
                future.set_result(nid in marked)


class DatabaseOutcomes:
    """The outcome store in PostgreSQL: sends batched (SentWriter), every other write retried while
    the database is away, so an outcome the provider gave is never lost to a restart."""

    def __init__(self, pool: Database) -> None:
        self._pool = pool
        self._sent = SentWriter(pool)
        self._attempts = AttemptMarks(pool)

    async def start_attempt(self, notification_id: uuid.UUID, worker: str) -> bool:
        return await self._attempts.mark(notification_id, worker)

    async def _exec(self, name: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(sql.query(name), params)
            return await cur.fetchall() if cur.description else []

    async def _record(self, name: str, params: dict[str, Any], **ids: object) -> list[tuple[Any, ...]]:
        return await with_retry(lambda: self._exec(name, params), f"write-back ({name})",
                                ids={k: str(v) for k, v in ids.items() if v is not None})

    async def sent(self, row: dict[str, Any]) -> None:
        await self._sent.record(row)

    async def unsent(self, params: dict[str, Any]) -> uuid.UUID | None:
        rows = await self._record("record_unsent", params, notification_id=params.get("id"))
        return rows[0][0] if rows and rows[0][0] is not None else None

    async def deliveries(self, notification_id: uuid.UUID, worker: str, rows: list[dict[str, Any]]) -> int | None:
        result = await self._record("record_push_deliveries",
                                    {"id": notification_id, "worker": worker, "rows": json.dumps(rows, default=str)},
                                    notification_id=notification_id)
        return result[0][0] if result else None

    async def opt_out_sms(self, user_id: uuid.UUID, phone: str) -> None:
        await self._record("opt_out_sms", {"user_id": user_id, "phone": phone}, user_id=user_id)

    async def renew_lease(self, notification_id: uuid.UUID, worker: str) -> None:
        await self._exec("renew_lease", {"id": notification_id, "worker": worker})

    async def policy(self) -> SendPolicy | None:
        rows = await self._exec("schedule_policy", {})
        if not rows:
            return None
        wait, push_on, sms_on, budget_set, snooze, arm_overrides = rows[0]
        return SendPolicy(float(wait), bool(push_on), bool(sms_on), bool(budget_set), int(snooze), bool(arm_overrides))

    async def sms_budget_reached(self, currency: str) -> bool:
        rows = await self._exec("sms_budget_reached", {"currency": currency})
        return bool(rows and rows[0][0])
