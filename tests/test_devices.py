"""Many devices per user and receipts real apps can send (issue 17), judged at the fake FCM and
Twilio servers and through the API as the app calls it."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from twilio.request_validator import RequestValidator

from plugins.processes import INBOUND_URL, user_token, wait_until
from precall.fakes.fake_fcm import FakeFcmServer

pytestmark = pytest.mark.integration

PHONE = "+15555550777"


def two_device_user(make, conn, pref: str = "push_and_sms", first: str = "tok-android-1",
                    second: str = "tok-ios-2") -> str:
    """A user whose app registered on an Android phone (as users.fcm_token) and an iPad (through
    the API's function)."""
    uid = make.user(notification_pref=pref, fcm_token=first, platform="android", push_enabled=True,
                    phone_number=PHONE, notification_lead_min=2, coach="Max", current_streak=12)
    conn.execute("SELECT precall.register_device(%s, %s, 'ios', true)", (uid, second))
    return uid


def call_due_in(make, uid: str, seconds_to_preview: float = 3) -> str:
    """A call whose 2-minute-lead preview is due `seconds_to_preview` from now."""
    return make.call(uid, in_seconds=120 + seconds_to_preview)


def send_at_of(conn, call: str) -> float:
    row = conn.execute("SELECT extract(epoch FROM send_at) FROM notification_logs WHERE call_id = %s AND type = 'preview_push'",
                       (call,)).fetchone()
    return float(row[0])


def pushes(fcm: FakeFcmServer, call: str) -> list:
    return [r for r in fcm.state.accepted() if r.message["data"]["call_id"] == call]


def test_two_devices_get_one_push_each_at_the_instant_and_history_has_one_row(
        db, conn, make, fake_fcm, start_dispatcher, start_api) -> None:
    uid = two_device_user(make, conn, pref="push_only")
    call = call_due_in(make, uid)
    due = send_at_of(conn, call)
    start_dispatcher()
    wait_until(lambda: len(pushes(fake_fcm, call)) == 2, timeout=15)
    time.sleep(1)
    sent = pushes(fake_fcm, call)
    assert sorted(r.message["token"] for r in sent) == ["tok-android-1", "tok-ios-2"]
    for r in sent:  # each at the preview's instant (the fake's clock, on arrival)
        assert -0.05 <= r.at - due <= 1.0, r.at - due
        assert r.message["android"]["collapse_key"] == call
        assert r.message["notification"]["title"] == "Coach Max is calling in 2 min! 💪"
    tokens = {r.message["data"]["receipt_token"] for r in sent}
    assert len(tokens) == 2  # one per device
    api = start_api(db)
    history = httpx.get(f"{api.url}/api/v1/notifications/history",
                        headers={"Authorization": f"Bearer {user_token(uid)}"}).json()["notifications"]
    assert [(n["type"], n["status"]) for n in history] == [("preview_push", "sent")], history[0]["reason"]
    outcomes = conn.execute("SELECT platform, status FROM precall.push_deliveries WHERE notification_id = %s ORDER BY platform",
                            (history[0]["id"],)).fetchall()
    assert outcomes == [("android", "sent"), ("ios", "sent")]


def test_a_receipt_token_from_either_device_stops_path_c(db, conn, make, fake_fcm, fake_twilio,
                                                          start_dispatcher, start_api) -> None:
    uid = two_device_user(make, conn)
    call = call_due_in(make, uid, 1)
    api = start_api(db)
    start_dispatcher()
    wait_until(lambda: len(pushes(fake_fcm, call)) == 2, timeout=15)
    pushed_at = min(r.at for r in pushes(fake_fcm, call))
    ios = next(r for r in pushes(fake_fcm, call) if r.message["token"] == "tok-ios-2")
    nid = ios.message["data"]["notification_id"]
    time.sleep(max(0, pushed_at + 10 - time.time()))
    # An iOS Notification Service Extension: no session, only the push's own token.
    answer = httpx.post(f"{api.url}/api/v1/notifications/{nid}/receipt", json={"event": "delivered"},
                        headers={"X-Precall-Receipt": ios.message["data"]["receipt_token"]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "recorded" and answer.json()["late"] is False
    time.sleep(max(0, pushed_at + 33 - time.time()))
    assert fake_twilio.state.arrived == []
    row = conn.execute("SELECT status FROM notification_logs WHERE id = %s", (nid,)).fetchone()
    assert row == ("delivered",)
    per_device = conn.execute("SELECT platform, delivered_at IS NOT NULL FROM precall.push_deliveries "
                              "WHERE notification_id = %s ORDER BY platform", (nid,)).fetchall()
    assert per_device == [("android", False), ("ios", True)]


def test_a_forged_receipt_token_is_401_and_the_sms_still_goes_at_30s(db, conn, make, fake_fcm, fake_twilio,
                                                                    start_dispatcher, start_api) -> None:
    uid = two_device_user(make, conn)
    call = call_due_in(make, uid, 1)
    other_uid = two_device_user(make, conn, first="tok-other-a", second="tok-other-b")
    other_call = call_due_in(make, other_uid, 1)
    api = start_api(db)
    start_dispatcher()
    wait_until(lambda: len(pushes(fake_fcm, call)) == 2 and len(pushes(fake_fcm, other_call)) == 2, timeout=15)
    pushed_at = min(r.at for r in pushes(fake_fcm, call))
    mine = pushes(fake_fcm, call)[0].message["data"]
    theirs = pushes(fake_fcm, other_call)[0].message["data"]
    url = f"{api.url}/api/v1/notifications/{mine['notification_id']}/receipt"
    good = mine["receipt_token"]
    forged = [
        good[:-2] + ("AA" if not good.endswith("AA") else "BB"),      # a changed MAC
        theirs["receipt_token"],                                     # another notification's token
        "r1.1.99999999999.AAAAAAAAAAAAAAAAAAAAAAAA",                 # made up
        good.replace("r1.", "r1.9", 1),                              # another device id
        "x" * 5000,                                                  # junk
    ]
    for token in forged:
        answer = httpx.post(url, json={"event": "delivered"}, headers={"X-Precall-Receipt": token})
        assert answer.status_code == 401, (token[:40], answer.text)
        assert answer.json()["error"] == "unauthorized"
    unknown = httpx.post(f"{api.url}/api/v1/notifications/{uuid.uuid4()}/receipt", json={"event": "delivered"},
                         headers={"X-Precall-Receipt": good})
    assert unknown.status_code == 401
    # Both users share the test number: one SMS for each call (the two leave together, not at once).
    wait_until(lambda: len([s for s in fake_twilio.state.accepted() if s.form["To"] == PHONE]) >= 2, timeout=40)
    time.sleep(1)
    sms = [s for s in fake_twilio.state.accepted() if s.form["To"] == PHONE]
    assert len(sms) == 2
    assert all(29.0 <= s.at - pushed_at <= 32.0 for s in sms), [s.at - pushed_at for s in sms]


def test_unregister_leaves_the_other_device_and_a_dead_token_on_one_of_two_sends_no_sms(
        db, conn, make, fake_fcm, fake_twilio, start_dispatcher, start_api) -> None:
    # push_only with a number on file: a dead token is an SMS at once, unless another device took it.
    uid = two_device_user(make, conn, pref="push_only", first="dead-android-1", second="tok-ios-2")
    first = call_due_in(make, uid, 1)
    start_dispatcher()
    wait_until(lambda: len([r for r in fake_fcm.state.arrived() if r.message["data"]["call_id"] == first]) == 2,
               timeout=15)
    time.sleep(3)
    assert fake_twilio.state.arrived == []
    row = conn.execute("SELECT status FROM notification_logs WHERE call_id = %s AND type = 'preview_push'",
                       (first,)).fetchone()
    assert row == ("sent",)
    devices = dict(conn.execute("SELECT fcm_token, push_enabled FROM precall.devices WHERE user_id = %s",
                                (uid,)).fetchall())
    assert devices == {"dead-android-1": False, "tok-ios-2": True}
    # The iPad logs out; the Android app registers again with a fresh token, then the next preview.
    api = start_api(db)
    auth = {"Authorization": f"Bearer {user_token(uid)}"}
    assert httpx.post(f"{api.url}/api/v1/notifications/register-device", headers=auth,
                      json={"fcm_token": "tok-android-fresh-" + "a" * 20, "platform": "android"}).status_code == 200
    out = httpx.post(f"{api.url}/api/v1/notifications/unregister-device", headers=auth, json={"fcm_token": "tok-ios-2"})
    assert (out.status_code, out.json()) == (200, {"status": "unregistered"})
    again = httpx.post(f"{api.url}/api/v1/notifications/unregister-device", headers=auth, json={"fcm_token": "tok-ios-2"})
    assert (again.status_code, again.json()) == (200, {"status": "unregistered"})  # idempotent
    second = call_due_in(make, uid, 1)
    wait_until(lambda: pushes(fake_fcm, second), timeout=15)
    time.sleep(1)
    assert [r.message["token"] for r in pushes(fake_fcm, second)] == ["tok-android-fresh-" + "a" * 20]


def test_android_data_messages_carry_no_notification_block_and_ios_keeps_its_alert(
        db, conn, make, fake_fcm, start_dispatcher) -> None:
    uid = two_device_user(make, conn, pref="push_only")
    call = call_due_in(make, uid, 1)
    start_dispatcher(PRECALL_ANDROID_MESSAGE="data")
    wait_until(lambda: len(pushes(fake_fcm, call)) == 2, timeout=15)
    by_token = {r.message["token"]: r.message for r in pushes(fake_fcm, call)}
    android, ios = by_token["tok-android-1"], by_token["tok-ios-2"]
    assert "notification" not in android and "apns" not in android
    assert android["android"]["priority"].lower() == "high" and android["android"]["ttl"].endswith("s")
    for key in ("title", "body", "route", "call_id", "notification_id", "receipt_token", "deadline"):
        assert android["data"][key], key
    assert android["data"]["title"] == "Coach Max is calling in 2 min! 💪"
    assert ios["notification"]["title"] == "Coach Max is calling in 2 min! 💪"
    assert ios["apns"]["payload"]["aps"]["mutable-content"] == 1


def _inbound(api_url: str, sid: str, body: str, signed: bool = True, tamper: bool = False) -> httpx.Response:
    form = {"MessageSid": sid, "From": PHONE, "To": "+15005550006", "Body": body, "AccountSid": "AC" + "0" * 32}
    headers = {}
    if signed:
        headers["X-Twilio-Signature"] = RequestValidator("test-auth-token").compute_signature(INBOUND_URL, form)
    if tamper:
        form["Body"] = "START"
    return httpx.post(f"{api_url}/api/v1/webhooks/twilio/inbound", data=form, headers=headers)


def test_inbound_stop_and_start_flip_consent_and_unsigned_texts_change_nothing(db, conn, make, start_api) -> None:
    uid = make.user(phone_number=PHONE, notification_pref="sms_only")
    api = start_api(db)
    stop = _inbound(api.url, "SM" + "1" * 32, "  stop ")
    assert stop.status_code == 200 and stop.headers["content-type"].startswith("text/xml")
    assert stop.text.endswith("<Response/>")
    assert conn.execute("SELECT sms_opted_out FROM users WHERE id = %s", (uid,)).fetchone() == (True,)
    assert _inbound(api.url, "SM" + "2" * 32, "START", signed=False).status_code == 403
    assert _inbound(api.url, "SM" + "3" * 32, "STOP", tamper=True).status_code == 403
    assert conn.execute("SELECT sms_opted_out FROM users WHERE id = %s", (uid,)).fetchone() == (True,)
    assert conn.execute("SELECT count(*) FROM precall.sms_inbound").fetchone() == (1,)
    assert _inbound(api.url, "SM" + "4" * 32, "Yes").status_code == 200
    assert conn.execute("SELECT sms_opted_out FROM users WHERE id = %s", (uid,)).fetchone() == (False,)
    assert _inbound(api.url, "SM" + "5" * 32, "what time is the call?").status_code == 200
    assert conn.execute("SELECT sms_opted_out FROM users WHERE id = %s", (uid,)).fetchone() == (False,)
    stored = conn.execute("SELECT body, action FROM precall.sms_inbound ORDER BY received_at").fetchall()
    assert stored == [("  stop ", "opt_out"), ("Yes", "opt_in"), ("what time is the call?", None)]
    # A new number has not said STOP.
    conn.execute("UPDATE users SET sms_opted_out = true WHERE id = %s", (uid,))
    conn.execute("UPDATE users SET phone_number = '+15555550999' WHERE id = %s", (uid,))
    assert conn.execute("SELECT sms_opted_out FROM users WHERE id = %s", (uid,)).fetchone() == (False,)


def test_register_device_api_bad_input_and_preferences(db, conn, make, start_api) -> None:
    a = make.user(phone_number=PHONE)
    b = make.user(phone_number=None)
    api = start_api(db)
    url = f"{api.url}/api/v1/notifications/register-device"
    auth_a = {"Authorization": f"Bearer {user_token(a)}"}
    for body in ({"fcm_token": "t" * 10_000, "platform": "android"},
                 {"fcm_token": "bad token with spaces and more than 32 chars", "platform": "android"},
                 {"fcm_token": "tok-" + "x" * 40, "platform": "windows-phone"},
                 {"fcm_token": "tok-" + "x" * 40, "platform": "ios", "push_enabled": 0}):
        answer = httpx.post(url, headers=auth_a, json=body)
        assert answer.status_code == 422, body
        assert answer.json()["error"] and answer.json()["detail"]
    # Two users register one token at once: both 200, then exactly one holds it.
    shared = "tok-shared-" + "s" * 40
    for _ in range(5):
        with ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(
                lambda who: httpx.post(url, headers={"Authorization": f"Bearer {user_token(who)}"},
                                       json={"fcm_token": shared, "platform": "ios"}), (a, b)))
        assert [r.status_code for r in answers] == [200, 200]
        holders = conn.execute("SELECT user_id FROM precall.devices WHERE fcm_token = %s", (shared,)).fetchall()
        summary = conn.execute("SELECT id FROM users WHERE fcm_token = %s", (shared,)).fetchall()
        assert len(holders) == 1 and summary == holders
    assert httpx.post(url, headers=auth_a, json={"fcm_token": "tok-a-phone-" + "p" * 30, "platform": "android"}).status_code == 200
    prefs = httpx.get(f"{api.url}/api/v1/users/notification-preferences", headers=auth_a)
    assert prefs.status_code == 200, prefs.text
    body = prefs.json()
    assert body["phone_number_on_file"] is True and body["sms_opted_out"] is False
    assert body["notification_pref"] == "push_only" and body["notification_lead_min"] == 5
    assert all(set(d) == {"platform", "push_enabled", "last_seen_at"} for d in body["devices"])
    assert "tok-" not in prefs.text and PHONE not in prefs.text
    assert httpx.get(f"{api.url}/api/v1/users/notification-preferences").status_code == 401


def test_the_users_columns_keep_working_for_apps_and_dbas(conn, make) -> None:
    uid = make.user(fcm_token="tok-legacy-1", platform="android", push_enabled=True)
    conn.execute("SELECT precall.register_device(%s, 'tok-second', 'ios', true)", (uid,))
    devices = lambda: dict(conn.execute(  # noqa: E731
        "SELECT fcm_token, push_enabled FROM precall.devices WHERE user_id = %s", (uid,)).fetchall())
    assert devices() == {"tok-legacy-1": True, "tok-second": True}
    conn.execute("UPDATE users SET fcm_token = 'tok-legacy-2' WHERE id = %s", (uid,))  # the app's old code
    assert devices() == {"tok-legacy-1": True, "tok-second": True, "tok-legacy-2": True}
    conn.execute("UPDATE users SET push_enabled = false WHERE id = %s", (uid,))  # a DBA switches push off
    assert set(devices().values()) == {False}
    conn.execute("UPDATE users SET push_enabled = true WHERE id = %s", (uid,))
    assert set(devices().values()) == {True}
    # A token another user's app registers moves, and the first user's summary follows.
    other = make.user(fcm_token="tok-second", platform="ios", push_enabled=True)
    assert conn.execute("SELECT user_id::text FROM precall.devices WHERE fcm_token = 'tok-second'").fetchone() == (other,)
    assert conn.execute("SELECT fcm_token FROM users WHERE id = %s", (uid,)).fetchone()[0] in ("tok-legacy-1", "tok-legacy-2")


def test_a_switched_off_channel_skips_its_previews_at_the_claim(conn, make) -> None:
    conn.execute("UPDATE precall.settings SET sms_enabled = false")
    uid = make.user(notification_pref="sms_only", phone_number=PHONE)
    call = make.call(uid, in_seconds=60)  # inside the lead: planned due now
    claimed = conn.execute("SELECT id FROM precall.claim_due_previews_v2('w-test', 10)").fetchall()
    assert claimed == []
    row = conn.execute("SELECT status, reason_code, channel FROM notification_logs WHERE call_id = %s", (call,)).fetchone()
    assert row[:2] == ("skipped", "channel_disabled")


def test_past_the_sms_budget_fallbacks_are_skipped_and_first_channel_sms_still_go(
        db, conn, make, fake_fcm, fake_twilio, start_dispatcher) -> None:
    conn.execute("""UPDATE precall.settings SET sms_daily_budget = '{"USD": 0.01}'""")
    conn.execute("INSERT INTO precall.sms_spend (day, currency, amount, messages) "
                 "VALUES ((now() AT TIME ZONE 'UTC')::date, 'USD', 0.0105, 1)")
    sms_user = make.user(notification_pref="sms_only", phone_number="+15555550101", notification_lead_min=2)
    push_user = make.user(notification_pref="push_and_sms", fcm_token="dead-only-device", platform="android",
                          push_enabled=True, phone_number="+15555550102", notification_lead_min=2)
    first, fallback_call = make.call(sms_user, in_seconds=110), make.call(push_user, in_seconds=110)
    start_dispatcher()
    wait_until(lambda: conn.execute(
        "SELECT count(*) FROM notification_logs WHERE call_id = ANY(%s::uuid[]) AND status IN ('sent', 'skipped')",
        ([first, fallback_call],)).fetchone()[0] == 2, timeout=20)
    time.sleep(1)
    assert [f["To"] for f in fake_twilio.state.arrived] == ["+15555550101"]
    row = conn.execute("SELECT status, reason_code FROM notification_logs WHERE call_id = %s AND type = 'fallback_sms'",
                       (fallback_call,)).fetchone()
    assert row == ("skipped", "sms_budget")
    spent = conn.execute("SELECT amount FROM precall.sms_spend WHERE currency = 'USD'").fetchone()[0]
    assert float(spent) == pytest.approx(0.0105 + 0.0075)  # the first-channel SMS counted


def test_stale_devices_get_no_push_and_retention_removes_them(conn, make) -> None:
    uid = make.user(fcm_token="tok-old-phone", platform="android", push_enabled=True, notification_pref="push_only")
    conn.execute("SELECT precall.register_device(%s, 'tok-new-phone', 'ios', true)", (uid,))
    conn.execute("UPDATE precall.devices SET last_seen_at = now() - interval '61 days' WHERE fcm_token = 'tok-old-phone'")
    call = make.call(uid, in_seconds=200)
    nid = conn.execute("INSERT INTO notification_logs (user_id, call_id, type, channel, status, send_at, planned_for) "
                       "SELECT %s, %s, 'preview_push', 'push', 'queued', now(), scheduled_at FROM scheduled_calls "
                       "WHERE id = %s ON CONFLICT DO NOTHING RETURNING id", (uid, call, call)).fetchone()
    nid = nid[0] if nid else conn.execute("SELECT id FROM notification_logs WHERE call_id = %s", (call,)).fetchone()[0]
    targets = conn.execute("SELECT fcm_token FROM precall.push_targets(ARRAY[%s]::uuid[])", (nid,)).fetchall()
    assert targets == [("tok-new-phone",)]
    conn.execute("CALL precall.prune_notification_logs(1000, 1)")
    assert conn.execute("SELECT fcm_token FROM precall.devices WHERE user_id = %s", (uid,)).fetchall() == [("tok-new-phone",)]


def test_stats_by_platform_split_receipts_per_device(conn, make) -> None:
    uid = make.user(fcm_token="tok-a", platform="android", push_enabled=True)
    conn.execute("SELECT precall.register_device(%s, 'tok-i', 'ios', true)", (uid,))
    call = make.call(uid, in_seconds=3600)
    nid = conn.execute("INSERT INTO notification_logs (user_id, call_id, type, channel, status, send_at, sent_at, "
                       "attempted_at) VALUES (%s, %s, 'preview_push', 'push', 'sent', now(), now(), now()) RETURNING id",
                       (uid, call)).fetchone()[0]
    for device, platform in conn.execute("SELECT id, platform FROM precall.devices WHERE user_id = %s", (uid,)).fetchall():
        conn.execute("INSERT INTO precall.push_deliveries (notification_id, device_id, platform, status) "
                     "VALUES (%s, %s, %s, 'sent')", (nid, device, platform))
    ios = conn.execute("SELECT id FROM precall.devices WHERE fcm_token = 'tok-i'").fetchone()[0]
    assert conn.execute("SELECT precall.record_device_receipt(%s, %s, 'delivered')", (nid, ios)).fetchone() == ("on_time",)
    rows = {r[0]: (r[2], r[3]) for r in conn.execute(
        "SELECT * FROM precall.kpis(now() - interval '1 hour', 'platform') WHERE kpi = 'device_receipt_rate'").fetchall()}
    assert rows == {"android": (0, 1), "ios": (1, 1)}
    delivery = conn.execute("SELECT * FROM precall.kpis(now() - interval '1 hour') WHERE kpi = 'push_delivery_rate'").fetchone()
    assert (delivery[2], delivery[3]) == (1, 1)  # one preview, delivered because one device said so


def test_the_api_and_the_dispatcher_refuse_to_start_without_a_receipt_secret(db, dispatcher_env) -> None:
    from plugins.processes import api_env, precall_cli

    for command, env in (("api", api_env(db, PRECALL_RECEIPT_SECRET="")),
                         ("dispatcher", {k: v for k, v in dispatcher_env.items() if k != "PRECALL_RECEIPT_SECRET"})):
        out = precall_cli(command, env=env, timeout=30)
        assert out.returncode == 1, (command, out.stderr)
        assert out.stderr.strip().count("\n") == 0 and "PRECALL_RECEIPT_SECRET" in out.stderr, (command, out.stderr)


def test_doctor_warns_at_80_percent_of_the_sms_budget(db, conn) -> None:
    import os

    from plugins.processes import precall_cli

    conn.execute("""UPDATE precall.settings SET sms_daily_budget = '{"EUR": 50, "USD": 100}'""")
    conn.execute("INSERT INTO precall.sms_spend (day, currency, amount, messages) VALUES "
                 "((now() AT TIME ZONE 'UTC')::date, 'EUR', 41.5, 640), ((now() AT TIME ZONE 'UTC')::date, 'USD', 10, 9)")
    out = precall_cli("doctor", env={**os.environ, "DATABASE_URL": db})
    assert "WARN sms budget: 83% of today's EUR SMS budget used (41.5000 of 50)" in out.stdout, out.stdout
    assert "USD SMS budget" not in out.stdout
