"""Once means once while rows wait: leases renewed under a live sender, a dead dispatcher's rows
taken over in seconds, never a second send of a row the process still holds. Counted at the fakes."""

from __future__ import annotations

import collections
import time

import psycopg

from plugins.processes import wait_until


def sms_users(make, n: int, seconds: float = 3.0) -> list[str]:
    """n sms_only users, each with a call whose 1-minute-lead preview is due together."""
    calls = []
    for i in range(n):
        uid = make.user(notification_pref="sms_only", phone_number=f"+1555555{i:04d}", notification_lead_min=1,
                        coach="Max", current_streak=3)
        calls.append(make.call(uid, in_seconds=60 + seconds))
    return calls


def finished(conn, calls) -> bool:
    row = conn.execute("SELECT count(*) FROM notification_logs WHERE call_id = ANY(%s::uuid[])"
                       " AND status IN ('queued', 'sending')", (calls,)).fetchone()
    return row == (0,)


def test_rows_waiting_for_the_twilio_pacer_are_sent_once(conn, make, fake_twilio, start_dispatcher) -> None:
    """45 SMS due together, Twilio paced to 3/s, a 5 s lease: the last ones wait ~15 s, three
    leases. Before the renewal the process re-claimed its own waiting rows and sent them twice."""
    conn.execute("UPDATE precall.settings SET lease = '5 seconds'")
    calls = sms_users(make, 45)
    start_dispatcher(PRECALL_TWILIO_RATE_PER_S="3")
    wait_until(lambda: finished(conn, calls), timeout=45)
    time.sleep(1)
    per_number = collections.Counter(r.form["To"] for r in fake_twilio.state.sent)
    assert len(per_number) == 45
    assert max(per_number.values()) == 1, {k: v for k, v in per_number.items() if v > 1}
    sent = conn.execute("SELECT count(*), max(attempts) FROM notification_logs WHERE call_id = ANY(%s::uuid[])"
                        " AND status = 'sent'", (calls,)).fetchone()
    assert sent == (45, 1)


def test_a_provider_slower_than_the_lease_is_not_sent_twice(conn, make, fake_twilio, start_dispatcher) -> None:
    """Twilio answers after 8 s, the lease is 5 s, the timeout 10 s: one request per number, and
    the SID of that one request is what the row records."""
    conn.execute("UPDATE precall.settings SET lease = '5 seconds'")
    fake_twilio.state.latency_s = 8
    calls = sms_users(make, 3)
    start_dispatcher(PRECALL_TWILIO_TIMEOUT_S="10")
    start_dispatcher(PRECALL_TWILIO_TIMEOUT_S="10")  # a second dispatcher, eager for expired leases
    wait_until(lambda: finished(conn, calls), timeout=40)
    time.sleep(1)
    # Counted as requests arrive: a second one, started when a lease ran out at 5 s, would still
    # be waiting for its 8 s answer.
    per_number = collections.Counter(form["To"] for form in fake_twilio.state.arrived)
    assert sorted(per_number.values()) == [1, 1, 1], per_number
    sids = {r[0] for r in conn.execute("SELECT provider_id FROM notification_logs WHERE call_id = ANY(%s::uuid[])",
                                       (calls,)).fetchall()}
    assert len(sids) == 3 and all(s.startswith("SM") for s in sids)


def test_a_killed_dispatchers_waiting_rows_are_taken_over_in_seconds(conn, make, fake_fcm, start_dispatcher) -> None:
    """kill -9 while previews wait for the FCM pacer: another dispatcher sends them within seconds
    (the database sees the dead session), not after the 60 s lease, and each exactly once."""
    tokens = [f"tok-kill-{i}" for i in range(4)]
    for token in tokens:
        uid = make.user(fcm_token=token, push_enabled=True, notification_lead_min=1)
        make.call(uid, in_seconds=62)
    a = start_dispatcher(PRECALL_FCM_RATE_PER_S="0.2")  # one push every 5 s: three wait
    wait_until(lambda: len(fake_fcm.state.accepted()) == 1, timeout=10)
    # The first is sent; three wait for the pacer, held by `a`.
    wait_until(lambda: conn.execute("SELECT count(*) FILTER (WHERE status = 'sent'),"
                                    " count(*) FILTER (WHERE status = 'sending') FROM notification_logs"
                                    ).fetchone() == (1, 3), timeout=5)
    a.kill()
    killed_at = time.time()
    start_dispatcher()
    wait_until(lambda: len(fake_fcm.state.accepted()) == 4, timeout=15)
    taken = max(r.at for r in fake_fcm.state.accepted()) - killed_at
    assert taken < 5.0, f"re-sent {taken:.1f}s after the kill"
    time.sleep(1)
    assert sorted(r.message["token"] for r in fake_fcm.state.sent) == tokens
    lease = conn.execute("SELECT lease FROM precall.settings").fetchone()[0]
    assert lease.total_seconds() == 60  # the default: the takeover did not wait for it


def test_a_live_dispatchers_rows_are_not_taken(conn, make, db) -> None:
    """The liveness check itself: a registered session that is alive keeps its rows; the same
    rows become claimable the moment that session ends."""
    uid = make.user(fcm_token="tok-live", push_enabled=True, notification_lead_min=1)
    call = make.call(uid, in_seconds=61)
    conn.execute("UPDATE notification_logs SET send_at = now() - interval '1 second' WHERE call_id = %s", (call,))
    with psycopg.connect(db, autocommit=True) as owner:
        owner.execute("SELECT precall.register_session('owner-1', 'h', 1, true)")
        [claimed] = owner.execute("SELECT id FROM precall.claim_due_previews_v2('owner-1', 10)").fetchall()
        assert conn.execute("SELECT count(*) FROM precall.claim_due_previews_v2('thief', 10)").fetchone() == (0,)
        assert conn.execute("SELECT previews FROM precall.left_by_gone_dispatchers()").fetchone() == (False,)
    # The owner's session is gone (its connection closed): at once due and claimable.
    wait_until(lambda: conn.execute("SELECT precall.gone_lease_owners()").fetchone()[0] == ["owner-1"], timeout=5)
    assert conn.execute("SELECT previews FROM precall.left_by_gone_dispatchers()").fetchone() == (True,)
    [(taken, attempts)] = conn.execute("SELECT id, attempts FROM precall.claim_due_previews_v2('thief', 10)").fetchall()
    assert taken == claimed[0]
    assert attempts == 2


def test_a_restarted_process_with_a_fixed_worker_name_frees_its_old_leases(conn, make, db) -> None:
    uid = make.user(fcm_token="tok-fixed", push_enabled=True, notification_lead_min=1)
    call = make.call(uid, in_seconds=61)
    conn.execute("UPDATE notification_logs SET send_at = now() - interval '1 second' WHERE call_id = %s", (call,))
    with psycopg.connect(db, autocommit=True) as first:
        first.execute("SELECT precall.register_session('fixed', 'h', 1, true)")
        assert len(first.execute("SELECT id FROM precall.claim_due_previews_v2('fixed', 10)").fetchall()) == 1
    with psycopg.connect(db, autocommit=True) as second:
        second.execute("SELECT precall.register_session('fixed', 'h', 2, true)")  # same name, new process
        assert len(second.execute("SELECT id FROM precall.claim_due_previews_v2('fixed', 10)").fetchall()) == 1
        # A reconnect of the same process (p_new_process false) keeps what it holds.
        second.execute("SELECT precall.register_session('fixed', 'h', 2, false)")
        assert conn.execute("SELECT count(*) FROM precall.claim_due_previews_v2('other', 10)").fetchone() == (0,)
