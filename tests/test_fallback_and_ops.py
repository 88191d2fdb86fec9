"""Path C with real receipts, the call at T, and a daemon that survives kills and restarts.
Judged at the fake FCM / Twilio / webhook servers."""

import json
import os
import socket
import time


import hashlib
import hmac

import psycopg
import pytest

from plugins.processes import wait_until
from precall.webhook_signature import verify


def rows(dsn, call_id):
    with psycopg.connect(dsn, autocommit=True) as c:
        cur = c.cursor(row_factory=psycopg.rows.dict_row)
        return cur.execute("SELECT * FROM notification_logs WHERE call_id = %s ORDER BY created_at", (call_id,)).fetchall()


def by_type(dsn, call_id, type_):
    found = [r for r in rows(dsn, call_id) if r["type"] == type_]
    return found[0] if found else None


def path_c_user(make, **extra):
    uid = make.user(notification_pref="push_and_sms", fcm_token=extra.pop("token", "tok-c"), push_enabled=True,
                    phone_number="+15555550777", notification_lead_min=2, coach="Max", current_streak=12, **extra)
    # Inserted 100 s before the call with a 2-minute lead: the push leaves at once ("2 min"),
    # the fallback 30 s later, when 70 s are left ("1 min").
    return uid, make.call(uid, in_seconds=100)


# --- Path C -------------------------------------------------------------------------------------

def test_path_c_receipt_10s_after_push_means_no_sms(db, make, fake_fcm, fake_twilio, start_dispatcher) -> None:
    start_dispatcher()
    _, call = path_c_user(make)
    wait_until(lambda: fake_fcm.state.accepted(), timeout=10)
    pushed_at = fake_fcm.state.accepted()[0].at
    push = by_type(db, call, "preview_push")
    wait_until(lambda: by_type(db, call, "fallback_sms") is not None)
    time.sleep(max(0, pushed_at + 10 - time.time()))
    with psycopg.connect(db, autocommit=True) as c:
        assert c.execute("SELECT precall.record_receipt(%s)", (push["id"],)).fetchone() == ("on_time",)
        assert c.execute("SELECT precall.record_receipt(%s)", (push["id"],)).fetchone() == ("duplicate",)
    time.sleep(max(0, pushed_at + 33 - time.time()))
    assert fake_twilio.state.sent == []
    fallback = by_type(db, call, "fallback_sms")
    assert fallback["status"] == "cancelled" and fallback["reason"].startswith("receipt_arrived")
    push = by_type(db, call, "preview_push")
    assert push["status"] == "delivered" and push["delivered_at"] is not None and not push["late_receipt"]


def test_path_c_without_receipt_sends_exactly_one_sms_30s_after_push(db, make, fake_fcm, fake_twilio, start_dispatcher) -> None:
    start_dispatcher()
    _, call = path_c_user(make)
    wait_until(lambda: fake_fcm.state.accepted(), timeout=10)
    pushed_at = fake_fcm.state.accepted()[0].at
    assert fake_fcm.state.accepted()[0].message["notification"]["title"] == "Coach Max is calling in 2 min! 💪"
    wait_until(lambda: fake_twilio.state.accepted(), timeout=40)
    time.sleep(2)
    [sms] = fake_twilio.state.accepted()
    assert 29.0 <= sms.at - pushed_at <= 31.0, sms.at - pushed_at
    # The minutes actually left at send time, not the original lead.
    assert sms.form["Body"] == ("Coach Max calling in 1 min! Day 12 - your fitness goal check-in. Answer! "
                                "Reply 2: +10 min, 3: skip")
    fallback = by_type(db, call, "fallback_sms")
    assert fallback["status"] == "sent" and fallback["parent_id"] == by_type(db, call, "preview_push")["id"]
    # A receipt after the SMS left is recorded as late: the user got both.
    with psycopg.connect(db, autocommit=True) as c:
        assert c.execute("SELECT precall.record_receipt(%s)", (fallback["parent_id"],)).fetchone() == ("late",)
    assert by_type(db, call, "preview_push")["late_receipt"] is True


# --- crashes ------------------------------------------------------------------------------------

def test_kill_9_during_a_slow_provider_call_is_finished_by_the_next_process(db, conn, make, fake_fcm, start_dispatcher) -> None:
    conn.execute("UPDATE precall.settings SET lease = '5 seconds'")
    fake_fcm.state.slow_s = 3
    a = start_dispatcher()
    uid = make.user(fcm_token="slow-1", push_enabled=True, notification_lead_min=1)
    call = make.call(uid, in_seconds=62)
    wait_until(lambda: fake_fcm.state.attempts.get("slow-1") == 1, timeout=10)
    a.kill()  # kill -9 while FCM is still answering
    assert by_type(db, call, "preview_push")["status"] == "sending"
    start_dispatcher()
    wait_until(lambda: by_type(db, call, "preview_push")["status"] == "sent", timeout=25)
    time.sleep(6)  # past another lease: nobody sends it a third time
    # The killed process's request reached FCM before it died: that is the documented
    # provider round-trip window. The new process sent it once more, and only once.
    assert fake_fcm.state.attempts["slow-1"] == 2
    row = by_type(db, call, "preview_push")
    assert row["status"] == "sent" and row["attempts"] == 2
    assert len(rows(db, call)) == 1


