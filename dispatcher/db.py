"""The dispatcher's connection pool, replaceable after a database outage.

psycopg_pool backs off exponentially while the server is down (1 s, 2 s, 4 s … and gives up
after reconnect_timeout); after a PostgreSQL restart we want to be back at once, so the
dispatcher swaps in a fresh pool when it sees the database again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

CHECKOUT_TIMEOUT_S = 5.0


class Database:
    def __init__(self, dsn: str, min_size: int, max_size: int, application_name: str, options: str = "") -> None:
        self._dsn = dsn
        self._options = options
        self._min = min_size
        self._max = max_size
        self._app = application_name
        self._pool = self._new_pool()
        self._retired: set[asyncio.Task[None]] = set()

    def _new_pool(self) -> AsyncConnectionPool:
        return AsyncConnectionPool(
            self._dsn, min_size=self._min, max_size=self._max, open=False, timeout=CHECKOUT_TIMEOUT_S,
            kwargs={"autocommit": True, "application_name": self._app, "options": self._options},
            reconnect_timeout=3600,
        )

    async def open(self) -> None:
        await self._pool.open(wait=False)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection]:
        async with self._pool.connection() as conn:
            yield conn

    async def reset(self) -> None:
        """A fresh pool for new work; the old one closes once its borrowed connections return."""
        old, self._pool = self._pool, self._new_pool()
        await self._pool.open(wait=False)
        task = asyncio.create_task(old.close(timeout=30))
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)

    async def close(self) -> None:
        await self._pool.close(timeout=5)
        if self._retired:
            await asyncio.wait(self._retired, timeout=5)
