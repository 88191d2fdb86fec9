"""Bursts: planning moves the excess of a burst earlier (never later, never beyond max_early) to the
fleet's capacity per channel, and dispatchers claim a little ahead and fire on the instant, while
a claimed row stays cancellable until it is attempted."""

from __future__ import annotations

import itertools
import time
from datetime import datetime, timedelta

import psycopg
import pytest

from plugins.processes import precall_cli, wait_until

LEAD = timedelta(minutes=5)
SERIAL = itertools.count(1)


def plan_burst(conn: psycopg.Connection, make, n: int, *, channel: str = "push", lead_min: int = 5,
               at_offset: timedelta = timedelta(0)) -> tuple[datetime, list[str]]:
    """n users on `channel` whose calls are all at the same T two hours out (not planned yet)."""
    T = conn.execute("SELECT date_trunc('minute', now()) + interval '2 hours' + %s", (at_offset,)).fetchone()[0]
    users = [make.user(notification_lead_min=lead_min, phone_number=f"+1555{next(SERIAL):07d}",
                       **({"fcm_token": f"tok-{next(SERIAL)}", "push_enabled": True} if channel == "push"
                          else {"notification_pref": "sms_only"}))
             for _ in range(n)]
    conn.execute("INSERT INTO scheduled_calls (user_id, scheduled_at, topic)"
                 " SELECT unnest(%s::uuid[]), %s, 'mood_check'", (users, T))
    return T, users


def queued_rows(conn: psycopg.Connection, channel: str) -> list[tuple[datetime, datetime, datetime]]:
    """(send_at, planned_send_at, the call's time) of the queued previews, in send order."""
    return conn.execute("SELECT send_at, planned_send_at, planned_for FROM notification_logs"
                        " WHERE status = 'queued' AND channel = %s ORDER BY send_at, planned_for", (channel,)).fetchall()


def gaps(times: list[datetime]) -> list[float]:
    return [(b - a).total_seconds() for a, b in zip(times, times[1:])]


def row_updates(conn: psycopg.Connection) -> int:
    """notification_logs' n_tup_upd, this backend's counts flushed first (see plugins/plans.py)."""
    conn.execute("SELECT pg_stat_force_next_flush()")
    conn.execute("SELECT pg_stat_clear_snapshot()")
    return conn.execute("SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'notification_logs'").fetchone()[0]


def test_a_burst_beyond_capacity_is_moved_earlier_within_max_early_at_the_capacity(conn, make) -> None:
    conn.execute("UPDATE precall.settings SET push_capacity_per_s = 10")
    T, _ = plan_burst(conn, make, 50)
    # Before smoothing existed every one of them had send_at T - 5 min.
    conn.execute("SELECT precall.plan_due_previews(%s)", (T - LEAD - timedelta(minutes=3),))
    rows = queued_rows(conn, "push")
    assert len(rows) == 50
    planned = T - LEAD
    assert {p for _, p, _ in rows} == {planned}  # the original stays visible to a DBA
    sends = [s for s, _, _ in rows]
    assert max(sends) == planned  # never later
    assert min(sends) >= planned - timedelta(minutes=2)  # never beyond max_early
    assert min(gaps(sends)) == pytest.approx(0.1, abs=1e-6)  # 10 per second, no more
    assert min(sends) == planned - timedelta(seconds=4.9)  # and no earlier than needed


def test_the_insert_lays_a_burst_out_and_a_later_queued_burst_still_moves_it(conn, make) -> None:
    """plan_calls writes a new burst at its layout (no second write); when a preview already
    queued is planned later than the new ones, smooth_sends moves the new ones ahead of it."""
    conn.execute("UPDATE precall.settings SET push_capacity_per_s = 10")
    T_late, _ = plan_burst(conn, make, 20, at_offset=timedelta(seconds=1))
    now = T_late - LEAD - timedelta(minutes=3)
    updates = row_updates(conn)
    conn.execute("SELECT precall.plan_due_previews(%s)", (now,))
    assert row_updates(conn) == updates  # each row written once, at its place (0022 wrote 19 twice)
    assert conn.execute("SELECT count(*) FROM notification_logs WHERE send_at < planned_send_at").fetchone() == (19,)
    assert conn.execute("SELECT precall.smooth_sends()").fetchone() == (None,)
    # A burst planned one second earlier than the queued one arrives in the next run.
    T, _ = plan_burst(conn, make, 20)
    assert T == T_late - timedelta(seconds=1)
    conn.execute("SELECT precall.plan_due_previews(%s)", (now,))
    sends = [s for s, _, _ in queued_rows(conn, "push")]
    assert len(sends) == 40 and max(sends) == T - LEAD + timedelta(seconds=1)
    assert gaps(sends) == pytest.approx([0.1] * 39, abs=1e-6)
    assert min(sends) == T - LEAD - timedelta(seconds=2.9)
    assert [c for _, _, c in queued_rows(conn, "push")] == [T] * 20 + [T + timedelta(seconds=1)] * 20


