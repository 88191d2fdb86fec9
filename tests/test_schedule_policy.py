"""Schedule policy is one row for the fleet (precall.settings), not per process: the Path C wait,
the heartbeat age that counts as alive, the longest lead. A DBA's UPDATE changes what users notice."""

from __future__ import annotations

import os
from datetime import timedelta

import psycopg
import psycopg.rows
import httpx
import pytest

from plugins.processes import precall_cli, user_token, wait_until


def _rows(conn, call_id):
    return conn.cursor(row_factory=psycopg.rows.dict_row).execute(
        "SELECT * FROM notification_logs WHERE call_id = %s ORDER BY created_at", (call_id,)).fetchall()


def _path_c(make):
    uid = make.user(notification_pref="push_and_sms", fcm_token="tok-policy", push_enabled=True,
                    phone_number="+15555550778", notification_lead_min=2, coach="Max", current_streak=3)
    return make.call(uid, in_seconds=100)


def test_the_fallback_wait_is_the_databases(conn, make, fake_fcm, fake_twilio, start_dispatcher) -> None:
    """fallback_wait = 3 s: the SMS follows the push after 3 s, not the 30 s a process default says."""
    conn.execute("UPDATE precall.settings SET fallback_wait = '3 seconds'")
    start_dispatcher()
    call = _path_c(make)
    wait_until(lambda: fake_twilio.state.accepted(), timeout=15)
    [push], [sms] = fake_fcm.state.accepted(), fake_twilio.state.accepted()
    assert 2.5 <= sms.at - push.at <= 5.0, sms.at - push.at
    push_row, fallback = _rows(conn, call)
    assert fallback["type"] == "fallback_sms" and fallback["send_at"] - push_row["sent_at"] < timedelta(seconds=3.5)


def test_the_deprecated_variable_still_wins_with_a_warning(conn, make, fake_fcm, fake_twilio, start_dispatcher) -> None:
    conn.execute("UPDATE precall.settings SET fallback_wait = '60 seconds'")
    d = start_dispatcher(PRECALL_FALLBACK_WAIT_S="3")
    d.wait_for_log("PRECALL_FALLBACK_WAIT_S is deprecated")
    _path_c(make)
    wait_until(lambda: fake_twilio.state.accepted(), timeout=15)
    [push], [sms] = fake_fcm.state.accepted(), fake_twilio.state.accepted()
    assert 2.5 <= sms.at - push.at <= 5.0, sms.at - push.at


def test_doctor_counts_a_dispatcher_alive_by_the_databases_heartbeat_age(db, conn) -> None:
    conn.execute("INSERT INTO precall.dispatchers (name, hostname, pid, heartbeat_at)"
                 " VALUES ('d-30s', 'h', 1, now() - interval '30 seconds')")
    env = {**os.environ, "DATABASE_URL": db}
    out = precall_cli("doctor", "--verbose", env=env)
    assert "1 alive: d-30s" in out.stdout, out.stdout
    conn.execute("UPDATE precall.settings SET heartbeat_max_age = '20 seconds'")
    out = precall_cli("doctor", "--verbose", env=env)
    assert "no dispatcher heartbeat in the last 20s" in out.stdout and out.returncode == 1, out.stdout
    out = precall_cli("doctor", env={**env, "PRECALL_FALLBACK_WAIT_S": "3"})
    assert "WARN settings: PRECALL_FALLBACK_WAIT_S is deprecated" in out.stdout, out.stdout


def test_a_lead_above_max_lead_is_refused_in_sql_and_by_the_api(conn, make, db, start_api) -> None:
    conn.execute("UPDATE precall.settings SET max_lead = '30 minutes'")
    uid = make.user(notification_lead_min=5)
    with pytest.raises(psycopg.errors.CheckViolation, match="longest lead allowed"):
        conn.execute("UPDATE users SET notification_lead_min = 45 WHERE id = %s", (uid,))
    api = start_api(db)
    with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {user_token(uid)}"}, timeout=10) as http:
        refused = http.post("/api/v1/users/notification-preferences", json={"notification_lead_min": 45})
        allowed = http.post("/api/v1/users/notification-preferences", json={"notification_lead_min": 30})
    assert refused.status_code == 422 and refused.json()["error"] == "lead_not_allowed", refused.text
    assert allowed.status_code == 200
    assert conn.execute("SELECT notification_lead_min FROM users WHERE id = %s", (uid,)).fetchone() == (30,)


def test_planning_on_insert_reaches_as_far_as_max_lead_plus_lookahead(conn, make) -> None:
    """With a 15-minute lookahead, a call 74 minutes out for a 60-minute lead is planned at once
    (its preview is 14 minutes away); the old hard-coded 70-minute pre-filter left it to pg_cron."""
    conn.execute("UPDATE precall.settings SET lookahead = '15 minutes'")
    uid = make.user(fcm_token="tok-far", push_enabled=True, notification_lead_min=60)
    call = make.call(uid, in_seconds=74 * 60)
    [planned] = _rows(conn, call)
    assert planned["status"] == "queued" and planned["type"] == "preview_push"
