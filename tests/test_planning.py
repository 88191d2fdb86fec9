"""The schedule in SQL, as a DBA with psql sees it: plan, move, cancel, per-user lead, cut-off."""

from datetime import datetime, timedelta, timezone

import psycopg
import pytest


def queued(conn: psycopg.Connection, call_id: str) -> list[tuple[datetime, str]]:
    return conn.execute(
        "SELECT send_at, type FROM notification_logs WHERE call_id = %s AND status = 'queued'", (call_id,)
    ).fetchall()


def call_at(conn: psycopg.Connection, call_id: str) -> datetime:
    row = conn.execute("SELECT scheduled_at FROM scheduled_calls WHERE id = %s", (call_id,)).fetchone()
    assert row is not None
    return row[0]


def test_insert_7_minutes_out_is_planned_at_once_for_t_minus_5(conn, make) -> None:
    user = make.user(fcm_token="tok", push_enabled=True, coach="Max")
    call = make.call(user, in_seconds=7 * 60 - 5)
    rows = queued(conn, call)
    assert rows == [(call_at(conn, call) - timedelta(minutes=5), "preview_push")]
    job = conn.execute("SELECT due_at, status FROM precall.call_jobs WHERE call_id = %s", (call,)).fetchone()
    assert job == (call_at(conn, call), "queued")


def test_call_beyond_window_waits_for_the_planning_run(conn, make) -> None:
    user = make.user()
    call = make.call(user, in_seconds=30 * 60)
    assert queued(conn, call) == []
    T = call_at(conn, call)
    assert conn.execute("SELECT precall.plan_due_previews(%s)", (T - timedelta(minutes=6),)).fetchone() == (1,)
    assert queued(conn, call) == [(T - timedelta(minutes=5), "preview_sms")]
    # A second run plans nothing more.
    assert conn.execute("SELECT precall.plan_due_previews(%s)", (T - timedelta(minutes=5, seconds=30),)).fetchone() == (0,)
    assert len(make.previews(call)) == 1


def test_reschedule_moves_the_unsent_preview(conn, make) -> None:
    user = make.user(fcm_token="tok", push_enabled=True)
    call = make.call(user, in_seconds=6 * 60)
    old_T = call_at(conn, call)
    assert len(queued(conn, call)) == 1
    conn.execute("UPDATE scheduled_calls SET scheduled_at = scheduled_at + interval '1 hour' WHERE id = %s", (call,))
    assert queued(conn, call) == []
    cancelled = conn.execute(
        "SELECT reason, planned_for FROM notification_logs WHERE call_id = %s AND status = 'cancelled'", (call,)
    ).fetchone()
    assert cancelled is not None and cancelled[0].startswith("rescheduled") and cancelled[1] == old_T
    new_T = old_T + timedelta(hours=1)
    conn.execute("SELECT precall.plan_due_previews(%s)", (new_T - timedelta(minutes=6),))
    assert queued(conn, call) == [(new_T - timedelta(minutes=5), "preview_push")]
    assert conn.execute("SELECT due_at, status FROM precall.call_jobs WHERE call_id = %s", (call,)).fetchone() == (new_T, "queued")


def test_reschedule_into_the_window_plans_at_once_and_notifies(db, conn, make) -> None:
    user = make.user()
    call = make.call(user, in_seconds=3 * 3600)
    with psycopg.connect(db, autocommit=True) as listener:
        listener.execute("LISTEN precall_due")
        conn.execute("UPDATE scheduled_calls SET scheduled_at = now() + interval '6 minutes' WHERE id = %s", (call,))
        notes = list(listener.notifies(timeout=2, stop_after=1))
    assert len(queued(conn, call)) == 1
    assert notes and '"type" : "previews_planned"' in notes[0].payload and '"v" : 1' in notes[0].payload


def test_cancel_removes_queued_preview_and_call_job(conn, make) -> None:
    user = make.user()
    call = make.call(user, in_seconds=6 * 60)
    conn.execute("UPDATE scheduled_calls SET status = 'cancelled' WHERE id = %s", (call,))
    assert queued(conn, call) == []
    assert conn.execute("SELECT status, reason FROM notification_logs WHERE call_id = %s", (call,)).fetchone() == (
        "cancelled", "call_cancelled")
    assert conn.execute("SELECT status FROM precall.call_jobs WHERE call_id = %s", (call,)).fetchone() == ("cancelled",)
    # The planning run does not bring it back.
    conn.execute("SELECT precall.plan_due_previews()")
    assert queued(conn, call) == []


