"""The dispatcher, end to end: real SDKs against the fake FCM and Twilio servers; sends are
counted at the fakes."""

import time
from datetime import datetime, timezone


from plugins.processes import RECEIPT_SECRET, precall_cli, wait_until
from precall import receipt_tokens


def send_at(conn, call_id):
    row = conn.execute("SELECT send_at FROM notification_logs WHERE call_id = %s ORDER BY created_at LIMIT 1", (call_id,)).fetchone()
    return row[0]


def row_of(make, call_id, type_=None):
    rows = [r for r in make.previews(call_id) if type_ is None or r["type"] == type_]
    assert len(rows) == 1, rows
    return rows[0]


def due_soon(make, seconds=3.0, **user):
    """A user with a 1-minute lead and a call whose preview is due `seconds` from now."""
    user.setdefault("notification_lead_min", 1)
    uid = make.user(**user)
    return uid, make.call(uid, in_seconds=60 + seconds)


def settled(make, call_id):
    return lambda: all(r["status"] not in ("queued", "sending") for r in make.previews(call_id)) and make.previews(call_id)


# --- Path A -------------------------------------------------------------------------------------

def test_path_a_push_en_on_time_with_the_full_payload(conn, make, fake_fcm, fake_twilio, start_dispatcher) -> None:
    d = start_dispatcher()
    uid, call = due_soon(make, fcm_token="tok-en-1", push_enabled=True, platform="ios", coach="Max", current_streak=12)
    wait_until(lambda: fake_fcm.state.accepted(), timeout=10)
    wait_until(settled(make, call))
    time.sleep(0.3)
    [rec] = fake_fcm.state.accepted()
    m = rec.message
    row = row_of(make, call)
    T = conn.execute("SELECT scheduled_at FROM scheduled_calls WHERE id = %s", (call,)).fetchone()[0]
    assert m["token"] == "tok-en-1"
    assert fake_fcm.state.token_requests >= 1  # the service account's token_uri was honoured
    assert m["notification"] == {"title": "Coach Max is calling in 1 min! 💪", "body": "Day 12: your fitness goal check-in."}
    receipt = m["data"].pop("receipt_token")
    assert m["data"] == {"route": "incoming_call", "call_id": call, "notification_id": str(row["id"]),
                         "deadline": T.astimezone(timezone.utc).isoformat().replace("+00:00", "Z"),
                         "actions": "call_now,snooze,skip", "click_action": "PRECALL_CALL", "snooze_minutes": "10"}
    # The app acknowledges with it, without a session (tests/test_devices.py).
    assert receipt_tokens.verify(receipt, row["id"], [RECEIPT_SECRET], datetime.now(timezone.utc)) is not None
    assert m["android"]["priority"] == "high" and m["android"]["collapse_key"] == call
    # A duplicate (re-send after a crash or a timeout) replaces the shown notification: Android
    # by its tag, iOS by apns-collapse-id.
    assert m["android"]["notification"]["tag"] == call
    assert 55 <= int(m["android"]["ttl"].rstrip("s")) <= 60
    headers = m["apns"]["headers"]
    assert headers["apns-priority"] == "10" and headers["apns-push-type"] == "alert"
    assert headers["apns-expiration"] == str(int(T.timestamp())) and headers["apns-collapse-id"] == call
    aps = m["apns"]["payload"]["aps"]
    assert aps["mutable-content"] == 1 and aps["interruption-level"] == "time-sensitive"
    # Written back.
    assert row["status"] == "sent" and row["channel"] == "push" and row["type"] == "preview_push"
    assert row["provider_id"].startswith("projects/precall-test/messages/")
    assert row["attempted_at"] <= row["sent_at"]
    assert abs(rec.at - row["send_at"].timestamp()) < 1.0, "left more than 1 s from its send_at"
    assert conn.execute("SELECT preview_sent, preview_sent_at IS NOT NULL FROM scheduled_calls WHERE id = %s", (call,)).fetchone() == (True, True)
    assert fake_twilio.state.sent == []
    # Structured JSON logs carry the ids ops search by.
    sent_logs = [e for e in d.logs() if e.get("msg") == "push sent"]
    assert sent_logs and sent_logs[0]["call_id"] == call and sent_logs[0]["user_id"] == uid
    assert sent_logs[0]["notification_id"] == str(row["id"]) and "lateness_ms" in sent_logs[0]