def test_at_equal_planned_times_the_earlier_call_leaves_first(conn, make) -> None:
    """Lead 5 min for calls at T, lead 6 min for calls at T + 1 min: one planned instant."""
    conn.execute("UPDATE precall.settings SET push_capacity_per_s = 10")
    T, _ = plan_burst(conn, make, 10)
    plan_burst(conn, make, 10, lead_min=6, at_offset=timedelta(minutes=1))
    conn.execute("SELECT precall.plan_due_previews(%s)", (T - LEAD - timedelta(minutes=3),))
    rows = queued_rows(conn, "push")
    assert len(rows) == 20 and {p for _, p, _ in rows} == {T - LEAD}
    assert [c for _, _, c in rows] == [T] * 10 + [T + timedelta(minutes=1)] * 10


def test_sms_at_a_one_per_second_long_code_leave_a_second_apart(conn, make) -> None:
    """90 SMS due together at sms_capacity_per_s = 1 (the default): laid out 1 s apart over the
    89 s before T - lead; none later, none beyond the 2-minute max_early."""
    T, _ = plan_burst(conn, make, 90, channel="sms")
    conn.execute("SELECT precall.plan_due_previews(%s)", (T - LEAD - timedelta(minutes=3),))
    sends = [s for s, _, _ in queued_rows(conn, "sms")]
    assert len(sends) == 90
    assert max(sends) == T - LEAD and min(sends) == T - LEAD - timedelta(seconds=89)
    assert gaps(sends) == [1.0] * 89


def test_capacity_is_per_channel(conn, make) -> None:
    """30 push and 30 SMS at the same instant: the push stay within their second (capacity 400:
    2.5 ms apart), the SMS are laid out at 1/s; neither channel's rows take the other's capacity."""
    T, _ = plan_burst(conn, make, 30, channel="push")
    plan_burst(conn, make, 30, channel="sms")
    conn.execute("SELECT precall.plan_due_previews(%s)", (T - LEAD - timedelta(minutes=3),))
    push = [s for s, _, _ in queued_rows(conn, "push")]
    assert max(push) == T - LEAD and min(push) == T - LEAD - timedelta(milliseconds=29 * 2.5)
    sms = [s for s, _, _ in queued_rows(conn, "sms")]
    assert len(sms) == 30 and min(sms) == T - LEAD - timedelta(seconds=29)


def test_what_cannot_fit_waits_at_max_early_and_capacity_and_doctor_report_it(conn, make, dispatcher_env) -> None:
    conn.execute("UPDATE precall.settings SET max_early = '10 seconds'")
    T, _ = plan_burst(conn, make, 20, channel="sms")
    conn.execute("SELECT precall.plan_due_previews(%s)", (T - LEAD - timedelta(minutes=2),))
    sends = [s for s, _, _ in queued_rows(conn, "sms")]
    floor = T - LEAD - timedelta(seconds=10)
    assert min(sends) == floor and sends.count(floor) == 10  # 11 fit 1 s apart; 9 more at the floor
    beyond = conn.execute("SELECT count(*), max(needed_early) FROM precall.previews_beyond_capacity('sms')").fetchone()
    assert beyond == (9, timedelta(seconds=19))
    out = precall_cli("capacity", "--channel", "sms", env=dispatcher_env, timeout=60)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "9 sms preview(s) beyond capacity" in out.stdout and "precall.settings.sms_capacity_per_s" in out.stdout
    doctor = precall_cli("doctor", env=dispatcher_env, timeout=60)
    assert "9 sms preview(s) beyond capacity" in doctor.stdout


