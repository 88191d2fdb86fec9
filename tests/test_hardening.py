"""Rows and locks the dispatcher meets at production: a DBA's held lock, rows the database used to
let through, and inputs that must not reach a message."""

from __future__ import annotations

import os
from datetime import timedelta

import psycopg
import psycopg.errors
import pytest

from plugins.processes import precall_cli, wait_until


def status_of(conn, call_id: str) -> str:
    return conn.execute("SELECT status FROM notification_logs WHERE call_id = %s AND type = 'preview_push'",
                        (call_id,)).fetchone()[0]


def test_a_call_row_a_dba_holds_locked_holds_back_nobody_else(db, conn, make, fake_fcm, start_dispatcher) -> None:
    """A DBA holds call A's row (FOR UPDATE, transaction left open). A's and B's previews leave at
    the same instant; B's is written back as sent within seconds while A's waits for the lock
    (the write-back used to wait behind A's forever), and A's is written once the lock goes."""
    start_dispatcher()
    ua = make.user(fcm_token="tok-locked-" + "a" * 30, push_enabled=True, notification_lead_min=1)
    ub = make.user(fcm_token="tok-free-" + "b" * 30, push_enabled=True, notification_lead_min=1)
    a = make.call(ua, in_seconds=63)
    b = make.call(ub, in_seconds=63)
    with psycopg.connect(db) as dba:
        dba.execute("SELECT 1 FROM scheduled_calls WHERE id = %s FOR UPDATE", (a,))
        wait_until(lambda: len(fake_fcm.state.accepted()) == 2, timeout=15)
        wait_until(lambda: status_of(conn, b) == "sent", timeout=6)
        assert status_of(conn, a) == "sending"
        dba.rollback()
    wait_until(lambda: status_of(conn, a) == "sent", timeout=20)
    assert sorted(r.message["token"][:9] for r in fake_fcm.state.accepted()) == ["tok-free-", "tok-locke"]


# --- rows the database refuses ------------------------------------------------------------------

def test_a_sent_row_needs_a_channel(conn, make) -> None:
    uid = make.user()
    call = make.call(uid, in_seconds=3600)
    with pytest.raises(psycopg.errors.CheckViolation, match="notification_logs_channel_when_sent"):
        conn.execute("INSERT INTO notification_logs (user_id, call_id, type, status) VALUES (%s, %s, 'preview_push', 'sent')",
                     (uid, call))
    # A preview that found no channel still leaves its skipped row.
    conn.execute("INSERT INTO notification_logs (user_id, call_id, type, status) VALUES (%s, %s, 'preview_push', 'skipped')",
                 (uid, call))


def test_an_unknown_time_zone_is_refused_and_calls_list_keeps_working(db, conn, make) -> None:
    uid = make.user(timezone="Europe/Paris")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="users.timezone 'Mars/Olympus' is not a time zone"):
        conn.execute("UPDATE users SET timezone = 'Mars/Olympus' WHERE id = %s", (uid,))
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        make.user(timezone="Mars/Olympus")
    make.call(uid, in_seconds=7200)
    out = precall_cli("calls", "list", env={**os.environ, "DATABASE_URL": db}, timeout=60)
    assert out.returncode == 0 and "Europe/Paris" in out.stdout, out.stderr


def _adopt(empty_db: str, setup: str) -> str:
    from precall.sql import migrate
    from precall.errors import MigrationError

    with psycopg.connect(empty_db, autocommit=True) as c:
        c.execute(setup.encode())
    try:
        migrate.migrate(empty_db)
    except (MigrationError, psycopg.Error) as exc:
        return str(exc)
    raise AssertionError("adopted tables precall cannot keep")


def test_adoption_refuses_unknown_time_zones_in_one_line(empty_db) -> None:
    message = _adopt(empty_db, """
        CREATE TABLE users (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), timezone text);
        INSERT INTO users (timezone) VALUES ('Mars/Olympus'), ('Mars/Olympus'), ('CEST+x'), ('Europe/Paris'), (NULL);
    """)
    assert "users.timezone is not a time zone in 3 row(s): 'CEST+x', 'Mars/Olympus'" in message
    assert "\n" not in message.split("HINT")[0].strip()


def test_adoption_refuses_a_lead_outside_1_to_60_naming_the_rows(empty_db) -> None:
    message = _adopt(empty_db, """
        CREATE TABLE users (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), notification_lead_min integer);
        INSERT INTO users (id, notification_lead_min) VALUES
            ('00000000-0000-0000-0000-000000000001', 1000000000), ('00000000-0000-0000-0000-000000000002', 5);
    """)
    assert ("users.notification_lead_min is outside 1..60 in 1 row(s): 00000000-0000-0000-0000-000000000001 (1000000000)"
            in message)


def test_the_lead_rule_holds_for_every_row_after_migration(conn) -> None:
    assert conn.execute("SELECT convalidated FROM pg_constraint WHERE conname = 'users_notification_lead_min'"
                        ).fetchone() == (True,)


# --- times from outside -------------------------------------------------------------------------

def test_twilio_delivery_times_are_kept_between_the_send_and_now(conn, make) -> None:
    uid = make.user()
    rows = {}
    for n, done_at in enumerate(("2025-01-01T00:00:00Z", "9999-01-01T00:00:00Z", None)):
        call = make.call(uid, in_seconds=3600 + n)
        sid = f"SM{n:032x}"
        rows[done_at] = conn.execute(
            "INSERT INTO notification_logs (user_id, call_id, type, channel, status, provider_id, attempted_at, sent_at)"
            " VALUES (%s, %s, 'preview_sms', 'sms', 'sent', %s, now() - interval '10 s', now() - interval '9 s')"
            " RETURNING id", (uid, call, sid)).fetchone()[0]
        conn.execute("SELECT precall.record_sms_status(%s, 'delivered', NULL, %s)", (sid, done_at))
    got = {k: conn.execute("SELECT delivered_at - attempted_at, clock_timestamp() - delivered_at FROM notification_logs"
                           " WHERE id = %s", (v,)).fetchone() for k, v in rows.items()}
    assert got["2025-01-01T00:00:00Z"][0] == timedelta(0)  # not before the send
    assert timedelta(0) <= got["9999-01-01T00:00:00Z"][1] < timedelta(seconds=5)  # not after now
    assert timedelta(seconds=9) < got[None][0] and got[None][1] < timedelta(seconds=5)


def test_a_call_inserted_in_the_past_or_inside_the_cut_off_leaves_a_skipped_row(conn, make) -> None:
    uid = make.user(fcm_token="tok-" + "p" * 40, push_enabled=True)
    past = make.call(uid, in_seconds=-600)
    close = make.call(uid, in_seconds=10)
    [p] = make.previews(past)
    [c] = make.previews(close)
    assert p["status"] == "skipped" and p["reason"].startswith("in_past: "), p["reason"]
    assert c["status"] == "skipped" and c["reason"].startswith("too_late: "), c["reason"]
    jobs = dict(conn.execute("SELECT call_id::text, status FROM precall.call_jobs WHERE call_id IN (%s, %s)",
                             (past, close)).fetchall())
    assert jobs == {close: "queued"}  # the call inside the cut-off still happens; the past one does not
    # Moving a call into the past says so too.
    later = make.call(uid, in_seconds=3 * 3600)
    conn.execute("UPDATE scheduled_calls SET scheduled_at = now() - interval '1 minute' WHERE id = %s", (later,))
    assert [(r["status"], r["reason"][:8]) for r in make.previews(later)] == [("skipped", "in_past:")]