def test_path_a_push_fr(conn, make, fake_fcm, start_dispatcher) -> None:
    start_dispatcher()
    uid, call = due_soon(make, fcm_token="tok-fr", push_enabled=True, locale="fr-FR", coach="Léa", current_streak=7)
    wait_until(settled(make, call))
    [rec] = fake_fcm.state.accepted()
    assert rec.message["notification"] == {"title": "Coach Léa t'appelle dans 1 min ! ⭐",
                                           "body": "Jour 7 — une semaine complète ! On fête ça."}


# --- Path B -------------------------------------------------------------------------------------

def test_path_b_sms_en_and_fr(conn, make, fake_fcm, fake_twilio, start_dispatcher) -> None:
    start_dispatcher()
    _, en = due_soon(make, notification_pref="sms_only", phone_number="+15555550123", fcm_token="tok", push_enabled=True,
                     coach="Max", current_streak=12)
    _, fr = due_soon(make, seconds=3.5, notification_pref="sms_only", phone_number="+33612345678", locale="fr",
                     coach="Max", current_streak=12)
    wait_until(lambda: settled(make, en)() and settled(make, fr)())
    by_to = {r.form["To"]: r for r in fake_twilio.state.accepted()}
    assert set(by_to) == {"+15555550123", "+33612345678"}
    assert by_to["+15555550123"].form["Body"] == ("Coach Max calling in 1 min! Day 12 - your fitness goal check-in. "
                                                  "Answer! Reply 2: +10 min, 3: skip")
    assert by_to["+33612345678"].form["Body"] == ("Coach Max t'appelle dans 1 min ! Jour 12 - point objectif fitness. "
                                                  "Décroche ! Réponds 2 : +10 min, 3 : annuler")
    for r in by_to.values():
        assert r.form["From"] == "+15005550006"
        assert 55 <= int(r.form["ValidityPeriod"]) <= 60
        assert r.form["StatusCallback"] == "https://hooks.example.com/twilio/status"
    assert fake_fcm.state.sent == []  # sms_only: no push even with a token
    en_row, fr_row = row_of(make, en), row_of(make, fr)
    assert (en_row["type"], en_row["channel"], en_row["status"]) == ("preview_sms", "sms", "sent")
    assert en_row["provider_id"].startswith("SM")
    assert (en_row["sms_encoding"], en_row["sms_segments"], str(en_row["cost_estimate"]), en_row["cost_currency"]) == \
        ("GSM-7", 1, "0.0075", "USD")
    assert (str(fr_row["cost_estimate"]), fr_row["cost_currency"]) == ("0.0650", "EUR")


def test_push_only_without_token_gets_sms_and_no_channel_is_skipped(conn, make, fake_fcm, fake_twilio, start_dispatcher) -> None:
    start_dispatcher()
    _, sms_call = due_soon(make, notification_pref="push_only", phone_number="+15555550124")
    _, none_call = due_soon(make, phone_number=None)
    _, opted_call = due_soon(make, phone_number="+15555550125", sms_opted_out=True)
    wait_until(lambda: all(settled(make, c)() for c in (sms_call, none_call, opted_call)))
    assert [r.form["To"] for r in fake_twilio.state.accepted()] == ["+15555550124"]
    assert fake_fcm.state.sent == []
    for c in (none_call, opted_call):
        row = row_of(make, c)
        assert row["status"] == "skipped" and row["reason"].startswith("no_channel") and row["channel"] is None
    # The call still goes on: nothing touched its status.
    assert conn.execute("SELECT status FROM scheduled_calls WHERE id = %s", (none_call,)).fetchone() == ("pending",)


# --- provider errors ----------------------------------------------------------------------------

def test_dead_tokens_disable_push_and_fall_back_to_sms(conn, make, fake_fcm, fake_twilio, start_dispatcher) -> None:
    start_dispatcher()
    calls = {}
    for i, token in enumerate(["dead-1", "mismatch-1", "invalid-1"]):
        calls[token] = due_soon(make, fcm_token=token, push_enabled=True, phone_number=f"+1555555020{i}")
    no_phone_user, no_phone_call = due_soon(make, fcm_token="dead-2", push_enabled=True, phone_number=None)
    wait_until(lambda: all(settled(make, c)() for _, c in calls.values()) and settled(make, no_phone_call)())
    assert sorted(r.form["To"] for r in fake_twilio.state.accepted()) == ["+15555550200", "+15555550201", "+15555550202"]
    for uid, call in calls.values():
        assert conn.execute("SELECT push_enabled FROM users WHERE id = %s", (uid,)).fetchone() == (False,)
        push = row_of(make, call, "preview_push")
        fallback = row_of(make, call, "fallback_sms")
        assert push["status"] == "failed" and push["reason"].startswith("token_dead")
        assert fallback["status"] == "sent" and fallback["parent_id"] == push["id"]
    assert row_of(make, calls["dead-1"][1], "preview_push")["reason"].startswith("token_dead: UNREGISTERED")
    assert [r["status"] for r in make.previews(no_phone_call)] == ["failed"]
    assert conn.execute("SELECT push_enabled FROM users WHERE id = %s", (no_phone_user,)).fetchone() == (False,)


