"""Provider limits and outages: pacing, `precall capacity`, and retries that do not block other previews."""

from __future__ import annotations


from plugins.processes import precall_cli, wait_until


def test_dispatcher_paces_fcm_sends_to_the_configured_rate(db, make, conn, fake_fcm, start_dispatcher) -> None:
    start_dispatcher(PRECALL_FCM_RATE_PER_S="5")
    users = [make.user(fcm_token=f"tok-{i}", push_enabled=True, notification_lead_min=1) for i in range(10)]
    # All ten due at the same instant: one statement (ten inserts spread their send_at over ~0.2 s
    # on a slow day, and the last one's lateness with them).
    conn.execute("INSERT INTO scheduled_calls (user_id, scheduled_at, topic)"
                 " SELECT unnest(%s::uuid[]), now() + interval '63 seconds', 'mood_check'", (users,))
    wait_until(lambda: len(fake_fcm.state.accepted()) == 10, timeout=20)
    times = sorted(r.at for r in fake_fcm.state.accepted())
    gaps = [b - a for a, b in zip(times, times[1:])]
    # 5/s: the pacer starts the sends 200 ms apart, in one process. What arrives at the fake also
    # carries the machine's scheduling jitter (a first request opens its connection), so the bound
    # on each gap is generous; the span is the pacer's own: nine intervals of 200 ms.
    assert min(gaps) >= 0.1, gaps
    assert times[-1] - times[0] >= 1.7, gaps
    # The dispatcher reports its rate in its heartbeat, so planning laid the ten out 200 ms apart
    # before T - lead (issue 20): the pacer finds each row's slot free, nothing leaves after the
    # planned instant, and the lateness against the smoothed send_at stays small.
    planned = conn.execute("SELECT count(DISTINCT send_at), max(planned_send_at), min(send_at),"
                           " max(extract(epoch FROM attempted_at - send_at)) FROM notification_logs").fetchone()
    assert planned is not None
    distinct, planned_at, first, lateness = planned
    assert distinct == 10 and (planned_at - first).total_seconds() == 1.8
    assert times[-1] <= planned_at.timestamp() + 0.5
    assert lateness < 0.5


def test_capacity_lists_the_previews_a_rate_limit_would_make_miss_their_call(db, make, conn, dispatcher_env) -> None:
    uid = make.user(fcm_token="t", push_enabled=True, notification_lead_min=1)
    # 100 calls 70 s out, lead 1 min: 100 push previews due together in 10 s, and the cut-off
    # (30 s before the call) leaves 30 s to send them all.
    conn.execute("INSERT INTO scheduled_calls (user_id, scheduled_at, topic)"
                 " SELECT %s, now() + interval '70 seconds', 'mood_check' FROM generate_series(1, 100)", (uid,))
    assert conn.execute("SELECT count(*) FROM notification_logs WHERE status = 'queued'").fetchone() == (100,)
    risk = conn.execute("SELECT count(*) FROM precall.previews_at_risk(2, 'push')").fetchone()
    assert risk == (39,)  # the 61st onwards leave more than 30 s after their send_at at 2/s
    assert conn.execute("SELECT count(*) FROM precall.previews_at_risk(10, 'push')").fetchone() == (0,)

    out = precall_cli("capacity", "--rate", "2", env=dispatcher_env, timeout=60)
    assert out.returncode == 1 and "100 push preview(s) queued; at 2/s" in out.stdout and "39 would leave" in out.stdout
    ok = precall_cli("capacity", env={**dispatcher_env, "PRECALL_FCM_RATE_PER_S": "10"}, timeout=60)
    assert ok.returncode == 0 and "0 would leave" in ok.stdout and "PRECALL_FCM_RATE_PER_S=10 x 1" in ok.stdout
    doctor = precall_cli("doctor", env={**dispatcher_env, "PRECALL_FCM_RATE_PER_S": "2"}, timeout=60)
    assert "FAIL capacity: 39 push preview(s) would miss their call's cut-off" in doctor.stdout


def test_previews_retrying_an_fcm_outage_do_not_hold_up_the_ones_due_after(db, make, conn, fake_fcm, start_dispatcher) -> None:
    """Two sends in flight at most; two previews whose token FCM keeps answering 503 retry with
    backoff for minutes. A preview due 5 s later still leaves on time: backing off frees the slot."""
    start_dispatcher(PRECALL_MAX_IN_FLIGHT="2")
    for i in range(2):
        make.call(make.user(fcm_token=f"unavailable-{i}", push_enabled=True, notification_lead_min=1), in_seconds=61)
    ok = make.call(make.user(fcm_token="tok-ok", push_enabled=True, notification_lead_min=1), in_seconds=66)
    wait_until(lambda: any(r.message["token"] == "tok-ok" for r in fake_fcm.state.accepted()), timeout=20)
    # The write-back follows the provider's answer (batched): wait for it, not for the fake alone.
    wait_until(lambda: conn.execute("SELECT attempted_at FROM notification_logs WHERE call_id = %s AND sent_at IS NOT NULL",
                                    (ok,)).fetchone(), timeout=10)
    late = conn.execute("SELECT extract(epoch FROM attempted_at - send_at) FROM notification_logs WHERE call_id = %s",
                        (ok,)).fetchone()
    assert late is not None and late[0] < 0.5, late
    retried = [r for r in fake_fcm.state.sent if r.message["token"].startswith("unavailable-")]
    assert len(retried) >= 4  # both still retrying meanwhile


def test_pacer_slots_within_a_horizon() -> None:
    """What the dispatcher may claim when every channel is paced (no database: a unit test)."""
    import asyncio

    from precall.dispatcher.pacing import Pacer

    async def run() -> tuple[int, int, int, int]:
        unpaced, paced = Pacer(None), Pacer(2)  # 2/s: one every 0.5 s
        before = paced.slots_within(2.0)
        for _ in range(3):
            await paced.wait()  # the first is free, the next two wait 0.5 s each
        return unpaced.slots_within(2.0), before, paced.slots_within(2.0), paced.slots_within(0.0)

    unbounded, before, after, now = asyncio.run(run())
    assert unbounded > 10**6
    assert before == 5  # now, +0.5, +1.0, +1.5, +2.0
    assert after == 4  # the next slot is 0.5 s away: +0.5 … +2.0
    assert now == 0


def test_dispatcher_paces_twilio_sends_to_the_configured_rate(db, make, conn, fake_twilio, start_dispatcher) -> None:
    """PRECALL_TWILIO_RATE_PER_S=2: five SMS due together reach Twilio about 500 ms apart."""
    start_dispatcher(PRECALL_TWILIO_RATE_PER_S="2")
    users = [make.user(notification_pref="sms_only", phone_number=f"+1555555040{i}", notification_lead_min=1)
             for i in range(5)]
    conn.execute("INSERT INTO scheduled_calls (user_id, scheduled_at, topic)"
                 " SELECT unnest(%s::uuid[]), now() + interval '63 seconds', 'mood_check'", (users,))
    wait_until(lambda: len(fake_twilio.state.accepted()) == 5, timeout=20)
    times = sorted(r.at for r in fake_twilio.state.accepted())
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert min(gaps) >= 0.25, gaps  # generous: the machine's jitter (see above)
    assert times[-1] - times[0] >= 1.8, gaps
