"""Races the database settles: one push token per user, Twilio callbacks that beat the SID's
write-back, preview_sent per planned time, and call jobs that are too old to hand off."""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import httpx
import psycopg

from plugins.processes import user_token, wait_until
from precall import sql

TOKEN_LEN = 40


def test_one_token_one_user_under_concurrent_registrations(db, make) -> None:
    """Two users register the same new token at once, 200 times: both calls succeed, and
    afterwards exactly one of them holds it (it used to be both, ~5% of rounds)."""
    a, b = make.user(), make.user()
    conns = [psycopg.connect(db, autocommit=True) for _ in range(2)]
    try:
        for round_ in range(200):
            token = f"race-{round_:04d}-" + "x" * TOKEN_LEN
            barrier = threading.Barrier(2)
            results: dict[str, object] = {}

            def register(conn: psycopg.Connection, user: str) -> None:
                barrier.wait()
                try:
                    results[user] = conn.execute("SELECT precall.register_device(%s, %s, 'ios', true)",
                                                 (user, token)).fetchone()[0]
                except psycopg.Error as exc:  # pragma: no cover - what the old code could not do
                    results[user] = exc

            threads = [threading.Thread(target=register, args=(c, u)) for c, u in zip(conns, (a, b))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert results == {a: True, b: True}, results
            holders = conns[0].execute("SELECT count(*) FROM users WHERE fcm_token = %s", (token,)).fetchone()
            assert holders == (1,), f"round {round_}: {holders[0]} users hold one token"
    finally:
        for c in conns:
            c.close()


def test_writing_a_token_directly_moves_it(conn, make) -> None:
    """The app's own code or a DBA writing users.fcm_token: the previous holder loses it."""
    a = make.user(fcm_token="shared-token-" + "y" * TOKEN_LEN, push_enabled=True)
    b = make.user()
    conn.execute("UPDATE users SET fcm_token = %s, push_enabled = true WHERE id = %s",
                 ("shared-token-" + "y" * TOKEN_LEN, b))
    got = dict(conn.execute("SELECT id::text, fcm_token IS NOT NULL AND push_enabled FROM users"
                            " WHERE id IN (%s, %s)", (a, b)).fetchall())
    assert got == {a: False, b: True}


def test_migration_refuses_tokens_already_shared(empty_db) -> None:
    from precall.sql import migrate
    from precall.errors import MigrationError

    with psycopg.connect(empty_db, autocommit=True) as c:
        c.execute("CREATE TABLE users (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), fcm_token text)")
        c.execute("INSERT INTO users (fcm_token) VALUES ('dup'), ('dup'), ('solo')")
    try:
        migrate.migrate(empty_db)
    except (MigrationError, psycopg.Error) as exc:
        assert "users.fcm_token: 1 token(s) are held by more than one user" in str(exc)
    else:
        raise AssertionError("migrated a table whose tokens are shared")


# --- Twilio callbacks racing the SID's write-back -------------------------------------------------

SID = "SM" + "7" * 32


def sending_sms(conn, make) -> str:
    uid = make.user()
    call = make.call(uid, in_seconds=3600)
    return str(conn.execute(
        "INSERT INTO notification_logs (user_id, call_id, type, channel, status, send_at, planned_for,"
        " lease_owner, lease_expires_at, attempts) SELECT %s, id, 'preview_sms', 'sms', 'sending', now(),"
        " scheduled_at, 'w1', now() + interval '1 minute', 1 FROM scheduled_calls WHERE id = %s RETURNING id",
        (uid, call)).fetchone()[0])


def write_back(conn, nid: str) -> None:
    now = datetime.now(timezone.utc).isoformat()
    conn.execute(sql.query("record_sent_batch"), {"rows": json.dumps([{
        "id": nid, "worker": "w1", "type": "preview_sms", "channel": "sms", "title": None, "body": "b",
        "provider_id": SID, "reason": None, "attempted_at": now, "sent_at": now, "sms_encoding": "GSM-7",
        "sms_segments": 1, "cost": "0.0075", "currency": "USD", "fallback_at": None}])})


def test_a_callback_arriving_while_the_write_back_is_open_is_applied(db, conn, make) -> None:
    nid = sending_sms(conn, make)
    outcome: dict[str, str] = {}
    with psycopg.connect(db) as writer:  # a transaction held open: the write-back not yet committed
        write_back(writer, nid)

        def callback() -> None:
            with psycopg.connect(db, autocommit=True) as c:
                outcome["r"] = c.execute("SELECT precall.record_sms_status(%s, 'delivered')", (SID,)).fetchone()[0]

        t = threading.Thread(target=callback)
        t.start()
        time.sleep(0.5)
        assert "r" not in outcome  # it waits for the SID's write-back
        writer.commit()
        t.join(5)
    assert outcome == {"r": "applied"}
    assert conn.execute("SELECT status FROM notification_logs WHERE id = %s", (nid,)).fetchone() == ("delivered",)


def test_a_callback_committed_while_the_write_back_waits_is_applied(db, conn, make) -> None:
    nid = sending_sms(conn, make)
    with psycopg.connect(db) as cb:  # the callback's transaction held open
        assert cb.execute("SELECT precall.record_sms_status(%s, 'undelivered', 30003)", (SID,)).fetchone() == ("pending",)
        done = threading.Event()

        def writer() -> None:
            with psycopg.connect(db, autocommit=True) as c:
                write_back(c, nid)
            done.set()

        t = threading.Thread(target=writer)
        t.start()
        time.sleep(0.5)
        assert not done.is_set()
        cb.commit()
        t.join(5)
    row = conn.execute("SELECT status, reason FROM notification_logs WHERE id = %s", (nid,)).fetchone()
    assert row[0] == "failed" and row[1].startswith("twilio_undelivered: 30003")
    assert conn.execute("SELECT applied FROM precall.sms_status_events WHERE message_sid = %s", (SID,)).fetchone() == (True,)


# --- preview_sent follows the planned time -------------------------------------------------------

def test_preview_sent_follows_the_calls_current_time(conn, make) -> None:
    uid = make.user(fcm_token="tok-ps-" + "z" * TOKEN_LEN, push_enabled=True)
    call = make.call(uid, in_seconds=3600)
    T = conn.execute("SELECT scheduled_at FROM scheduled_calls WHERE id = %s", (call,)).fetchone()[0]
    sent_at = datetime.now(timezone.utc) - timedelta(seconds=5)
    conn.execute("INSERT INTO notification_logs (user_id, call_id, type, channel, status, sent_at, planned_for)"
                 " VALUES (%s, %s, 'preview_push', 'push', 'sent', %s, %s)", (uid, call, sent_at, T))
    conn.execute("UPDATE scheduled_calls SET preview_sent = true, preview_sent_at = %s WHERE id = %s", (sent_at, call))
    conn.execute("UPDATE scheduled_calls SET scheduled_at = scheduled_at + interval '2 hours' WHERE id = %s", (call,))
    assert conn.execute("SELECT preview_sent, preview_sent_at FROM scheduled_calls WHERE id = %s",
                        (call,)).fetchone() == (False, None)
    conn.execute("UPDATE scheduled_calls SET scheduled_at = %s WHERE id = %s", (T, call))  # moved back
    assert conn.execute("SELECT preview_sent, preview_sent_at FROM scheduled_calls WHERE id = %s",
                        (call,)).fetchone() == (True, sent_at)


# --- call jobs: a grace period --------------------------------------------------------------------

def test_a_call_job_long_overdue_expires_instead_of_firing(db, conn, make, start_dispatcher, webhook_receiver) -> None:
    uid = make.user(fcm_token="tok-grace-" + "g" * TOKEN_LEN, push_enabled=True)
    old = make.call(uid, in_seconds=3600)
    fresh = make.call(uid, in_seconds=3)
    # The old call was due 10 minutes ago and no dispatcher ran then.
    conn.execute("ALTER TABLE scheduled_calls DISABLE TRIGGER USER")
    conn.execute("UPDATE scheduled_calls SET scheduled_at = now() - interval '10 minutes' WHERE id = %s", (old,))
    conn.execute("ALTER TABLE scheduled_calls ENABLE TRIGGER USER")
    conn.execute("INSERT INTO precall.call_jobs (call_id, user_id, due_at) SELECT id, user_id, scheduled_at"
                 " FROM scheduled_calls WHERE id = %s ON CONFLICT (call_id) DO UPDATE SET due_at = EXCLUDED.due_at,"
                 " status = 'queued'", (old,))
    start_dispatcher(PRECALL_CALL_WEBHOOK_URL=f"http://127.0.0.1:{webhook_receiver.server_address[1]}/calls",
                     PRECALL_WEBHOOK_SECRET="whsec-test")
    wait_until(lambda: webhook_receiver.received, timeout=10)
    time.sleep(1)
    assert [json.loads(body)["call_id"] for _, _, body in webhook_receiver.received] == [fresh]
    status, reason = conn.execute("SELECT status, reason FROM precall.call_jobs WHERE call_id = %s", (old,)).fetchone()
    assert status == "expired" and reason.startswith("too_late: 00:10:"), reason
    kpis = {r[0]: r[1] for r in conn.execute(
        "SELECT kpi, numerator FROM precall.kpis(now() - interval '1 day') WHERE kpi = 'calls_expired'").fetchall()}
    assert kpis == {"calls_expired": 1}


# --- the API's answers ----------------------------------------------------------------------------

def test_api_timestamps_are_utc_and_apns_tokens_are_refused(db, conn, make, start_api) -> None:
    conn.execute(f'ALTER DATABASE "{conn.info.dbname}" SET timezone = \'America/New_York\'')
    uid = make.user()
    call = make.call(uid, in_seconds=3600)
    conn.execute("INSERT INTO notification_logs (user_id, call_id, type, channel, status, sent_at, created_at)"
                 " VALUES (%s, %s, 'preview_push', 'push', 'sent', now(), now())", (uid, call))
    api = start_api(db)
    headers = {"Authorization": f"Bearer {user_token(uid)}"}
    with httpx.Client(base_url=api.url, headers=headers, timeout=10) as http:
        [n] = http.get("/api/v1/notifications/history").json()["notifications"]
        for key in ("sent_at", "created_at"):
            assert n[key].endswith("Z"), n
        r = http.post("/api/v1/notifications/register-device",
                      json={"fcm_token": uuid.uuid4().hex + uuid.uuid4().hex, "platform": "ios", "push_enabled": True})
    assert r.status_code == 422
    assert r.json()["error"] and "APNs device token" in r.json()["detail"], r.json()
