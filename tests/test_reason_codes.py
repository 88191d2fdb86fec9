"""reason_code: the machine-readable reason beside the human one, kept by the database."""

from __future__ import annotations

import psycopg

from precall import sql
from precall.sql import migrate

REASONS = {
    "too_late: planned 00:00:20 before the call, cut-off is 00:00:30": "too_late",
    "in_past: the call at 2026-12-03 was 00:10:00 ago when it was planned": "in_past",
    "call_cancelled": "call_cancelled",
    "receipt_arrived: push delivered at 2026-12-03 08:00": "receipt_arrived",
    "twilio_undelivered: 30005; sms_opted_out set": "twilio_undelivered",
    "token_dead: UNREGISTERED; push_enabled set to false": "token_dead",
    "Something a DBA typed": "other",
}


def test_every_reason_gets_its_code_on_insert_and_update(conn, make) -> None:
    uid = make.user()
    call = make.call(uid, in_seconds=3600)
    for reason, code in REASONS.items():
        nid = conn.execute("INSERT INTO notification_logs (user_id, call_id, type, status, reason)"
                           " VALUES (%s, %s, 'preview_push', 'skipped', %s) RETURNING id", (uid, call, reason)).fetchone()[0]
        assert conn.execute("SELECT reason_code FROM notification_logs WHERE id = %s", (nid,)).fetchone() == (code,)
    conn.execute("UPDATE notification_logs SET reason = 'rescheduled: call moved' WHERE id = %s", (nid,))
    assert conn.execute("SELECT reason_code FROM notification_logs WHERE id = %s", (nid,)).fetchone() == ("rescheduled",)
    conn.execute("UPDATE notification_logs SET reason = NULL WHERE id = %s", (nid,))
    assert conn.execute("SELECT reason_code FROM notification_logs WHERE id = %s", (nid,)).fetchone() == (None,)


def test_planning_and_cancelling_write_codes(conn, make) -> None:
    uid = make.user(fcm_token="tok-" + "r" * 40, push_enabled=True)
    close = make.call(uid, in_seconds=10)
    later = make.call(uid, in_seconds=120)
    conn.execute("UPDATE scheduled_calls SET status = 'cancelled' WHERE id = %s", (later,))
    got = dict(conn.execute("SELECT call_id::text, reason_code FROM notification_logs WHERE call_id IN (%s, %s)",
                            (close, later)).fetchall())
    assert got == {close: "too_late", later: "call_cancelled"}
    assert conn.execute("SELECT reason_code FROM precall.call_jobs WHERE call_id = %s", (later,)).fetchone() == (
        "call_cancelled",)


def test_rows_written_before_the_column_existed_are_backfilled(empty_db, monkeypatch) -> None:
    every = sql.migrations()
    with monkeypatch.context() as m:
        m.setattr(sql, "migrations", lambda: [x for x in every if x.version < 15])
        m.setattr(sql, "repeatables", lambda: [])
        migrate.migrate(empty_db)
    with psycopg.connect(empty_db, autocommit=True) as c:
        uid = c.execute("INSERT INTO users DEFAULT VALUES RETURNING id").fetchone()[0]
        c.execute("ALTER TABLE scheduled_calls DISABLE TRIGGER USER")
        call = c.execute("INSERT INTO scheduled_calls (user_id, scheduled_at) VALUES (%s, now() + interval '1 day')"
                         " RETURNING id", (uid,)).fetchone()[0]
        c.execute("ALTER TABLE scheduled_calls ENABLE TRIGGER USER")
        c.execute("INSERT INTO notification_logs (user_id, call_id, type, status, reason) VALUES"
                  " (%s, %s, 'preview_push', 'cancelled', 'receipt_arrived: x'), (%s, %s, 'preview_push', 'skipped', NULL)",
                  (uid, call, uid, call))
    migrate.migrate(empty_db)
    with psycopg.connect(empty_db) as c:
        assert sorted(c.execute("SELECT coalesce(reason_code, '-') FROM notification_logs").fetchall()) == [
            ("-",), ("receipt_arrived",)]