def test_kill_9_during_the_path_c_wait_loses_and_doubles_nothing(db, make, fake_fcm, fake_twilio, start_dispatcher) -> None:
    a = start_dispatcher()
    _, call = path_c_user(make)
    wait_until(lambda: fake_fcm.state.accepted(), timeout=10)
    pushed_at = fake_fcm.state.accepted()[0].at
    time.sleep(max(0, pushed_at + 10 - time.time()))
    a.kill()
    start_dispatcher()
    wait_until(lambda: fake_twilio.state.accepted(), timeout=30)
    time.sleep(2)
    assert len(fake_fcm.state.sent) == 1
    [sms] = fake_twilio.state.accepted()
    assert 29.0 <= sms.at - pushed_at <= 31.5


def test_sigterm_finishes_in_flight_work_and_exits_0(db, conn, make, fake_fcm, start_dispatcher) -> None:
    fake_fcm.state.slow_s = 2
    d = start_dispatcher()
    uid = make.user(fcm_token="slow-2", push_enabled=True, notification_lead_min=1)
    call = make.call(uid, in_seconds=61.5)
    wait_until(lambda: fake_fcm.state.attempts.get("slow-2") == 1, timeout=10)
    started = time.monotonic()
    assert d.terminate(timeout=15) == 0
    assert time.monotonic() - started < 12
    assert by_type(db, call, "preview_push")["status"] == "sent"
    beat = conn.execute("SELECT stopped_at IS NOT NULL FROM precall.dispatchers").fetchall()
    assert beat == [(True,)]


# --- database trouble ---------------------------------------------------------------------------

def test_postgres_restart_mid_run_loses_nothing(pg_server, db, make, fake_fcm, start_dispatcher) -> None:
    if pg_server.restartable is not None:
        pytest.skip(pg_server.restartable)
    d = start_dispatcher()
    uid = make.user(fcm_token="tok-before", push_enabled=True, notification_lead_min=1)
    before = make.call(uid, in_seconds=61.5)  # due while the server is down
    make.conn.close()
    pg_server.stop()
    time.sleep(2)
    pg_server.start()
    with psycopg.connect(db, autocommit=True) as c:
        uid2 = c.execute("INSERT INTO users (fcm_token, push_enabled, notification_lead_min) VALUES ('tok-after', true, 1)"
                         " RETURNING id").fetchone()[0]
        after = c.execute("INSERT INTO scheduled_calls (user_id, scheduled_at, topic) VALUES"
                          " (%s, now() + interval '63 seconds', 'mood_check') RETURNING id", (uid2,)).fetchone()[0]
    try:
        wait_until(lambda: by_type(db, before, "preview_push")["status"] == "sent", timeout=15)
        wait_until(lambda: by_type(db, after, "preview_push")["status"] == "sent", timeout=15)
    except AssertionError:
        raise AssertionError("\n".join(d.lines[-20:]) + f"\n{rows(db, before)}") from None
    tokens = sorted(r.message["token"] for r in fake_fcm.state.accepted())
    assert tokens == ["tok-after", "tok-before"]
    after_row = by_type(db, after, "preview_push")
    assert (after_row["attempted_at"] - after_row["send_at"]).total_seconds() < 2.5  # within the backstop


def test_a_send_accepted_while_postgres_restarts_is_recorded_as_sent(pg_server, db, make, fake_fcm, start_dispatcher) -> None:
    """The provider answers while the database is down: the write-back waits for it instead of
    marking the preview failed (bench/chaos.py pg_restart saw one such row before)."""
    if pg_server.restartable is not None:
        pytest.skip(pg_server.restartable)
    fake_fcm.state.latency_s = 3.0
    d = start_dispatcher()
    uid = make.user(fcm_token="tok-during", push_enabled=True, notification_lead_min=1)
    call = make.call(uid, in_seconds=61)
    make.conn.close()
    wait_until(lambda: fake_fcm.state.attempts.get("tok-during"), timeout=10)  # the request is at FCM
    pg_server.stop()
    time.sleep(3.5)  # FCM answers meanwhile
    pg_server.start()
    try:
        wait_until(lambda: by_type(db, call, "preview_push")["status"] == "sent", timeout=30)
    except AssertionError:
        raise AssertionError("\n".join(d.lines[-20:]) + f"\n{rows(db, call)}") from None
    assert len(fake_fcm.state.accepted()) == 1
    assert any("write-back failed" in line for line in d.lines)


def test_listen_connection_killed_is_recovered(db, conn, make, fake_fcm, start_dispatcher) -> None:
    d = start_dispatcher()
    killed = conn.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                          " WHERE application_name = 'precall-listener' AND datname = current_database()").fetchone()
    assert killed == (1,)
    uid = make.user(fcm_token="tok-l", push_enabled=True, notification_lead_min=1)
    call = make.call(uid, in_seconds=62)
    wait_until(lambda: by_type(db, call, "preview_push")["status"] == "sent", timeout=10)
    row = by_type(db, call, "preview_push")
    assert (row["attempted_at"] - row["send_at"]).total_seconds() < 2.5  # the 2 s backstop interval
    wait_until(lambda: sum("listening on precall_due" in line for line in d.lines) >= 2, timeout=5)
    assert len(fake_fcm.state.accepted()) == 1