def test_per_user_lead_minutes(conn, make) -> None:
    ten = make.user(notification_lead_min=10)
    one = make.user(notification_lead_min=1)
    c10 = make.call(ten, in_seconds=3600)
    c1 = make.call(one, in_seconds=3600)
    T = call_at(conn, c10)
    conn.execute("SELECT precall.plan_due_previews(%s)", (T - timedelta(minutes=11),))
    assert [r[0] for r in queued(conn, c10)] == [T - timedelta(minutes=10)]
    assert queued(conn, c1) == []  # 1-minute lead is not in the window yet
    conn.execute("SELECT precall.plan_due_previews(%s)", (call_at(conn, c1) - timedelta(minutes=2),))
    assert [r[0] for r in queued(conn, c1)] == [call_at(conn, c1) - timedelta(minutes=1)]


def test_lead_change_replans_unsent_preview(conn, make) -> None:
    user = make.user()
    call = make.call(user, in_seconds=5 * 60 + 30)
    T = call_at(conn, call)
    conn.execute("UPDATE users SET notification_lead_min = 4 WHERE id = %s", (user,))
    assert [r[0] for r in queued(conn, call)] == [T - timedelta(minutes=4)]
    assert [r["status"] for r in make.previews(call)] == ["cancelled", "queued"]
    conn.execute("UPDATE users SET notification_pref = 'sms_only', notification_lead_min = 5 WHERE id = %s", (user,))
    assert queued(conn, call) == [(T - timedelta(minutes=5), "preview_sms")]


def test_two_calls_for_one_user(conn, make) -> None:
    user = make.user()
    morning = make.call(user, in_seconds=6 * 60)
    evening = make.call(user, in_seconds=6 * 60 + 40)
    assert len(queued(conn, morning)) == 1 and len(queued(conn, evening)) == 1


def test_preview_past_the_cutoff_is_skipped_with_reason(conn, make) -> None:
    user = make.user()
    call = make.call(user, in_seconds=20)
    rows = make.previews(call)
    assert [(r["status"], r["reason"].split(":")[0]) for r in rows] == [("skipped", "too_late")]
    # A call 3 minutes out (lead 5) still gets a preview, sent now: there is time left.
    late = make.call(user, in_seconds=180)
    (send_at, _), = queued(conn, late)
    now = conn.execute("SELECT now()").fetchone()[0]
    assert abs((send_at - now).total_seconds()) < 2


def test_sent_preview_for_7_does_not_block_the_call_moved_to_9(conn, make) -> None:
    user = make.user()
    call = make.call(user, in_seconds=6 * 60)
    conn.execute("UPDATE notification_logs SET status = 'sent', sent_at = now() WHERE call_id = %s", (call,))
    conn.execute("UPDATE scheduled_calls SET scheduled_at = scheduled_at + interval '2 hours' WHERE id = %s", (call,))
    T = call_at(conn, call)
    conn.execute("SELECT precall.plan_due_previews(%s)", (T - timedelta(minutes=6),))
    assert [r[0] for r in queued(conn, call)] == [T - timedelta(minutes=5)]
    assert [r["status"] for r in make.previews(call)] == ["sent", "queued"]


def test_database_refuses_a_second_active_preview(conn, make) -> None:
    user = make.user()
    call = make.call(user, in_seconds=6 * 60)
    with pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute(
            "INSERT INTO notification_logs (user_id, call_id, type, channel, status, send_at, planned_for)"
            " SELECT user_id, call_id, 'preview_sms', 'sms', 'queued', send_at, planned_for FROM notification_logs"
            " WHERE call_id = %s",
            (call,),
        )
    conn.execute("UPDATE notification_logs SET status = 'sent' WHERE call_id = %s", (call,))
    with pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute(
            "INSERT INTO notification_logs (user_id, call_id, type, channel, status, send_at, planned_for)"
            " SELECT user_id, call_id, type, channel, 'sent', send_at, planned_for FROM notification_logs"
            " WHERE call_id = %s",
            (call,),
        )


