"""Outcomes written back in batches (dispatcher/write_back.py): every row, once, in few statements."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timezone

import psycopg
from psycopg import AsyncConnection

from precall.dispatcher.db import Database
from precall.dispatcher.write_back import SentWriter


class CountingDatabase(Database):
    def __init__(self, dsn: str) -> None:
        super().__init__(dsn, 1, 4, "test-write-back")
        self.checkouts = 0

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection]:
        self.checkouts += 1
        async with super().connection() as conn:
            yield conn


def test_two_hundred_outcomes_arriving_together_take_a_few_statements(db: str, conn: psycopg.Connection, make) -> None:
    for i in range(201):
        make.call(make.user(fcm_token=f"tok-{i}"), in_seconds=240)
    conn.execute("UPDATE notification_logs SET status = 'sending', lease_owner = 'w1', lease_expires_at = now() + interval '1 minute'")
    ids = [r[0] for r in conn.execute("SELECT id FROM notification_logs ORDER BY id")]
    assert len(ids) == 201
    # The last one's lease was taken over by another dispatcher: its outcome must not land.
    conn.execute("UPDATE notification_logs SET lease_owner = 'w2' WHERE id = %s", (ids[-1],))

    async def run() -> int:
        pool = CountingDatabase(db)
        await pool.open()
        writer = SentWriter(pool)
        now = datetime.now(timezone.utc)
        await asyncio.gather(*(writer.record({
            "id": nid, "worker": "w1", "type": "preview_push", "channel": "push", "title": "Coach", "body": f"body {n}",
            "provider_id": f"projects/p/messages/{n}", "reason": None, "attempted_at": now, "sent_at": now,
            "sms_encoding": None, "sms_segments": None, "cost": None, "currency": None,
        }) for n, nid in enumerate(ids)))
        await pool.close()
        return pool.checkouts

    checkouts = asyncio.run(run())
    assert checkouts <= 3, checkouts  # the first alone, the rest together (500 per statement at most)
    rows = conn.execute("SELECT status, count(*), count(DISTINCT provider_id) FROM notification_logs GROUP BY status ORDER BY status").fetchall()
    assert rows == [("sending", 1, 0), ("sent", 200, 200)], rows
    body = conn.execute("SELECT body FROM notification_logs WHERE provider_id = 'projects/p/messages/7'").fetchone()
    assert body == ("body 7",)  # each row got its own outcome, not a neighbour's
    calls = conn.execute("SELECT count(*) FILTER (WHERE preview_sent), count(*) FROM scheduled_calls").fetchone()
    assert calls == (200, 201)


def test_a_row_the_database_refuses_does_not_fail_the_rest_of_its_batch(db: str, conn: psycopg.Connection, make) -> None:
    for i in range(3):
        make.call(make.user(fcm_token=f"tok-{i}"), in_seconds=240)
    conn.execute("UPDATE notification_logs SET status = 'sending', lease_owner = 'w1', lease_expires_at = now() + interval '1 minute'")
    ids = [r[0] for r in conn.execute("SELECT id FROM notification_logs ORDER BY id")]

    async def run() -> list[object]:
        pool = Database(db, 1, 2, "test-write-back")
        await pool.open()
        writer = SentWriter(pool)
        now = datetime.now(timezone.utc)
        results = await asyncio.gather(*(writer.record({
            "id": nid, "worker": "w1", "type": "preview_push", "channel": "push", "title": "Coach",
            # PostgreSQL text cannot hold NUL: this row is refused whatever the batch.
            "body": "bad \x00 body" if n == 1 else "fine", "provider_id": f"projects/p/messages/{n}", "reason": None,
            "attempted_at": now, "sent_at": now, "sms_encoding": None, "sms_segments": None, "cost": None, "currency": None,
        }) for n, nid in enumerate(ids)), return_exceptions=True)
        await pool.close()
        return results

    results = asyncio.run(run())
    assert results[0] is None and results[2] is None, results
    assert isinstance(results[1], psycopg.Error), results
    assert conn.execute("SELECT id, status FROM notification_logs ORDER BY id").fetchall() == [
        (ids[0], "sent"), (ids[1], "sending"), (ids[2], "sent")]