def test_sms_failure_is_logged_with_code_and_not_retried(conn, make, fake_twilio, start_dispatcher) -> None:
    start_dispatcher()
    _, bad = due_soon(make, notification_pref="sms_only", phone_number="+15005550001")
    stop_uid, stop = due_soon(make, notification_pref="sms_only", phone_number="+15005550004")
    wait_until(lambda: settled(make, bad)() and settled(make, stop)())
    time.sleep(1)
    assert sorted(r.form["To"] for r in fake_twilio.state.sent) == ["+15005550001", "+15005550004"]  # once each
    assert fake_twilio.state.accepted() == []
    bad_row = row_of(make, bad)
    assert bad_row["status"] == "failed" and bad_row["reason"] == "twilio_error: 21211"
    assert "not a valid phone number" in bad_row["error_msg"]
    assert row_of(make, stop)["reason"].startswith("twilio_error: 21610")
    assert conn.execute("SELECT sms_opted_out FROM users WHERE id = %s", (stop_uid,)).fetchone() == (True,)


def test_transient_fcm_error_is_retried_until_accepted(conn, make, fake_fcm, start_dispatcher) -> None:
    start_dispatcher()
    _, call = due_soon(make, fcm_token="flaky-1", push_enabled=True)
    wait_until(settled(make, call), timeout=25)
    assert [r.status for r in fake_fcm.state.sent] == [503, 200]
    assert row_of(make, call)["status"] == "sent"


def test_malformed_rows_fail_alone(conn, make, fake_fcm, fake_twilio, start_dispatcher) -> None:
    # An adopted database may hold numbers precall would never accept itself.
    conn.execute("ALTER TABLE users DROP CONSTRAINT users_phone_e164")
    start_dispatcher()
    _, bad = due_soon(make, notification_pref="sms_only", phone_number="0612345678")
    _, unknown = due_soon(make, fcm_token="tok-u", push_enabled=True)
    conn.execute("UPDATE scheduled_calls SET topic = 'no_such_topic' WHERE id = %s", (unknown,))
    _, good = due_soon(make, notification_pref="sms_only", phone_number="+15555550999")
    wait_until(lambda: all(settled(make, c)() for c in (bad, unknown, good)))
    assert row_of(make, bad)["status"] == "failed" and row_of(make, bad)["reason"].startswith("bad_phone")
    assert row_of(make, good)["status"] == "sent"
    u = row_of(make, unknown)
    assert u["status"] == "sent" and "unknown topic" in u["reason"]
    assert fake_fcm.state.accepted()[0].message["notification"]["body"] == "Day 0: today's check-in."


# --- the schedule moving under the dispatcher -------------------------------------------------

def test_rescheduled_and_cancelled_calls_send_nothing(conn, make, fake_fcm, fake_twilio, start_dispatcher) -> None:
    start_dispatcher()
    _, moved = due_soon(make, seconds=2, fcm_token="tok-m", push_enabled=True)
    _, cancelled = due_soon(make, seconds=2, fcm_token="tok-c", push_enabled=True)
    conn.execute("UPDATE scheduled_calls SET scheduled_at = scheduled_at + interval '1 hour' WHERE id = %s", (moved,))
    conn.execute("UPDATE scheduled_calls SET status = 'cancelled' WHERE id = %s", (cancelled,))
    time.sleep(4)
    assert fake_fcm.state.sent == [] and fake_twilio.state.sent == []


def test_status_not_pending_race_is_checked_at_claim(conn, make, fake_fcm, start_dispatcher) -> None:
    _, call = due_soon(make, seconds=2, fcm_token="tok-r", push_enabled=True)
    # The call system flips the status without precall's trigger seeing it (e.g. a replica lag,
    # or triggers disabled during a bulk load): the claim itself must catch it.
    conn.execute("ALTER TABLE scheduled_calls DISABLE TRIGGER _500_replan_previews")
    conn.execute("UPDATE scheduled_calls SET status = 'in_progress' WHERE id = %s", (call,))
    start_dispatcher()
    wait_until(settled(make, call))
    assert fake_fcm.state.sent == []
    row = row_of(make, call)
    assert (row["status"], row["reason"]) == ("cancelled", "call_in_progress")


