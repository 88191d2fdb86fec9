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
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg

from precall import sql
from precall.dispatcher.db import Database

log = logging.getLogger("precall.dispatcher")
T = TypeVar("T")

MAX_BATCH = 500
# How long a write-back is retried while PostgreSQL is unreachable (well inside the lease): the
# provider has already answered, so giving up would misreport it or, after the lease, send again.
WRITE_BACK_RETRY_S = 30.0


async def with_retry(write: Callable[[], Awaitable[T]], what: str) -> T:
    """Runs `write()` again while the database is away (a restart), for up to WRITE_BACK_RETRY_S."""
    delay, waited = 0.2, 0.0
    while True:
        try:
            return await write()
        except psycopg.OperationalError as exc:  # also a deadlock (TransactionRollbackError)
            if waited >= WRITE_BACK_RETRY_S:
                raise
            log.warning("%s failed (%s); retrying in %.1fs", what, str(exc).strip()[:120], delay)
            await asyncio.sleep(delay)
            waited += delay
            delay = min(delay * 2, 5.0)


def _settle(batch: list[tuple[dict[str, Any], asyncio.Future[None]]], exc: BaseException | None) -> None:
    for _, done in batch:
        if done.done():
            continue
        if exc is None:
            done.set_result(None)
        else:
            done.set_exception(exc)


class SentWriter:
    """Batches `record_sent_batch` (queries.sql); `record()` returns once this row is written."""

    def __init__(self, pool: Database) -> None:
        self._pool = pool
        self._pending: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._writing: asyncio.Task[None] | None = None

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
                    await with_retry(lambda: self._write([p for p, _ in batch]), "write-back")
                except psycopg.Error as exc:
                    if len(batch) == 1 or isinstance(exc, psycopg.OperationalError):
                        _settle(batch, exc)
                        continue
                    # One row the database refuses must not fail its neighbours: one by one.
                    log.warning("batched write-back refused (%s); writing %d rows one by one", exc, len(batch))
                    for item in batch:
                        try:
                            await self._write([item[0]])
                        except Exception as one_exc:  # noqa: BLE001 - that sender records it
                            _settle([item], one_exc)
                        else:
                            _settle([item], None)
                except Exception as exc:  # noqa: BLE001 - handed to each sender, who records it
                    _settle(batch, exc)
                else:
                    _settle(batch, None)
        finally:
            self._writing = None

    async def _write(self, rows: list[dict[str, Any]]) -> None:
        # UUIDs, datetimes and Decimals as their str(): what jsonb_to_recordset's columns parse.
        payload = json.dumps(rows, default=str)
        async with self._pool.connection() as conn:
            await conn.execute(sql.query("record_sent_batch"), {"rows": payload})