def test_smoothing_follows_cancels_and_reschedules(conn, make) -> None:
    conn.execute("UPDATE precall.settings SET push_capacity_per_s = 10")
    T, users = plan_burst(conn, make, 20)
    now = T - LEAD - timedelta(minutes=3)
    conn.execute("SELECT precall.plan_due_previews(%s)", (now,))
    assert min(s for s, _, _ in queued_rows(conn, "push")) == T - LEAD - timedelta(seconds=1.9)
    # Half the calls cancelled: the rest move back toward their planned time.
    conn.execute("UPDATE scheduled_calls SET status = 'cancelled' WHERE user_id = ANY (%s::uuid[])", (users[:10],))
    conn.execute("SELECT precall.plan_due_previews(%s)", (now,))
    sends = [s for s, _, _ in queued_rows(conn, "push")]
    assert len(sends) == 10 and max(sends) == T - LEAD and min(sends) == T - LEAD - timedelta(seconds=0.9)
    # A call moved into the full second is laid out with the others, by its own trigger.
    other = make.user(fcm_token=f"tok-{next(SERIAL)}", push_enabled=True)
    moved = make.call(other, at=T + timedelta(hours=3))
    conn.execute("UPDATE scheduled_calls SET scheduled_at = %s WHERE id = %s", (T, moved))
    conn.execute("SELECT precall.plan_due_previews(%s)", (now,))
    sends = [s for s, _, _ in queued_rows(conn, "push")]
    assert len(sends) == 11 and max(sends) == T - LEAD and min(gaps(sends)) == pytest.approx(0.1, abs=1e-6)


def test_a_trigger_planning_into_a_full_second_lays_it_out(conn, make) -> None:
    """Calls inserted 61 s before T - lead... planned by the insert trigger (no cron run): a
    second at capacity makes the trigger lay the channel out."""
    conn.execute("UPDATE precall.settings SET push_capacity_per_s = 5")
    users = [make.user(fcm_token=f"tok-{next(SERIAL)}", push_enabled=True, notification_lead_min=1) for _ in range(8)]
    conn.execute("INSERT INTO scheduled_calls (user_id, scheduled_at, topic)"
                 " SELECT unnest(%s::uuid[]), date_trunc('second', now()) + interval '100 seconds', 'mood_check'",
                 (users,))
    rows = queued_rows(conn, "push")
    sends = [s for s, _, _ in rows]
    assert len(sends) == 8 and max(sends) == rows[0][1] and min(gaps(sends)) == pytest.approx(0.2, abs=1e-6)
    # One more into the same second: its own trigger places it 0.2 s from the others.
    make.call(make.user(fcm_token=f"tok-{next(SERIAL)}", push_enabled=True, notification_lead_min=1), at=rows[0][2])
    sends = [s for s, _, _ in queued_rows(conn, "push")]
    assert len(sends) == 9 and min(gaps(sends)) == pytest.approx(0.2, abs=1e-6)


def test_below_one_per_second_a_trigger_keeps_the_gap(conn, make) -> None:
    """At sms_capacity_per_s 0.5 (one SMS every 2 s), a call planned by its trigger 1.5 s after
    another preview moves that one 2 s ahead of it (the check was "more than capacity within a
    second", which two SMS 1.5 s apart never are)."""
    conn.execute("UPDATE precall.settings SET sms_capacity_per_s = 0.5")
    at = conn.execute("SELECT date_trunc('second', now()) + interval '100 seconds'").fetchone()[0]
    for offset in (0, 1.5):
        make.call(make.user(notification_pref="sms_only", phone_number=f"+1555{next(SERIAL):07d}",
                            notification_lead_min=1), at=at + timedelta(seconds=offset))
    sends = [s for s, _, _ in queued_rows(conn, "sms")]
    assert sends == [at - timedelta(minutes=1) - timedelta(seconds=0.5), at - timedelta(minutes=1, seconds=-1.5)]


def test_paced_dispatchers_cap_the_capacity(conn) -> None:
    """While every live dispatcher is paced on a channel, their summed rate caps the setting."""
    assert conn.execute("SELECT precall.send_capacity('push'), precall.send_capacity('sms')").fetchone() == (400, 1)
    conn.execute("SELECT precall.heartbeat('a', 'h', 1, false, 30, NULL), precall.heartbeat('b', 'h', 2, false, 20, NULL)")
    assert conn.execute("SELECT precall.send_capacity('push'), precall.send_capacity('sms')").fetchone() == (50, 1)
    conn.execute("SELECT precall.heartbeat('c', 'h', 3, false, NULL, NULL)")  # one unpaced: no cap
    assert conn.execute("SELECT precall.send_capacity('push')").fetchone() == (400,)
    conn.execute("SELECT precall.heartbeat('c', 'h', 3, true, NULL, NULL)")  # stopped: not live
    assert conn.execute("SELECT precall.send_capacity('push')").fetchone() == (50,)