def test_cutoff_is_rechecked_at_send_time(conn, make, fake_fcm, start_dispatcher) -> None:
    _, call = due_soon(make, seconds=1, fcm_token="tok-x", push_enabled=True)
    conn.execute("UPDATE precall.settings SET min_notice = '90 seconds'")
    start_dispatcher()
    wait_until(settled(make, call))
    assert fake_fcm.state.sent == []
    assert row_of(make, call)["reason"].startswith("too_late")


# --- timing, concurrency, idle cost -----------------------------------------------------------

def test_each_of_several_previews_leaves_within_1s_of_send_at(conn, make, fake_fcm, start_dispatcher) -> None:
    start_dispatcher()
    calls = [due_soon(make, seconds=2 + i * 0.7, fcm_token=f"tok-t{i}", push_enabled=True)[1] for i in range(5)]
    wait_until(lambda: all(settled(make, c)() for c in calls), timeout=20)
    at_fake = {r.message["data"]["call_id"]: r.at for r in fake_fcm.state.accepted()}
    assert len(at_fake) == 5
    for c in calls:
        lateness = at_fake[c] - send_at(conn, c).timestamp()
        assert -0.05 <= lateness < 1.0, (c, lateness)


def test_two_dispatchers_send_500_previews_exactly_once(conn, make, fake_fcm, fake_twilio, start_dispatcher) -> None:
    a, b = start_dispatcher(), start_dispatcher()
    conn.execute(
        "INSERT INTO users (fcm_token, push_enabled, phone_number, notification_lead_min, notification_pref)"
        " SELECT 'tok-bulk-' || g, g % 2 = 0, '+1555' || lpad(g::text, 7, '0'), 1,"
        "        CASE WHEN g % 5 = 0 THEN 'sms_only' ELSE 'push_only' END"
        " FROM generate_series(1, 500) g"
    )
    conn.execute("INSERT INTO scheduled_calls (user_id, scheduled_at, topic)"
                 " SELECT id, now() + interval '63 seconds', 'mood_check' FROM users")
    assert conn.execute("SELECT count(*) FROM notification_logs WHERE status = 'queued'").fetchone() == (500,)
    wait_until(lambda: conn.execute(
        "SELECT count(*) FROM notification_logs WHERE status IN ('queued', 'sending')").fetchone() == (0,), timeout=60)
    time.sleep(0.5)
    ids = [r.message["data"]["notification_id"] for r in fake_fcm.state.accepted()]
    tos = [r.form["To"] for r in fake_twilio.state.accepted()]
    assert len(ids) == len(set(ids)) and len(tos) == len(set(tos))
    outcomes = conn.execute("SELECT status, reason, count(*) FROM notification_logs GROUP BY 1, 2").fetchall()
    assert len(ids) + len(tos) == 500, outcomes
    assert conn.execute("SELECT count(*) FROM notification_logs WHERE status = 'sent'").fetchone() == (500,)
    assert a.terminate() == 0 and b.terminate() == 0


def test_idle_dispatcher_queries_at_most_about_once_a_second(db, conn, make, start_dispatcher) -> None:
    d = start_dispatcher(PRECALL_POLL_INTERVAL_S="5")
    time.sleep(1)

    def commits():
        return conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()").fetchone()[0]

    conn.execute("SELECT pg_stat_clear_snapshot()")
    before = commits()
    time.sleep(10)
    conn.execute("SELECT pg_stat_clear_snapshot()")
    after = commits()
    # Our own two probes count too; the dispatcher's share must stay near 1/s or below. Besides the
    # once-a-second look, a heartbeat and its policy read (every 15 s) and a lease renewal (every
    # 20 s) may land in the window: 0.6-1.2/s measured on this code and on the release before it
    # (1.2 failed a bound of 1.0 once in CI); a second look per second would be 2/s.
    assert (after - before - 2) / 10 <= 1.3, after - before
    assert d.terminate() == 0


def test_render_cli_from_the_database(db, make) -> None:
    import os

    uid = make.user(locale="fr", coach="Léa", current_streak=12, notification_lead_min=5)
    call = make.call(uid, in_seconds=3600)
    env = {**os.environ, "DATABASE_URL": db}
    out = precall_cli("render", "--user", uid, "--call", call, env=env)
    assert out.returncode == 0, out.stderr
    assert "title: Coach Léa t'appelle dans 5 min ! 💪" in out.stdout
    assert "sms:   Coach Léa t'appelle dans 5 min ! Jour 12 - point objectif fitness. Décroche !" in out.stdout
    bad = precall_cli("render", "--user", "nope", "--call", call, env=env)
    assert bad.returncode == 1 and bad.stderr.strip() == "precall: --user and --call must be uuids"