def test_local_7am_paris_the_day_after_dst_starts(conn, make) -> None:
    # Europe/Paris moves to CEST (UTC+2) on 2027-03-28: 07:00 local on the 29th is 05:00 UTC.
    user = make.user(timezone="Europe/Paris", locale="fr")
    row = conn.execute("SELECT precall.local_call_time(%s, '2027-03-29 07:00')", (user,)).fetchone()
    assert row is not None
    T = row[0]
    assert T == datetime(2027, 3, 29, 5, 0, tzinfo=timezone.utc)
    call = make.call(user, at=T)
    conn.execute("SELECT precall.plan_due_previews(%s)", (datetime(2027, 3, 29, 4, 54, tzinfo=timezone.utc),))
    assert [r[0] for r in queued(conn, call)] == [datetime(2027, 3, 29, 4, 55, tzinfo=timezone.utc)]
    # The day before the change, 07:00 local was 06:00 UTC.
    before = conn.execute("SELECT precall.local_call_time(%s, '2027-03-27 07:00')", (user,)).fetchone()
    assert before == (datetime(2027, 3, 27, 6, 0, tzinfo=timezone.utc),)


def test_status_other_than_pending_cancels(conn, make) -> None:
    user = make.user()
    call = make.call(user, in_seconds=6 * 60)
    conn.execute("UPDATE scheduled_calls SET status = 'in_progress' WHERE id = %s", (call,))
    assert queued(conn, call) == []
    assert make.previews(call)[0]["reason"] == "call_in_progress"


def test_one_notify_per_planning_run_not_per_row(db, conn, make) -> None:
    users = [make.user() for _ in range(3)]
    calls = [make.call(u, in_seconds=3600 + i) for i, u in enumerate(users)]
    T = call_at(conn, calls[0])
    with psycopg.connect(db, autocommit=True) as listener:
        listener.execute("LISTEN precall_due")
        assert conn.execute("SELECT precall.plan_due_previews(%s)", (T - timedelta(minutes=6),)).fetchone() == (3,)
        notes = list(listener.notifies(timeout=1.5))
    assert len(notes) == 1
    import json
    payload = json.loads(notes[0].payload)
    assert payload["v"] == 1 and payload["type"] == "previews_planned" and payload["count"] == 3


def test_planning_sees_the_largest_lead_in_use(conn, make) -> None:
    """The window reaches as far as the longest lead any user has: a 45-minute lead is planned."""
    short = make.user(fcm_token="a", push_enabled=True, notification_lead_min=5)
    far = make.user(fcm_token="b", push_enabled=True, notification_lead_min=45)
    conn.execute("ALTER TABLE scheduled_calls DISABLE TRIGGER _500_plan_previews")
    c_short = make.call(short, in_seconds=6 * 60)
    c_far = make.call(far, in_seconds=46 * 60)
    c_not_yet = make.call(short, in_seconds=46 * 60)
    conn.execute("ALTER TABLE scheduled_calls ENABLE TRIGGER _500_plan_previews")
    conn.execute("SELECT precall.plan_due_previews()")
    planned = {r[0] for r in conn.execute("SELECT call_id::text FROM notification_logs WHERE status = 'queued'")}
    assert planned == {c_short, c_far} and c_not_yet not in planned


def test_each_minute_s_run_leaves_queued_call_jobs_alone_and_moved_ones_follow(conn, make) -> None:
    """The planning run sees every call of its window again each minute: a job already queued for
    the right time must not be rewritten each time (0007 rewrote all of them: a 50k burst cost
    50k row updates a minute), while a moved call's job still follows it."""
    call = make.call(make.user(fcm_token="tok"), in_seconds=200)
    job = "SELECT xmin::text, status, due_at FROM precall.call_jobs WHERE call_id = %s"
    before = conn.execute(job, (call,)).fetchone()
    assert before is not None and before[1] == "queued"
    for _ in range(3):
        conn.execute("SELECT precall.plan_due_previews()")
    assert conn.execute(job, (call,)).fetchone() == before  # same row version: not rewritten
    conn.execute("UPDATE scheduled_calls SET scheduled_at = scheduled_at + interval '40 seconds' WHERE id = %s", (call,))
    moved = conn.execute(job, (call,)).fetchone()
    assert moved is not None and moved[1] == "queued" and moved[2] == before[2] + timedelta(seconds=40)
