"""Behaviours the README documents that no test exercised: max_attempts, a schedule moving under
the dispatcher without the trigger, doctor's expired-lease check, retention of status events and
call jobs, and the API's strict JSON types."""

from __future__ import annotations

import os

import httpx
import psycopg
import psycopg.rows
import pytest

from plugins.processes import precall_cli, user_token


def _row(conn, call_id):
    return conn.cursor(row_factory=psycopg.rows.dict_row).execute(
        "SELECT * FROM notification_logs WHERE call_id = %s ORDER BY created_at DESC LIMIT 1", (call_id,)).fetchone()


def _expire_leases(conn) -> None:
    conn.execute("UPDATE notification_logs SET lease_expires_at = clock_timestamp() - interval '1 second'"
                 " WHERE status = 'sending'")


def test_three_claims_without_an_outcome_then_failed_gave_up(conn, make) -> None:
    """max_attempts (3): a row whose senders keep dying mid-send is claimed three times, then failed."""
    uid = make.user(fcm_token="tok-1", push_enabled=True, notification_lead_min=1)
    call = make.call(uid, in_seconds=50)
    for attempt in (1, 2, 3):
        [(_, attempts)] = conn.execute("SELECT id, attempts FROM precall.claim_due_previews_v2(%s, 10)",
                                       (f"dies-{attempt}",)).fetchall()
        assert attempts == attempt
        _expire_leases(conn)  # the sender died holding it
    assert conn.execute("SELECT count(*) FROM precall.claim_due_previews_v2('fourth', 10)").fetchone() == (0,)
    row = _row(conn, call)
    assert row["status"] == "failed" and row["reason_code"] == "gave_up" and row["attempts"] == 3


def test_a_call_moved_behind_the_triggers_back_is_cancelled_at_claim_time(conn, make) -> None:
    """A DBA's bulk fix with triggers off (session_replication_role = replica) moves a call: the
    trigger never cancelled its preview, so the claim's own check must (reason rescheduled)."""
    uid = make.user(fcm_token="tok-1", push_enabled=True, notification_lead_min=1)
    call = make.call(uid, in_seconds=50)
    with psycopg.connect(conn.info.dsn, autocommit=True) as dba:
        dba.execute("SET session_replication_role = replica")
        dba.execute("UPDATE scheduled_calls SET scheduled_at = scheduled_at + interval '1 hour' WHERE id = %s", (call,))
    assert _row(conn, call)["status"] == "queued"  # nothing noticed yet
    assert conn.execute("SELECT count(*) FROM precall.claim_due_previews_v2('w', 10)").fetchone() == (0,)
    row = _row(conn, call)
    assert row["status"] == "cancelled" and row["reason_code"] == "rescheduled"


def test_doctor_reports_previews_whose_lease_expired_without_a_taker(db, conn, make) -> None:
    uid = make.user(fcm_token="tok-1", push_enabled=True, notification_lead_min=1)
    make.call(uid, in_seconds=50)
    conn.execute("SELECT * FROM precall.claim_due_previews_v2('gone', 10)")
    env = {**os.environ, "DATABASE_URL": db}
    assert "expired lease" not in precall_cli("doctor", env=env).stdout
    _expire_leases(conn)
    out = precall_cli("doctor", env=env)
    assert "FAIL queue: 1 preview(s) with an expired lease not yet taken over" in out.stdout and out.returncode == 1


def test_retention_prunes_status_events_and_call_jobs_but_nothing_in_flight(conn, make) -> None:
    conn.execute("UPDATE precall.settings SET retention = '30 days'")
    uid = make.user(fcm_token="tok-1", push_enabled=True, notification_lead_min=1)
    old_call = make.call(uid, at="2026-01-05 07:00+00", status="answered")
    conn.execute("INSERT INTO precall.call_jobs (call_id, user_id, due_at, status) VALUES (%s, %s, %s, 'fired')",
                 (old_call, uid, "2026-01-05 07:00+00"))
    live_call = make.call(uid, in_seconds=90)  # planned: its call job is queued
    conn.execute("INSERT INTO precall.sms_status_events (message_sid, status, received_at) VALUES"
                 " ('SMold', 'delivered', now() - interval '40 days'), ('SMnew', 'delivered', now())")
    conn.execute("CALL precall.prune_notification_logs()")
    assert conn.execute("SELECT message_sid FROM precall.sms_status_events").fetchall() == [("SMnew",)]
    jobs = {r[0] for r in conn.execute("SELECT call_id::text FROM precall.call_jobs").fetchall()}
    assert old_call not in jobs and live_call in jobs


@pytest.mark.parametrize("path, body", [
    ("/api/v1/notifications/register-device", {"fcm_token": "f" * 40, "platform": "ios", "push_enabled": 0}),
    ("/api/v1/notifications/register-device", {"fcm_token": "f" * 40, "platform": "ios", "push_enabled": "true"}),
    ("/api/v1/notifications/register-device", {"fcm_token": "f" * 40, "platform": "ios", "extra": 1}),
    ("/api/v1/users/notification-preferences", {"notification_lead_min": "5"}),
    ("/api/v1/users/notification-preferences", {"notification_lead_min": True}),
    ("/api/v1/users/notification-preferences", {"notification_lead_min": 5, "colour": "blue"}),
])
def test_the_api_is_strict_about_json_types_and_fields(db, conn, make, start_api, path, body) -> None:
    """0 is not false, "5" is not 5, true is not 1, and an unknown field is a mistake, not ignored."""
    uid = make.user(fcm_token="kept-token-" + "k" * 30, notification_lead_min=7, push_enabled=True)
    api = start_api(db)
    with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {user_token(uid)}"}, timeout=10) as http:
        answer = http.post(path, json=body)
    assert answer.status_code == 422 and answer.json()["error"] == "invalid_request", answer.text
    assert conn.execute("SELECT fcm_token, notification_lead_min, push_enabled FROM users WHERE id = %s",
                        (uid,)).fetchone() == ("kept-token-" + "k" * 30, 7, True)