# --- the call at T ------------------------------------------------------------------------------

def test_call_webhook_fires_at_t_signed_and_never_for_cancelled(db, conn, make, webhook_receiver, start_dispatcher) -> None:
    secret = "whsec-test"
    start_dispatcher(PRECALL_CALL_WEBHOOK_URL=f"http://127.0.0.1:{webhook_receiver.server_address[1]}/calls",
                     PRECALL_WEBHOOK_SECRET=secret)
    uid = make.user(fcm_token="tok-w", push_enabled=True)
    call = make.call(uid, in_seconds=4)
    cancelled = make.call(uid, in_seconds=4.5)
    conn.execute("UPDATE scheduled_calls SET status = 'cancelled' WHERE id = %s", (cancelled,))
    T = conn.execute("SELECT scheduled_at FROM scheduled_calls WHERE id = %s", (call,)).fetchone()[0]
    with psycopg.connect(db, autocommit=True) as listener:
        listener.execute("LISTEN precall_call_due")
        notes = list(listener.notifies(timeout=8, stop_after=1))
    wait_until(lambda: len(webhook_receiver.received) == 2, timeout=5)
    time.sleep(1.5)
    # The cancel reached the call system as an event (tests/test_actions.py); T's hand-off is one call.due.
    events = [json.loads(b) for _, _, b in webhook_receiver.received]
    assert [(e["event"], e["call_id"]) for e in events] == [("call.cancelled", cancelled), ("call.due", call)]
    [(at, headers, body)] = webhook_receiver.received[1:]
    assert json.loads(body) == {"event": "call.due", "call_id": call, "user_id": uid,
                                "scheduled_at": T.isoformat().replace("+00:00", "Z")}
    assert 0 <= at - T.timestamp() < 1.0
    # The receiver's check, done by hand: HMAC-SHA256(secret, "<t>.<raw body>").
    sig = headers["X-Precall-Signature"]
    t, v1 = (p.split("=", 1)[1] for p in sig.split(","))
    assert v1 == hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    assert verify(secret, sig, body) and not verify("wrong", sig, body)
    assert not verify(secret, sig, body, now=int(t) + 301)  # older than 5 minutes: rejected
    assert notes and json.loads(notes[0].payload)["call_id"] == call
    jobs = dict(conn.execute("SELECT call_id::text, status || ':' || coalesce(outcome, reason, '') FROM precall.call_jobs").fetchall())
    assert jobs == {call: "fired:webhook 200", cancelled: "cancelled:call_cancelled"}


# --- systemd ------------------------------------------------------------------------------------

@pytest.mark.parametrize("abstract", [False, True])
def test_systemd_notify_protocol(tmp_path, abstract, conn, start_dispatcher) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if abstract:
        name = f"precall-test-{os.getpid()}-{time.monotonic_ns()}"
        sock.bind("\0" + name)
        env_value = "@" + name
    else:
        path = str(tmp_path / "notify.sock")
        sock.bind(path)
        env_value = path
    sock.settimeout(20)
    d = start_dispatcher(wait_listening=False, NOTIFY_SOCKET=env_value, WATCHDOG_USEC="2000000")
    first = sock.recv(4096).decode()
    assert first.startswith("READY=1")
    # READY only after LISTEN: at this instant the listener's last statement is the LISTEN.
    listening = conn.execute("SELECT query FROM pg_stat_activity WHERE application_name = 'precall-listener'"
                             " AND datname = current_database()").fetchall()
    assert listening == [("LISTEN precall_due; LISTEN precall_call_changed",)]
    watchdogs = 0
    deadline = time.monotonic() + 5
    sock.settimeout(1)
    while time.monotonic() < deadline:
        try:
            if sock.recv(4096).decode() == "WATCHDOG=1":
                watchdogs += 1
        except socket.timeout:
            pass
    assert watchdogs >= 2
    d.proc.send_signal(15)
    sock.settimeout(10)
    messages = []
    while "STOPPING=1" not in messages:
        messages.append(sock.recv(4096).decode())
    assert d.proc.wait(15) == 0
    sock.close()


def test_path_c_push_rejected_sends_the_sms_at_once(db, make, fake_fcm, fake_twilio, start_dispatcher) -> None:
    start_dispatcher()
    _, call = path_c_user(make, token="badpayload-1")
    wait_until(lambda: fake_twilio.state.accepted(), timeout=10)
    push, fallback = by_type(db, call, "preview_push"), by_type(db, call, "fallback_sms")
    assert push["status"] == "failed" and push["reason"] == "fcm_rejected: INVALID_ARGUMENT"
    assert fallback["status"] == "sent" and fallback["reason"].startswith("push rejected")
    assert len(fake_twilio.state.sent) == 1
