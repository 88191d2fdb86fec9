"""The dispatcher's life as the database sees it, and the leases it holds.

One dedicated connection registers this process (precall.register_session): its backend is the
process's pulse. When the process dies, PostgreSQL ends that session at once and any other
dispatcher takes the rows it held (precall.dispatcher_gone) instead of waiting out the lease.

On the same connection, every third of the lease, the leases of every row this process holds are
renewed (precall.renew_leases), so a row waiting for a pacer or a slow provider never expires
under a live sender. A row missing from the renewal's answer was taken over (the process looked
dead: its session dropped, or it hung past the lease); it is dropped here, and the sender checks
`still_ours()` before calling a provider, so it is never sent twice from two places. The only
double-send window left is a provider call already under way at that moment.

Through a transaction-pooling proxy (PgBouncer) the registered backend is a pooled server
connection that outlives the process: death is then seen only when the lease runs out (safe,
not fast). Connect dispatchers to PostgreSQL directly or through session pooling.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from datetime import timedelta

import psycopg

from precall import retry, sql

log = logging.getLogger("precall.dispatcher")

# Until the database has told us the lease (precall.settings.lease), renew this often.
DEFAULT_RENEW_S = 5.0


class Liveness:
    def __init__(self, dsn: str, worker: str, options: str = "") -> None:
        self._dsn = dsn
        self._options = options
        self._worker = worker
        self._held: set[uuid.UUID] = set()
        self._registered = asyncio.Event()
        self._renew_s = DEFAULT_RENEW_S
        self._first = True

    # -- rows ------------------------------------------------------------------------------------

    def hold(self, row_id: uuid.UUID) -> bool:
        """Marks a claimed row as held; False when this process holds it already (a claim that
        took back our own row in flight must not start a second send)."""
        if row_id in self._held:
            return False
        self._held.add(row_id)
        return True

    def release(self, row_id: uuid.UUID) -> None:
        self._held.discard(row_id)

    async def still_ours(self, row_id: uuid.UUID) -> bool:
        """True when the row may be sent now: our session is registered (so nobody takes our rows
        as a dead dispatcher's) and the row was not taken over meanwhile."""
        if not self._registered.is_set():
            await self._registered.wait()
        return row_id in self._held

    @property
    def registered(self) -> asyncio.Event:
        return self._registered

    # -- the connection --------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Keeps the session registered and the leases renewed until `stop`."""
        backoff = retry.RECONNECT.attempts()
        while not stop.is_set():
            try:
                conn = await psycopg.AsyncConnection.connect(self._dsn, autocommit=True, options=self._options,
                                                             application_name="precall-liveness")
            except psycopg.OperationalError as exc:
                delay = backoff.next_delay()
                log.warning("liveness connection failed (%s); retrying in %.1fs", _line(exc), delay)
                await _sleep_or_stop(stop, delay)
                continue
            try:
                async with conn:
                    await self._register(conn)
                    backoff.reset()
                    while not stop.is_set():
                        await _sleep_or_stop(stop, self._renew_s)
                        if stop.is_set():
                            break
                        await self._renew(conn)
            except psycopg.Error as exc:
                self._registered.clear()
                log.warning("liveness connection lost (%s); reconnecting", _line(exc))
                await _sleep_or_stop(stop, backoff.next_delay())
        self._registered.clear()

    async def _register(self, conn: psycopg.AsyncConnection) -> None:
        row = await (await conn.execute(
            sql.query("register_session"),
            {"worker": self._worker, "hostname": socket.gethostname(), "pid": os.getpid(),
             "new_process": self._first})).fetchone()
        self._first = False
        lease = row[0] if row else None
        if isinstance(lease, timedelta) and lease.total_seconds() > 0:
            self._renew_s = max(0.5, lease.total_seconds() / 3)
        # Back from a lost session: keep only what is still ours before anyone may send.
        await self._renew(conn)
        self._registered.set()
        log.info("session registered; renewing leases every %.1fs", self._renew_s, extra={"worker": self._worker})

    async def _renew(self, conn: psycopg.AsyncConnection) -> None:
        asked = list(self._held)
        if not asked:
            return
        cur = await conn.execute(sql.query("renew_leases"), {"worker": self._worker, "ids": asked})
        kept = {r[0] for r in await cur.fetchall()}
        lost = [i for i in asked if i not in kept]
        for row_id in lost:
            # Finished meanwhile (released) or taken over: either way, not ours to send.
            if row_id in self._held:
                self._held.discard(row_id)
                log.warning("lease lost: another dispatcher took the row over; not sending it here",
                            extra={"worker": self._worker, "notification_id": str(row_id)})


def _line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[-1] if text else type(exc).__name__


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except asyncio.TimeoutError:
        pass