def test_a_dispatcher_reporting_a_rate_of_zero_does_not_stop_planning(conn, make) -> None:
    """A heartbeat row is written by any client with the database role; a rate of 0 (or below)
    divided planning by zero, and with it every INSERT into scheduled_calls (the trigger plans).
    Such a rate counts as unpaced."""
    for rate in (0, -5):
        conn.execute("SELECT precall.heartbeat('z', 'h', 1, false, %s::numeric, %s::numeric)", (rate, rate))
        assert conn.execute("SELECT precall.send_capacity('push'), precall.send_capacity('sms')").fetchone() == (400, 1)
    user = make.user(fcm_token=f"tok-{next(SERIAL)}", push_enabled=True, notification_lead_min=1)
    make.call(user, at=conn.execute("SELECT now() + interval '100 seconds'").fetchone()[0])
    assert len(queued_rows(conn, "push")) == 1


def test_smoothed_sms_leave_on_their_instants_one_request_each(db, make, conn, fake_twilio, start_dispatcher) -> None:
    """8 SMS due at the same instant, capacity 1/s: the dispatcher sends each at its smoothed
    send_at, a second apart, none after T - lead (+ the machine's jitter), one request each."""
    start_dispatcher()
    users = [make.user(notification_pref="sms_only", notification_lead_min=1,
                       phone_number=f"+1555555{i:04d}") for i in range(8)]
    conn.execute("INSERT INTO scheduled_calls (user_id, scheduled_at, topic)"
                 " SELECT unnest(%s::uuid[]), now() + interval '75 seconds', 'mood_check'", (users,))
    [(planned,)] = conn.execute("SELECT DISTINCT planned_send_at FROM notification_logs").fetchall()
    laid_out = dict(conn.execute("SELECT u.phone_number, n.send_at FROM notification_logs n"
                                 " JOIN users u ON u.id = n.user_id").fetchall())
    assert gaps(sorted(laid_out.values())) == [1.0] * 7
    wait_until(lambda: len(fake_twilio.state.accepted()) == 8, timeout=40)
    accepted = fake_twilio.state.accepted()
    assert sorted(r.form["To"] for r in accepted) == sorted(laid_out)  # one request per number
    for r in accepted:  # each on its own instant: never before it, and by T - lead + 1 s
        assert laid_out[r.form["To"]].timestamp() <= r.at <= planned.timestamp() + 1.0


def test_a_cancel_inside_the_claim_ahead_window_sends_nothing(db, make, conn, fake_fcm, start_dispatcher) -> None:
    """claim_ahead 5 s: the row is claimed (sending, not attempted) 5 s before its send_at; the
    call is cancelled then. No request reaches FCM; the other user's preview, claimed with it,
    arrives, and not before its send_at."""
    conn.execute("UPDATE precall.settings SET claim_ahead = '5 seconds'")
    start_dispatcher()
    kept_user = make.user(fcm_token="tok-kept", push_enabled=True, notification_lead_min=1)
    gone_user = make.user(fcm_token="tok-gone", push_enabled=True, notification_lead_min=1)
    conn.execute("INSERT INTO scheduled_calls (user_id, scheduled_at, topic)"
                 " SELECT unnest(%s::uuid[]), now() + interval '70 seconds', 'mood_check'", ([kept_user, gone_user],))
    gone = conn.execute("SELECT id FROM scheduled_calls WHERE user_id = %s", (gone_user,)).fetchone()[0]

    def claimed() -> bool:
        rows = conn.execute("SELECT status, attempted_at FROM notification_logs WHERE call_id = %s", (gone,)).fetchall()
        return rows == [("sending", None)]
    wait_until(claimed, timeout=15, interval=0.01)
    conn.execute("UPDATE scheduled_calls SET status = 'cancelled' WHERE id = %s", (gone,))
    wait_until(lambda: fake_fcm.state.arrived(), timeout=15)
    time.sleep(1.0)
    assert [r.message["token"] for r in fake_fcm.state.arrived()] == ["tok-kept"]
    assert conn.execute("SELECT status FROM notification_logs WHERE call_id = %s", (gone,)).fetchone() == ("cancelled",)
    [(send_at,)] = conn.execute("SELECT send_at FROM notification_logs n JOIN scheduled_calls c ON c.id = n.call_id"
                                " WHERE c.user_id = %s", (kept_user,)).fetchall()
    assert fake_fcm.state.arrived()[0].at >= send_at.timestamp()

